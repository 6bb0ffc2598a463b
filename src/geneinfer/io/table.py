"""Delimited text tables (TSV / CSV, plain or gzip) of expression values.

The first column holds ids; the header row holds the other axis' ids. Tables come either
way round, so ``orientation`` says which: ``"genes-in-rows"`` (e.g. GEUVADIS counts:
``gene_id`` then one column per sample) or ``"samples-in-rows"``. Without it the
orientation is detected only when it is safe: one axis clearly holds gene ids (probe,
Entrez or Ensembl ids, or gene symbols when the other axis does not look like symbols);
otherwise an :class:`~geneinfer.errors.InputFormatError` asks for ``--orientation``.

Leading non-numeric columns after the id column are metadata of the row items (e.g. a
``symbol`` column in a genes-in-rows table). A table states no scale, so it is read as
``"unknown"``; :func:`geneinfer.scales.resolve_scale` decides it where it matters.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from geneinfer.errors import GeneinferError, InputFormatError
from geneinfer.expression import ExpressionData
from geneinfer.idkinds import detect_id_kind
from geneinfer.io._common import (
    NA_TOKENS,
    PathLike,
    check_chunk_ids,
    check_readable,
    check_unique,
    format_block,
    is_gzip,
    is_na_token,
    locate_bad_number,
    meta_frame,
    open_text,
    parser_error,
    rows_per_block,
    translate_errors,
)
from geneinfer.io.blocks import Spool, SpooledBlocks
from geneinfer.utils.files import atomic_path

ORIENTATIONS = ("genes-in-rows", "samples-in-rows")
_GENE_HEADERS = {
    "gene",
    "gene_id",
    "geneid",
    "genes",
    "probe",
    "probe_id",
    "id_ref",
    "probeset",
    "symbol",
    "gene_symbol",
    "ensembl",
    "ensembl_id",
    "entrez",
    "entrez_id",
}
_SAMPLE_HEADERS = {"sample", "sample_id", "samples", "gsm", "cell", "barcode"}
_SNIFF_ROWS = 200


@dataclass
class _Layout:
    sep: str
    header: list[str]
    first_col: list[str]
    n_meta: int
    genes_in_rows: bool


def _sep_for(path: PathLike, sep: str | None) -> str:
    if sep:
        return sep
    name = str(path).lower().removesuffix(".gz")
    return "," if name.endswith(".csv") else "\t"


def _read_header(path: PathLike, sep: str) -> list[str]:
    with open_text(path) as fh:
        line = fh.readline()
    if not line.strip():
        raise InputFormatError(path, "first line is empty", where=1, expected="a header row")
    return next(csv.reader([line.rstrip("\r\n")], delimiter=sep, quotechar='"'))


def _is_numeric_text(texts: Sequence[str]) -> bool:
    for t in texts:
        if is_na_token(t):
            continue
        try:
            float(t)
        except ValueError:
            return False
    return True


def _sniff(path: PathLike, sep: str) -> tuple[list[str], list[list[str]]]:
    header = _read_header(path, sep)
    rows: list[list[str]] = []
    with open_text(path) as fh:
        fh.readline()
        for row in csv.reader(fh, delimiter=sep, quotechar='"'):
            rows.append(row)
            if len(rows) >= _SNIFF_ROWS:
                break
    return header, rows


def _orientation(
    path: PathLike, header: list[str], first_col: list[str], n_meta: int, requested: str | None
) -> bool:
    """True for genes-in-rows; checks a requested orientation against clear evidence."""
    col_ids = header[1 + n_meta :]
    row_kind = detect_id_kind(first_col)
    col_kind = detect_id_kind(col_ids)
    strong = ("probe", "entrez", "ensembl")
    detected: bool | None = None
    if row_kind in strong and col_kind not in strong:
        detected = True
    elif col_kind in strong and row_kind not in strong:
        detected = False
    elif row_kind == "symbol" and col_kind == "unknown":
        detected = True
    elif col_kind == "symbol" and row_kind == "unknown":
        detected = False
    elif row_kind == col_kind:  # both unknown or both symbol-like: trust a clear id header
        name = header[0].strip().lower()
        if name in _GENE_HEADERS:
            detected = True
        elif name in _SAMPLE_HEADERS:
            detected = False
    if requested is None:
        if detected is None:
            raise InputFormatError(
                path,
                "cannot tell whether genes are rows or columns",
                expected="orientation='genes-in-rows' or 'samples-in-rows' "
                "(--orientation on the command line)",
            )
        return detected
    if requested not in ORIENTATIONS:
        raise GeneinferError(f"orientation must be one of {ORIENTATIONS}, not {requested!r}")
    wanted = requested == "genes-in-rows"
    # Contradict the user only on overwhelming evidence: many ids of a strong kind on one
    # axis (a handful of integers could be sample numbers), none on the other.
    n_strong = len(first_col) if row_kind in strong else len(col_ids)
    clear = (row_kind in strong) != (col_kind in strong) and n_strong >= 5
    if clear and detected is not None and detected != wanted:
        where, kind = ("the first column", row_kind) if detected else ("the header", col_kind)
        raise InputFormatError(
            path,
            f"orientation {requested!r} contradicts the file: {where} holds {kind} gene ids",
            expected=f"orientation={ORIENTATIONS[0] if detected else ORIENTATIONS[1]!r}",
        )
    return wanted


def _layout(path: PathLike, sep: str | None, orientation: str | None) -> _Layout:
    path = check_readable(path)
    sep = _sep_for(path, sep)
    header, rows = _sniff(path, sep)
    check_unique(path, header, what="column", where=1)
    if len(header) < 2:
        raise InputFormatError(
            path,
            f"header has {len(header)} field",
            where=1,
            expected=f"an id column and value columns separated by {sep!r}",
        )
    if not rows:
        raise InputFormatError(path, "no data rows", where=2, expected="one row per gene or sample")
    n_meta = 0
    for j in range(1, len(header) - 1):
        col = [r[j] for r in rows if len(r) > j]
        if _is_numeric_text(col):
            break
        n_meta += 1
    first_col = [r[0] for r in rows if r]
    genes_in_rows = _orientation(path, header, first_col, n_meta, orientation)
    return _Layout(sep, header, first_col, n_meta, genes_in_rows)


def _read_frame(
    path: PathLike, lay: _Layout, *, usecols: list[int] | None = None, chunksize: int | None = None
):
    value_cols = range(1 + lay.n_meta, len(lay.header))
    cols = list(range(len(lay.header))) if usecols is None else usecols
    if len(cols) == len(lay.header):
        usecols = None  # without usecols the parser also rejects rows with extra fields
    dtype: dict[int, object] = {c: (np.float32 if c in value_cols else str) for c in cols}
    return pd.read_csv(
        path,
        sep=lay.sep,
        header=None,
        skiprows=1,
        names=list(range(len(lay.header))),
        usecols=usecols,
        index_col=False,
        dtype=dtype,  # type: ignore[arg-type]
        keep_default_na=False,
        na_values={c: list(NA_TOKENS) for c in cols if c in value_cols},
        quotechar='"',
        compression="gzip" if is_gzip(path) else None,
        chunksize=chunksize,
        engine="c",
        encoding="utf-8",
    )


def _check_short_rows(path: PathLike, lay: _Layout, frame: pd.DataFrame, offset: int) -> None:
    last = len(lay.header) - 1
    if last not in frame.columns:
        return
    short = np.flatnonzero(frame[last].isna().to_numpy())
    if not short.size:
        return
    wanted = {int(offset + s + 2) for s in short}  # 1-based line numbers after the header
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            if lineno in wanted:
                n = len(next(csv.reader([line.rstrip("\r\n")], delimiter=lay.sep, quotechar='"')))
                if n != len(lay.header):
                    raise InputFormatError(
                        path,
                        f"row has {n} fields",
                        where=lineno,
                        expected=f"{len(lay.header)} like the header",
                    )
                wanted.discard(lineno)
                if not wanted:
                    return


@contextlib.contextmanager
def _guard(path: PathLike, lay: _Layout) -> Iterator[None]:
    """Locate the cell behind a pandas conversion / tokenizer failure."""
    try:
        yield
    except InputFormatError:
        raise
    except ValueError as exc:
        if "convert" not in str(exc) and not isinstance(exc, pd.errors.ParserError):
            raise
        raise _parse_error(path, lay, exc) from exc


def _parse_error(path: PathLike, lay: _Layout, exc: ValueError) -> InputFormatError:
    if isinstance(exc, pd.errors.ParserError):
        return parser_error(path, exc)
    bad = locate_bad_number(path, first_line=2, first_field=1 + lay.n_meta, sep=lay.sep)
    if bad is None:
        return InputFormatError(path, f"cannot parse: {exc}", expected="a delimited table")
    return InputFormatError(
        path,
        f"non-numeric value {bad[2][:30]!r} in field {bad[1]}",
        where=bad[0],
        expected="a number or NA/NaN/empty for missing",
    )


_CHUNK_ROWS = 5000


def _chunks(path: PathLike, lay: _Layout) -> Iterator[tuple[list[str], dict, np.ndarray]]:
    """The rows, parsed and checked, in chunks: ``(ids, metadata texts, float32 values)``.

    This is the one table body parser: whole-file reads and block readers both use it.
    """
    value_cols = list(range(1 + lay.n_meta, len(lay.header)))
    meta_cols = list(range(1, 1 + lay.n_meta))
    what = "gene" if lay.genes_in_rows else "sample"
    seen: set[str] = set()
    offset = 0
    with _guard(path, lay):
        for frame in _read_frame(path, lay, chunksize=_CHUNK_ROWS):
            frame = frame.reset_index(drop=True)
            _check_short_rows(path, lay, frame, offset)
            ids = frame[0].tolist()
            check_chunk_ids(path, ids, seen, what=what, first_line=offset + 2)
            meta = {lay.header[c]: frame[c].tolist() for c in meta_cols}
            yield ids, meta, frame[value_cols].to_numpy(dtype=np.float32)
            offset += len(frame)


def read_table(
    path: PathLike, *, sep: str | None = None, orientation: str | None = None
) -> ExpressionData:
    """Read a TSV/CSV expression table (plain or gzip).

    Parameters
    ----------
    sep
        Field separator (default: ``,`` for ``.csv``, else tab).
    orientation
        ``"genes-in-rows"``, ``"samples-in-rows"`` or None to detect (only when safe).
    """
    with TableBlocks(path, sep=sep, orientation=orientation) as reader:
        return reader.block(0, reader.n_samples)


class TableBlocks(SpooledBlocks):
    """Random access to a TSV/CSV table: parsed once into a spool (rows as in the file),
    from which sample blocks are sliced."""

    def __init__(self, path: PathLike, *, sep: str | None = None,
                 orientation: str | None = None) -> None:
        self.path = Path(path)
        self.source = str(path)
        with translate_errors(path, what="delimited table"):
            lay = _layout(path, sep, orientation)
        self.spool = Spool(len(lay.header) - 1 - lay.n_meta)
        ids: list[str] = []
        meta: dict[str, list[str]] = {lay.header[c]: [] for c in range(1, 1 + lay.n_meta)}
        try:
            with translate_errors(path, what="delimited table"):
                for chunk_ids, chunk_meta, values in _chunks(path, lay):
                    self.spool.append(values)
                    ids.extend(chunk_ids)
                    for name, texts in chunk_meta.items():
                        meta[name].extend(texts)
        except BaseException:
            self.close()
            raise
        rows = pd.Index(ids, dtype=object)
        row_meta = meta_frame(meta, rows)
        cols = pd.Index(lay.header[1 + lay.n_meta:], dtype=object)
        self.genes_in_rows = lay.genes_in_rows
        if lay.genes_in_rows:
            self.gene_ids, self.genes = rows, row_meta
            self.sample_table = pd.DataFrame(index=cols)
        else:
            self.gene_ids, self.genes = cols, pd.DataFrame(index=cols)
            self.sample_table = row_meta
        self.n_samples = len(self.sample_table)
        self.gene_id_kind = detect_id_kind(self.gene_ids)


def peek_table(
    path: PathLike, *, sep: str | None = None, orientation: str | None = None
) -> tuple[int, int, list[str]]:
    """``(n_samples, n_genes, gene_ids)`` reading the header and the id column only."""
    with translate_errors(path, what="delimited table"):
        lay = _layout(path, sep, orientation)
        first_col = pd.read_csv(
            path,
            sep=lay.sep,
            header=None,
            skiprows=1,
            usecols=[0],
            dtype=str,
            keep_default_na=False,
            quotechar='"',
            compression="gzip" if is_gzip(path) else None,
        )[0].tolist()
    col_ids = lay.header[1 + lay.n_meta :]
    if lay.genes_in_rows:
        return len(col_ids), len(first_col), first_col
    return len(first_col), len(col_ids), col_ids


# --------------------------------------------------------------------------- writing
def _quote(text: str, sep: str) -> str:
    if "\n" in text or "\r" in text:
        raise GeneinferError(f"cannot write id {text[:40]!r}: contains a newline")
    if sep in text or '"' in text or text != text.strip():
        return '"' + text.replace('"', '""') + '"'
    return text


def write_table(
    data: ExpressionData,
    path: PathLike,
    *,
    sep: str | None = None,
    orientation: str = "genes-in-rows",
    chunk_rows: int | None = None,
) -> None:
    """Write the values as a TSV/CSV table (``.gz`` -> gzip); metadata is not written.

    ``orientation="genes-in-rows"`` writes ``gene_id`` then one column per sample;
    ``"samples-in-rows"`` writes ``sample_id`` then one column per gene. Values round-trip
    exactly as float32; NaN is written as ``NaN``. Atomic: no partial file is left.
    """
    if orientation not in ORIENTATIONS:
        raise GeneinferError(f"orientation must be one of {ORIENTATIONS}, not {orientation!r}")
    sep = _sep_for(path, sep)
    genes_in_rows = orientation == "genes-in-rows"
    row_ids = data.gene_ids if genes_in_rows else data.sample_ids
    col_ids = data.sample_ids if genes_in_rows else data.gene_ids
    for ids in (row_ids, col_ids):
        if any(not str(i).strip() for i in ids):
            raise GeneinferError("cannot write an empty id to a table")
    matrix = data.values.T if genes_in_rows else data.values
    head = [("gene_id" if genes_in_rows else "sample_id"), *map(str, col_ids)]
    gz = str(path).endswith(".gz")
    with atomic_path(path) as tmp:
        fh = (
            gzip.open(tmp, "wt", encoding="utf-8", newline="")
            if gz
            else open(tmp, "w", encoding="utf-8", newline="")
        )
        with fh:
            fh.write(sep.join(_quote(h, sep) for h in head) + "\n")
            rid = [_quote(str(i), sep) for i in row_ids]
            step = chunk_rows or rows_per_block(matrix.shape[1])
            for start in range(0, matrix.shape[0], step):
                stop = min(start + step, matrix.shape[0])
                lines = format_block(matrix[start:stop])
                fh.write(
                    "".join(
                        f"{rid[k]}{sep}{ln if sep == chr(9) else ln.replace(chr(9), sep)}\n"
                        if matrix.shape[1]
                        else f"{rid[k]}\n"
                        for k, ln in zip(range(start, stop), lines)
                    )
                )
