"""The one table of file formats: names, file-name endings, what can be read and written.

A format comes from an explicit choice (``format=`` / ``--from`` / ``--to`` / ``--format``),
else the file name (``.gz`` allowed), else the first bytes of the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py

from geneinfer.errors import GeneinferError, InputFormatError
from geneinfer.io._common import PathLike, check_readable, open_text, translate_errors
from geneinfer.io.archs4 import is_archs4
from geneinfer.io.h5probe import probe


@dataclass(frozen=True)
class Format:
    """One file format.

    Attributes
    ----------
    name
        What ``format=`` takes.
    endings
        File-name endings (lower case, after removing ``.gz``) that imply the format.
    writable
        geneinfer can write it.
    streamed
        Predictions are written into a preallocated file block by block (any size,
        resumable); other writable formats are written at once from memory.
    """

    name: str
    endings: tuple[str, ...]
    writable: bool
    streamed: bool = False


_TABLE: tuple[Format, ...] = (
    Format("gct", (".gct",), writable=True),
    Format("gctx", (".gctx",), writable=True, streamed=True),
    Format("h5ad", (".h5ad",), writable=True, streamed=True),
    # ARCHS4 files are plain ".h5": recognised by their layout, never by the name alone
    Format("archs4", (), writable=False),
    Format("soft", (".soft",), writable=False),
    Format("series-matrix", ("_series_matrix.txt",), writable=False),
    Format("tsv", (".tsv", ".tab"), writable=True),
    Format("csv", (".csv",), writable=True),
)
_BY_NAME = {f.name: f for f in _TABLE}

#: Format names accepted by :func:`geneinfer.io.read` and :func:`geneinfer.io.open_blocks`.
FORMATS: tuple[str, ...] = tuple(f.name for f in _TABLE)
#: Formats :func:`geneinfer.io.write` writes.
WRITABLE: tuple[str, ...] = tuple(f.name for f in _TABLE if f.writable)
#: Writable formats whose matrix is preallocated and written block by block.
STREAMED: tuple[str, ...] = tuple(f.name for f in _TABLE if f.streamed)

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def format_from_name(path: PathLike) -> str | None:
    """Format implied by the file name, or None when the name says nothing."""
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for fmt in _TABLE:
        if name.endswith(fmt.endings):
            return fmt.name
    return None


def format_from_content(path: PathLike) -> str:
    """Format recognised from the content (HDF5 layout or the first text line)."""
    path = check_readable(path)
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if magic == _HDF5_MAGIC:
        probe(path, what="an HDF5 file (GCTX or AnnData)")
        with translate_errors(path, what="HDF5 file"), h5py.File(path, "r") as f:
            if "0/DATA/0/matrix" in f:
                return "gctx"
            if "X" in f and "obs" in f and "var" in f:
                return "h5ad"
            if is_archs4(f):
                return "archs4"
        raise InputFormatError(
            path,
            "HDF5 file in an unknown layout",
            expected="GCTX (/0/DATA/0/matrix), AnnData (X, obs, var) or ARCHS4 "
            "(/data/expression, /meta/genes)",
        )
    with translate_errors(path, what="text file"), open_text(path) as fh:
        first = fh.readline()
    head = first.strip()
    if head in ("#1.2", "#1.3"):
        return "gct"
    if head.startswith("^"):
        return "soft"
    if head.startswith("!Series_") or head.startswith("!Sample_"):
        return "series-matrix"
    if "\t" in first:
        return "tsv"
    if "," in first:
        return "csv"
    raise InputFormatError(
        path,
        "cannot recognise the format",
        where=1,
        expected=f"one of {', '.join(FORMATS)} (or give the format)",
    )


def _named(format: str, allowed: tuple[str, ...], what: str) -> str:
    fmt = format.lower().lstrip(".")
    if fmt not in allowed:
        raise GeneinferError(f"unknown {what} format {format!r}; expected one of "
                             f"{', '.join(allowed)}")
    return fmt


def detect_format(path: PathLike, *, format: str | None = None) -> str:
    """The format to read ``path`` with: ``format`` if given, else name, else content."""
    if format is not None:
        return _named(format, FORMATS, "input")
    return format_from_name(path) or format_from_content(path)


def output_format(path: PathLike, *, format: str | None = None) -> str:
    """The format to write ``path`` in (must be writable)."""
    if format is not None:
        return _named(format, WRITABLE, "output")
    fmt = format_from_name(path)
    if fmt is None:
        raise GeneinferError(
            f"cannot tell the output format from {path}; use a "
            f"{'/'.join(_BY_NAME[f].endings[0] for f in WRITABLE)} name or give the format"
        )
    if fmt not in WRITABLE:
        raise GeneinferError(f"cannot write {fmt}; writable formats: {', '.join(WRITABLE)}")
    return fmt
