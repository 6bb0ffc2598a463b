"""The one numeric grammar and the checks every reader applies to what it reads.

Every text reader (GCT, TSV/CSV, SOFT, GEO series matrix) turns cell texts into numbers by
these rules, and every reader (HDF5 ones too) applies the same checks. The rules are what a
user can rely on, and what ``benchmarks/fuzz_readers.py`` holds the readers to:

* **numbers**: ASCII decimal notation with an optional sign, point and exponent, optionally
  surrounded by spaces or tabs (``1``, ``-2.5``, ``.5``, ``3.``, ``1e-3``, ``+7E+02``);
  nothing else is a number (``1_000``, ``0x10``, ``1,5``, non-ASCII digits, ``NAN``...);
* **missing values**: exactly one of :data:`NA_TOKENS` (after removing surrounding spaces
  and tabs) is read as NaN; nothing else becomes NaN;
* **non-finite values**: ``inf`` / ``infinity`` in any case with an optional sign, and numbers
  that round to infinity as float32 (``1e999``, ``3.5e38``) are refused naming the file,
  line and gene/sample, or with ``nonfinite="missing"`` (``--nonfinite missing``) read as
  NaN and counted (:class:`NonFinite`);
* **precision**: values are stored as float32, rounded to the nearest float32 (magnitudes
  below about 1.4e-45 become 0);
* **control characters** (U+0000-U+001F except tab and line feed, a carriage return not
  followed by a line feed, U+007F) anywhere in a text file are refused naming the line;
* **blank lines** (empty or only spaces) in a table body are skipped; line numbers in
  messages are always lines of the file;
* **lengths**: an id has at most :data:`MAX_ID_CHARS` characters, any other field at most
  :data:`MAX_FIELD_CHARS` (the csv module's default limit); longer ones are refused on read
  and on write.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, BinaryIO

import numpy as np

from geneinfer.errors import GeneinferError, InputFormatError

#: Cell texts read as missing values in numeric columns (never turned into 0).
NA_TOKENS: tuple[str, ...] = (
    "",
    "NA",
    "NaN",
    "nan",
    "-nan",
    "-NaN",
    "N/A",
    "#N/A",
    "NULL",
    "null",
    "na",
    "None",
)
_NA_SET = frozenset(NA_TOKENS)

#: Longest gene or sample id (characters) geneinfer reads or writes. Real ids (probe,
#: Entrez, Ensembl, GEO, CMap ids, cell barcodes) have at most a few hundred.
MAX_ID_CHARS = 4096
#: Longest metadata field (characters) geneinfer reads or writes: the csv module's default
#: field size limit, which every reader is set to accept.
MAX_FIELD_CHARS = 131_072

#: What readers do with infinite values and numbers beyond float32: ``"error"`` refuses the
#: input naming the cell, ``"missing"`` reads them as NaN (and counts them).
NONFINITE_POLICIES = ("error", "missing")

# the csv module refuses fields above its limit with an error; make the limit the documented
# maximum (it is process-wide; raising it can only make other readers accept more)
csv.field_size_limit(max(csv.field_size_limit(), MAX_FIELD_CHARS))

_SPACE = "[ \t]*"
_DECIMAL = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_INFINITY = r"[+-]?(?:[iI][nN][fF](?:[iI][nN][iI][tT][yY])?)"
NUMBER = re.compile(f"{_SPACE}(?:{_DECIMAL}|{_INFINITY}){_SPACE}", re.ASCII)


# ---------------------------------------------------------------------- non-finite policy
@dataclass
class NonFinite:
    """What a reader does with non-finite values, and how many it read as missing.

    Pass one to a reader (``nonfinite=NonFinite("missing")``) to learn the count afterwards;
    readers also take the policy name alone.

    Attributes
    ----------
    policy
        ``"error"`` or ``"missing"``.
    count
        Values read as missing under ``"missing"`` so far (a value read twice counts twice).
    """

    policy: str = "error"
    count: int = 0

    def __post_init__(self) -> None:
        if self.policy not in NONFINITE_POLICIES:
            raise GeneinferError(f"nonfinite must be one of {', '.join(NONFINITE_POLICIES)}, "
                                 f"not {self.policy!r}")


def as_nonfinite(value: str | NonFinite | None) -> NonFinite:
    """A :class:`NonFinite` from a policy name (None -> ``"error"``) or the object itself."""
    if isinstance(value, NonFinite):
        return value
    return NonFinite(value or "error")


def nonfinite_cells(values: np.ndarray) -> np.ndarray:
    """Mask of the infinite cells of ``values`` (NaN is a missing value, not non-finite)."""
    return np.isinf(values)


# ---------------------------------------------------------------------- text cells
def is_na_token(text: str) -> bool:
    """True for a missing-value token (:data:`NA_TOKENS`, surrounding spaces allowed)."""
    return text.strip(" \t") in _NA_SET


def is_number_text(text: str) -> bool:
    """True if ``text`` is a number by the grammar (finite or not); NA tokens are not."""
    return NUMBER.fullmatch(text) is not None


def parse_texts(texts: Sequence[str]) -> tuple[np.ndarray, int | None]:
    """Cell texts -> float32 values (NA tokens -> NaN; ``inf`` and float32 overflow -> +-inf).

    Returns the values and the position of the first text that is neither a number nor a
    missing-value token (None when all are valid); values from there on are undefined.
    """
    out = np.full(len(texts), np.nan, dtype=np.float32)
    keep: list[int] = []
    for k, text in enumerate(texts):
        if text.strip(" \t") in _NA_SET:
            continue
        if NUMBER.fullmatch(text) is None:
            return out, k
        keep.append(k)
    if keep:
        numbers = np.array([texts[k].strip(" \t") for k in keep], dtype=np.float64)
        with np.errstate(over="ignore"):
            out[keep] = numbers.astype(np.float32)
    return out, None


# ---------------------------------------------------------------------- lengths
def check_id_length(path: str | os.PathLike[str], ident: str, *, what: str,
                    where: int | str | None) -> None:
    """Refuse an id longer than :data:`MAX_ID_CHARS` (one line naming where it is)."""
    if len(ident) > MAX_ID_CHARS:
        raise InputFormatError(path, f"{what} id of {len(ident)} characters ({ident[:20]!r}...)",
                               where=where, expected=f"ids of at most {MAX_ID_CHARS} characters")


def longest(texts: Sequence[object]) -> int:
    """Length of the longest text among ``texts`` (0 when empty; non-texts count 0)."""
    return max((len(t) for t in texts if isinstance(t, str)), default=0)


def check_writable_texts(texts: Sequence[str], *, what: str, limit: int,
                         control: bool = True) -> None:
    """Refuse (before writing anything) a text that readers would refuse: longer than
    ``limit`` characters or (``control``: for text formats) holding a control character."""
    for text in texts:
        if len(text) > limit:
            raise GeneinferError(f"cannot write {what} {text[:20]!r}... of {len(text)} "
                                 f"characters (at most {limit} can be read back)")
        bad = _CONTROL_TEXT.search(text) if control else None
        if bad is not None:
            raise GeneinferError(f"cannot write {what} {text[:40]!r}: it contains the control "
                                 f"character {_char_name(ord(bad.group()))}")


def check_writable_values(values: np.ndarray, gene_ids: Sequence[str],
                          sample_ids: Sequence[str], *, block: int = 4096) -> None:
    """Refuse (before writing anything) infinite values, which every reader refuses: a file
    geneinfer writes must read back. NaN (missing) is fine."""
    for start in range(0, values.shape[0], block):
        bad = nonfinite_cells(values[start:start + block])
        if bad.any():
            r, c = (int(i) for i in np.argwhere(bad)[0])
            raise GeneinferError(
                f"cannot write the infinite value of sample {str(sample_ids[start + r])[:40]}, "
                f"gene {str(gene_ids[c])[:40]}: geneinfer reads no infinite values back; make "
                "them missing (NaN) first, e.g. read the input with --nonfinite missing")


# ---------------------------------------------------------------------- control characters
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)")
_CONTROL_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\r\n]")
_NAMES = {0: "NUL", 0x0D: "carriage return (not followed by a line feed)", 0x7F: "DEL"}


def _char_name(code: int) -> str:
    return _NAMES.get(code, f"U+{code:04X}")


class ControlCharGuard(io.RawIOBase):
    """A binary stream that refuses control characters as they are read.

    Wraps the raw (or decompressed) bytes of a text file; the first control character
    raises :class:`InputFormatError` naming the line. The check runs in C (one regular
    expression per chunk), so parsers that read through it keep their speed.
    """

    def __init__(self, raw: BinaryIO, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self._raw = raw
        self._path = path
        self._lines = 0  # line feeds passed on so far
        self._pending = b""  # bytes read ahead to see what follows a final carriage return

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        size = len(buffer)
        data = self._pending or self._raw.read(size)
        self._pending = b""
        if len(data) > size:
            data, self._pending = data[:size], data[size:]
        if data.endswith(b"\r") and not self._pending:
            self._pending = self._raw.read(1)
        self._check(data, data + self._pending[:1])
        self._lines += data.count(b"\n")
        buffer[: len(data)] = data
        return len(data)

    def _check(self, data: bytes, view: bytes) -> None:
        match = _CONTROL.search(view)
        if match is None or match.start() >= len(data):
            return
        line = self._lines + data.count(b"\n", 0, match.start()) + 1
        raise InputFormatError(self._path, f"control character {_char_name(view[match.start()])}",
                               where=line, expected="text without NUL or other control "
                               "characters (tab-separated fields, one row per line)")

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


def open_binary(path: str | os.PathLike[str]) -> io.BufferedReader:
    """Open a text file for reading as bytes (gzip decompressed), refusing control
    characters (:class:`ControlCharGuard`)."""
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    raw: BinaryIO = gzip.open(path, "rb") if gz else open(path, "rb")  # type: ignore[assignment]
    return io.BufferedReader(ControlCharGuard(raw, path), buffer_size=1 << 20)


def open_guarded_text(path: str | os.PathLike[str]) -> IO[str]:
    """:func:`open_binary` as UTF-8 text (line endings kept, ``newline=""``)."""
    return io.TextIOWrapper(open_binary(path), encoding="utf-8", newline="")


def is_blank(line: str) -> bool:
    """A line that table parsers skip: empty or only spaces (line ending aside)."""
    return not line.rstrip("\r\n").strip(" ")
