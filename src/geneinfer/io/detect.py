"""Format detection: from the file name (incl. ``.gz``), else from the first bytes."""

from __future__ import annotations

from pathlib import Path

import h5py

from geneinfer.errors import GeneinferError, InputFormatError
from geneinfer.io._common import PathLike, check_readable, open_text, translate_errors

#: Format names accepted by :func:`geneinfer.io.read` / :func:`geneinfer.io.write`.
FORMATS: tuple[str, ...] = ("gct", "gctx", "soft", "series-matrix", "tsv", "csv", "h5ad")
WRITABLE: tuple[str, ...] = ("gct", "gctx", "tsv", "csv", "h5ad")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def format_from_name(path: PathLike) -> str | None:
    """Format implied by the file name, or None when the name says nothing."""
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith(".gct"):
        return "gct"
    if name.endswith(".gctx"):
        return "gctx"
    if name.endswith(".h5ad"):
        return "h5ad"
    if name.endswith(".soft"):
        return "soft"
    if "series_matrix" in name:
        return "series-matrix"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".tsv", ".tab")):
        return "tsv"
    return None


def format_from_content(path: PathLike) -> str:
    """Format recognised from the content (HDF5 layout or the first text line)."""
    path = check_readable(path)
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if magic == _HDF5_MAGIC:
        with translate_errors(path, what="HDF5 file"), h5py.File(path, "r") as f:
            if "0/DATA/0/matrix" in f:
                return "gctx"
            if "X" in f and "obs" in f and "var" in f:
                return "h5ad"
        raise InputFormatError(
            path,
            "HDF5 file in an unknown layout",
            expected="GCTX (/0/DATA/0/matrix) or AnnData (X, obs, var)",
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


def detect_format(path: PathLike, *, format: str | None = None) -> str:
    """The format to read ``path`` with: ``format`` if given, else name, else content."""
    if format is not None:
        fmt = format.lower()
        if fmt not in FORMATS:
            raise GeneinferError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
        return fmt
    return format_from_name(path) or format_from_content(path)


def output_format(path: PathLike, *, format: str | None = None) -> str:
    """The format to write ``path`` in (must be writable)."""
    fmt = format.lower() if format else format_from_name(path)
    if fmt is None:
        raise GeneinferError(
            f"cannot tell the output format from {path}; use a .gct/.gctx/.tsv/.csv/.h5ad "
            "name or give the format"
        )
    if fmt not in WRITABLE:
        raise GeneinferError(f"cannot write {fmt}; writable formats: {', '.join(WRITABLE)}")
    return fmt
