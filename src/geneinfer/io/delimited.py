"""The one parser of delimited table bodies (GCT, TSV/CSV, GEO series-matrix tables).

A body is a run of lines after a header, each holding the same number of fields: text
fields (the id, then metadata) and numeric fields. :func:`iter_body` yields it in chunks of
rows, checked by the rules of :mod:`geneinfer.io.cells`:

* while the bytes are read, before any parser sees them, every line is checked
  (:class:`RowCheck`): no control characters, blank lines skipped, exactly the expected
  number of fields (pandas' C parser fills short rows with NaN and, at chunk boundaries,
  drops extra fields without a word, so it is not trusted with this), and the file line of
  every data row is recorded for messages;
* numbers are parsed by pandas' C parser (fast); when it refuses a cell, the rest of the
  body is parsed by the grammar itself (:func:`geneinfer.io.cells.parse_texts`), which then
  either accepts it (``1e999`` is a number; `` NA `` is missing) or names the cell;
* ids must be non-empty, unique and at most :data:`~geneinfer.io.cells.MAX_ID_CHARS` long,
  other text fields at most :data:`~geneinfer.io.cells.MAX_FIELD_CHARS`; infinite values are
  refused naming the line, row id and column unless the policy reads them as missing.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from geneinfer.errors import InputFormatError
from geneinfer.io.cells import (
    MAX_FIELD_CHARS,
    NA_TOKENS,
    ControlCharGuard,
    NonFinite,
    check_id_length,
    is_blank,
    longest,
    nonfinite_cells,
    parse_texts,
)

PathLike = str | os.PathLike[str]


@dataclass
class BodyLayout:
    """Where a body is and what its fields are.

    Attributes
    ----------
    sep
        Field separator.
    quoted
        Fields may be wrapped in double quotes (TSV/CSV, series matrix); GCT fields may not.
    n_fields
        Fields per row.
    first_line
        File line (1-based) where the body starts.
    text_cols
        Field positions read as text: the row id first, then metadata.
    value_cols
        Field positions read as numbers.
    names
        A name for each field position (header), for messages.
    expected
        How to say the expected number of fields, e.g. ``"5 (id + 4 samples)"``.
    row_what, col_what
        What rows and value columns are (``"gene"``, ``"sample"``).
    last_line
        Last file line of the body (None = to the end of the file).
    """

    sep: str
    quoted: bool
    n_fields: int
    first_line: int
    text_cols: list[int]
    value_cols: list[int]
    names: list[str]
    expected: str
    row_what: str = "gene"
    col_what: str = "sample"
    last_line: int | None = None
    n_rows: int | None = None


@dataclass
class BodyChunk:
    """Consecutive checked rows: file lines, text fields and float32 values (may hold
    +-inf under ``nonfinite="missing"``; the caller turns them into NaN)."""

    lines: np.ndarray
    texts: dict[int, list[str]]
    values: np.ndarray


# ---------------------------------------------------------------------- line checks
class RowCheck:
    """Checks every line of a body as its bytes are read (see the module docstring)."""

    def __init__(self, path: PathLike, layout: BodyLayout) -> None:
        self.path = path
        self.layout = layout
        self.sep = layout.sep.encode()
        self.lines = array("q")  # file line of each data row, in order
        self._carry: list[bytes] = []
        self._carry_line = 1
        self.unbalanced_quote: int | None = None  # first line with an odd number of quotes

    def feed(self, data: bytes, line_no: int) -> None:
        """Check the complete lines in ``data``, whose first byte is on line ``line_no``."""
        if b"\n" not in data:
            if not self._carry:
                self._carry_line = line_no
            self._carry.append(data)
            return
        start = self._carry_line if self._carry else line_no
        parts = (b"".join(self._carry) + data if self._carry else data).split(b"\n")
        self._carry = [parts.pop()] if parts[-1] else []
        for k, line in enumerate(parts):
            self._line(line, start + k)
        self._carry_line = start + len(parts)

    def finish(self) -> None:
        """The last line, when the file does not end with a line feed."""
        if self._carry:
            self._line(b"".join(self._carry), self._carry_line)
            self._carry = []

    def _line(self, line: bytes, no: int) -> None:
        lay = self.layout
        if no < lay.first_line or (lay.last_line is not None and no > lay.last_line):
            return
        if not line.rstrip(b"\r").strip(b" "):
            return  # blank lines are skipped, as pandas skips them
        n = self._count(line, no)
        if n != lay.n_fields:
            raise InputFormatError(self.path, f"row has {n} fields", where=no,
                                   expected=lay.expected)
        self.lines.append(no)

    def _count(self, line: bytes, no: int) -> int:
        if self.layout.quoted and b'"' in line:
            if line.count(b'"') % 2 and self.unbalanced_quote is None:
                self.unbalanced_quote = no
            text = line.rstrip(b"\r").decode("utf-8", "replace")
            try:  # strict: a quoted field is closed on its line, and closes a whole field
                return len(next(csv.reader([text], delimiter=self.layout.sep, quotechar='"',
                                           strict=True)))
            except csv.Error as exc:
                raise InputFormatError(self.path, f"badly quoted field ({exc})", where=no,
                                       expected="double quotes around whole fields, closed "
                                       "on the same line") from None
        return line.count(self.sep) + 1


class _CheckedStream(ControlCharGuard):
    """A :class:`ControlCharGuard` that also feeds every byte to a :class:`RowCheck`."""

    def __init__(self, raw, path: PathLike, rows: RowCheck) -> None:
        super().__init__(raw, path)
        self.rows = rows

    def readinto(self, buffer) -> int:  # type: ignore[override]
        line_no = self._lines + 1
        n = super().readinto(buffer)
        if n:
            self.rows.feed(bytes(buffer[:n]), line_no)
        else:
            self.rows.finish()
        return n


@contextlib.contextmanager
def checked_binary(path: PathLike, layout: BodyLayout) -> Iterator[tuple[io.BufferedReader,
                                                                          RowCheck]]:
    """The file's bytes (gzip decompressed) through the control-character and row checks."""
    import gzip

    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    raw = gzip.open(path, "rb") if gz else open(path, "rb")
    rows = RowCheck(path, layout)
    with io.BufferedReader(_CheckedStream(raw, path, rows), buffer_size=1 << 20) as handle:
        yield handle, rows


# ---------------------------------------------------------------------- parsing
@dataclass
class _State:
    seen: set[str] = field(default_factory=set)
    done: int = 0  # data rows yielded so far


def iter_body(
    path: PathLike,
    layout: BodyLayout,
    *,
    nonfinite: NonFinite,
    chunk_rows: int = 5000,
) -> Iterator[BodyChunk]:
    """The checked rows of a body in chunks (see the module docstring)."""
    state = _State()
    try:
        for chunk in _fast_chunks(path, layout, chunk_rows):
            yield _checked(path, layout, chunk, state, nonfinite)
    except _Refused:
        for chunk in _slow_chunks(path, layout, chunk_rows, skip=state.done):
            yield _checked(path, layout, chunk, state, nonfinite)


class _Refused(Exception):
    """pandas refused a cell; the grammar decides from the first unread row on."""


def _fast_chunks(path: PathLike, layout: BodyLayout, chunk_rows: int) -> Iterator[BodyChunk]:
    cols = sorted([*layout.text_cols, *layout.value_cols])
    values = set(layout.value_cols)
    dtype = {c: (np.float32 if c in values else str) for c in cols}
    done = 0
    with checked_binary(path, layout) as (handle, rows):
        # the lines before the body are skipped here, as lines: pandas' skiprows counts rows,
        # and a stray quote above the body would make it skip a different number of lines
        for _ in range(layout.first_line - 1):
            handle.readline()
        reader = pd.read_csv(
            handle, sep=layout.sep, header=None, names=list(range(layout.n_fields)),
            usecols=None if len(cols) == layout.n_fields else cols, index_col=False,
            dtype=dtype,  # type: ignore[arg-type]
            keep_default_na=False, na_values={c: list(NA_TOKENS) for c in layout.value_cols},
            quoting=csv.QUOTE_MINIMAL if layout.quoted else csv.QUOTE_NONE, quotechar='"',
            chunksize=chunk_rows, engine="c", encoding="utf-8", float_precision="round_trip",
            nrows=layout.n_rows,
        )
        try:
            while True:
                # float32 overflow becomes inf (checked below); numpy's warning is not news
                with np.errstate(over="ignore"):
                    frame = next(reader, None)
                if frame is None:
                    break
                n = len(frame)
                if done + n > len(rows.lines):
                    raise _quote_error(path, rows)
                texts = {c: frame[c].tolist() for c in layout.text_cols}
                vals = frame[layout.value_cols].to_numpy(dtype=np.float32)
                yield BodyChunk(np.array(rows.lines[done:done + n], dtype=np.int64), texts,
                                vals)
                done += n
        except pd.errors.ParserError as exc:
            if rows.unbalanced_quote is not None:
                raise _quote_error(path, rows) from None
            raise InputFormatError(path, f"cannot parse: {str(exc).strip()[:200]}") from None
        except (ValueError, OverflowError) as exc:
            if isinstance(exc, (InputFormatError, UnicodeDecodeError)):
                raise
            raise _Refused from exc
        finally:
            reader.close()
        if done != len(rows.lines):
            raise _quote_error(path, rows)


def _quote_error(path: PathLike, rows: RowCheck) -> InputFormatError:
    """pandas joined lines into one row: a quoted field runs across a line break."""
    return InputFormatError(path, "a double-quoted field runs past the end of its line",
                            where=rows.unbalanced_quote,
                            expected="quotes around whole fields, closed on the same line")


def _split(line: str, layout: BodyLayout) -> list[str]:
    text = line.rstrip("\r\n")
    if layout.quoted and '"' in text:
        return next(csv.reader([text], delimiter=layout.sep, quotechar='"'))
    return text.split(layout.sep)


def _slow_chunks(path: PathLike, layout: BodyLayout, chunk_rows: int, *,
                 skip: int) -> Iterator[BodyChunk]:
    """The body from data row ``skip`` on, every cell parsed by the grammar."""
    pending: list[tuple[int, list[str]]] = []
    row = 0
    with checked_binary(path, layout) as (handle, _), \
            io.TextIOWrapper(handle, encoding="utf-8", newline="") as fh:
        for no, line in enumerate(fh, start=1):
            if no < layout.first_line or is_blank(line):
                continue
            if layout.last_line is not None and no > layout.last_line:
                break
            row += 1
            if row <= skip:
                continue
            pending.append((no, _split(line, layout)))
            if len(pending) >= chunk_rows:
                yield _parse_rows(path, layout, pending)
                pending = []
    if pending:
        yield _parse_rows(path, layout, pending)


def _parse_rows(path: PathLike, layout: BodyLayout, rows: list[tuple[int, list[str]]]
                ) -> BodyChunk:
    cols = layout.value_cols
    flat = [fields[c] for _, fields in rows for c in cols]
    values, bad = parse_texts(flat)
    if bad is not None:
        no = rows[bad // len(cols)][0]
        col = cols[bad % len(cols)]
        raise InputFormatError(
            path, f"non-numeric value {flat[bad][:30]!r} in field {col + 1} "
            f"({layout.col_what} {layout.names[col][:40]})", where=no,
            expected="a number or NA/NaN/empty for missing")
    texts = {c: [fields[c] for _, fields in rows] for c in layout.text_cols}
    lines = np.array([no for no, _ in rows], dtype=np.int64)
    return BodyChunk(lines, texts, values.reshape(len(rows), len(cols)))


# ---------------------------------------------------------------------- checks
def _checked(path: PathLike, layout: BodyLayout, chunk: BodyChunk, state: _State,
             nonfinite: NonFinite) -> BodyChunk:
    ids = chunk.texts[layout.text_cols[0]]
    check_row_ids(path, ids, chunk.lines, state.seen, what=layout.row_what)
    for col in layout.text_cols[1:]:
        texts = chunk.texts[col]
        if longest(texts) > MAX_FIELD_CHARS:
            k = next(i for i, t in enumerate(texts) if len(t) > MAX_FIELD_CHARS)
            raise InputFormatError(path, f"field {col + 1} ({layout.names[col][:40]}) has "
                                   f"{len(texts[k])} characters", where=int(chunk.lines[k]),
                                   expected=f"at most {MAX_FIELD_CHARS}")
    if nonfinite.policy == "error":
        bad = nonfinite_cells(chunk.values)
        if bad.any():
            r, c = (int(i) for i in np.argwhere(bad)[0])
            col = layout.value_cols[c]
            raise InputFormatError(
                path, f"value {chunk.values[r, c]} for {layout.row_what} {ids[r][:40]}, "
                f"{layout.col_what} {layout.names[col][:40]} (field {col + 1}) is infinite "
                "or beyond float32", where=int(chunk.lines[r]),
                expected="finite numbers (or --nonfinite missing to read them as missing)")
    state.done += len(ids)
    return chunk


def check_row_ids(path: PathLike, ids: Sequence[object], lines: Sequence[int], seen: set[str],
                  *, what: str) -> None:
    """Ids of consecutive rows: non-empty text, not too long, not seen before (``seen`` is
    updated); errors name the file line of the row."""
    for k, item in enumerate(ids):
        if not isinstance(item, str) or not item.strip():
            raise InputFormatError(path, f"empty {what} id", where=int(lines[k]),
                                   expected=f"a {what} id in the first field")
        check_id_length(path, item, what=what, where=int(lines[k]))
        if item in seen:
            raise InputFormatError(path, f"duplicate {what} id {item[:60]!r}",
                                   where=int(lines[k]), expected=f"unique {what} ids")
        seen.add(item)
