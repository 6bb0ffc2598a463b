"""Reading and writing expression files.

Formats: ``gct`` (1.2/1.3, plain or .gz), ``gctx`` (CMap HDF5), ``soft`` (GEO family file,
read only), ``series-matrix`` (GEO, read only), ``tsv`` / ``csv`` (delimited tables),
``h5ad`` (AnnData, optional extra) and ``archs4`` (ARCHS4 gene counts ``.h5``, read only).
The format comes from ``format=``, else the file name (``.gz`` allowed), else the content.
Any reader's samples can carry a sample attribute table (``sample_attributes=FILE``, e.g.
GTEx's tissues).

>>> data = read("profiles.gct.gz")                      # doctest: +SKIP
>>> write(data, "profiles.gctx")                        # doctest: +SKIP
>>> with open_blocks("big.gctx") as reader:              # doctest: +SKIP
...     for block in reader.iter_blocks(10_000):
...         ...

Every reader raises :class:`~geneinfer.errors.InputFormatError` (file, line or dataset,
what was expected) on malformed input; missing values stay NaN. What readers accept (the
number grammar, missing tokens, infinite values, control characters, lengths) is in
:mod:`geneinfer.io.cells`. Writers are atomic and refuse what readers would refuse.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pandas as pd

from geneinfer.errors import GeneinferError
from geneinfer.expression import ExpressionData
from geneinfer.io._common import MISSING_ID_TEXTS, NA_TOKENS, open_text, translate_errors
from geneinfer.io.archs4 import (
    Archs4Blocks,
    Archs4Selection,
    check_selection,
    peek_archs4,
    read_archs4,
)
from geneinfer.io.attributes import AttributedBlocks, read_sample_attributes
from geneinfer.io.blocks import BlockReader, MemoryBlocks, finite_data
from geneinfer.io.cells import NONFINITE_POLICIES, NonFinite, as_nonfinite
from geneinfer.io.formats import (
    FORMATS,
    STREAMED,
    WRITABLE,
    detect_format,
    format_from_name,
    output_format,
)
from geneinfer.io.gct import GCTBlocks, peek_gct, read_gct, write_gct
from geneinfer.io.gctx import GCTXBlocks, GCTXWriter, peek_gctx, read_gctx, write_gctx
from geneinfer.io.h5ad import H5adBlocks, peek_h5ad, read_h5ad, write_h5ad
from geneinfer.io.soft import read_series_matrix, read_soft, read_soft_platform, soft_platforms
from geneinfer.io.table import TableBlocks, peek_table, read_table, write_table

__all__ = [
    "FORMATS",
    "MISSING_ID_TEXTS",
    "NA_TOKENS",
    "NONFINITE_POLICIES",
    "STREAMED",
    "WRITABLE",
    "Archs4Selection",
    "BlockReader",
    "GCTXWriter",
    "NonFinite",
    "detect_format",
    "finite_data",
    "format_from_name",
    "iter_sample_blocks",
    "open_blocks",
    "open_text",
    "peek",
    "read",
    "read_gct",
    "read_gctx",
    "read_sample_attributes",
    "read_series_matrix",
    "read_soft",
    "read_table",
    "soft_platforms",
    "translate_errors",
    "write",
    "write_gct",
    "write_gctx",
    "write_table",
]

_TABLE_SEP = {"tsv": "\t", "csv": ","}


def _only(fmt: str, opts: dict, allowed: set[str]) -> None:
    extra = set(opts) - allowed
    if extra:
        raise GeneinferError(f"option(s) {', '.join(sorted(extra))} do not apply to {fmt} files")


def read(path, *, format: str | None = None, nonfinite: str | NonFinite | None = None,
         **opts) -> ExpressionData:
    """Read an expression file of any supported format as samples x genes.

    Parameters
    ----------
    path
        The file.
    format
        One of :data:`FORMATS`; default: from the name, else the content.
    nonfinite
        ``"error"`` (default): infinite values and numbers beyond float32 are refused
        naming the cell; ``"missing"``: they are read as NaN. Pass a :class:`NonFinite` to
        learn how many were (``.count``). The rules of every reader are in
        :mod:`geneinfer.io.cells`.
    **opts
        Format options: ``platform`` (SOFT with several platforms: required),
        ``orientation`` and ``sep`` (tsv/csv), ``gene_ids`` / ``sample_ids`` /
        ``sample_slice`` (gctx subsets), ``sample_ids`` (gct), ``selection`` (archs4: an
        :class:`Archs4Selection`); any format: ``sample_attributes`` (a table file whose
        first column is the sample id, or a DataFrame indexed by sample id).
    """
    attributes = opts.pop("sample_attributes", None)
    if attributes is not None:
        data = read(path, format=format, nonfinite=nonfinite, **opts)
        with _attributed(MemoryBlocks(data, path=path), attributes) as reader:
            return reader.block(0, reader.n_samples)
    fmt = detect_format(path, format=format)
    nf = as_nonfinite(nonfinite)
    if fmt == "gct":
        _only(fmt, opts, {"sample_ids"})
        return read_gct(path, nonfinite=nf, **opts)
    if fmt == "gctx":
        _only(fmt, opts, {"gene_ids", "sample_ids", "sample_slice"})
        return read_gctx(path, nonfinite=nf, **opts)
    if fmt == "soft":
        _only(fmt, opts, {"platform"})
        return read_soft_platform(path, platform=opts.get("platform"), nonfinite=nf)
    if fmt == "series-matrix":
        _only(fmt, opts, set())
        return read_series_matrix(path, nonfinite=nf)
    if fmt in _TABLE_SEP:
        _only(fmt, opts, {"orientation", "sep"})
        return read_table(
            path, sep=opts.get("sep") or _TABLE_SEP[fmt], orientation=opts.get("orientation"),
            nonfinite=nf,
        )
    if fmt == "archs4":
        _only(fmt, opts, {"selection"})
        return read_archs4(path, selection=check_selection(opts.get("selection")))
    _only(fmt, opts, set())
    return read_h5ad(path, nonfinite=nf)


def _attributed(reader: BlockReader, attributes) -> BlockReader:
    """``reader`` with a sample attribute table joined (closes ``reader`` on failure)."""
    try:
        if isinstance(attributes, pd.DataFrame):
            table, where = attributes, "the sample attributes"
        else:
            table, where = read_sample_attributes(attributes), str(attributes)
        return AttributedBlocks(reader, table, source=where)
    except BaseException:
        reader.close()
        raise


def write(data: ExpressionData, path, *, format: str | None = None, **opts) -> None:
    """Write ``data`` in a format from ``format`` or the name (gct, gctx, tsv, csv, h5ad).

    Options: ``version`` (gct: ``"1.3"`` or ``"1.2"``), ``orientation`` and ``sep``
    (tsv/csv), ``chunk_samples`` / ``compression`` / ``compression_level`` (gctx),
    ``compression`` (h5ad). The file appears only when complete.
    """
    fmt = output_format(path, format=format)
    if fmt == "gct":
        _only(fmt, opts, {"version"})
        write_gct(data, path, **opts)
    elif fmt == "gctx":
        _only(fmt, opts, {"chunk_samples", "compression", "compression_level"})
        write_gctx(data, path, **opts)
    elif fmt in _TABLE_SEP:
        _only(fmt, opts, {"orientation", "sep"})
        write_table(
            data,
            path,
            sep=opts.get("sep") or _TABLE_SEP[fmt],
            orientation=opts.get("orientation") or "genes-in-rows",
        )
    else:
        _only(fmt, opts, {"compression"})
        write_h5ad(data, path, **opts)


def open_blocks(source, *, format: str | None = None,
                nonfinite: str | NonFinite | None = None, **opts) -> BlockReader:
    """Random access to the samples of a file (or of in-memory data), one block at a time.

    GCTX, h5ad and ARCHS4 files slice the on-disk matrix; GCT and TSV/CSV are parsed once
    into a spool (memory, or a temporary file when large); SOFT and series-matrix files are
    read whole. Use as a context manager: ``with open_blocks(path) as reader:
    reader.read(0, 100)``.

    Parameters
    ----------
    source
        A path, or an :class:`~geneinfer.expression.ExpressionData`.
    format, nonfinite, **opts
        As for :func:`read` (``selection`` for ARCHS4 files, ``sample_attributes`` for any;
        the reader's :attr:`~BlockReader.nonfinite` counts the values read as missing).
    """
    attributes = opts.pop("sample_attributes", None)
    reader = _open_reader(source, format=format, nonfinite=as_nonfinite(nonfinite), **opts)
    return reader if attributes is None else _attributed(reader, attributes)


def _open_reader(source, *, format: str | None, nonfinite: NonFinite, **opts) -> BlockReader:
    nf = nonfinite
    if isinstance(source, ExpressionData):
        _only("in-memory data", opts, set())
        return MemoryBlocks(source, nonfinite=nf)
    fmt = detect_format(source, format=format)
    if fmt == "gctx":
        _only(fmt, opts, set())
        return GCTXBlocks(source, nonfinite=nf)
    if fmt == "gct":
        _only(fmt, opts, set())
        return GCTBlocks(source, nonfinite=nf)
    if fmt in _TABLE_SEP:
        _only(fmt, opts, {"orientation", "sep"})
        return TableBlocks(source, sep=opts.get("sep") or _TABLE_SEP[fmt],
                           orientation=opts.get("orientation"), nonfinite=nf)
    if fmt == "h5ad":
        _only(fmt, opts, set())
        return H5adBlocks(source, nonfinite=nf)
    if fmt == "archs4":  # integer counts: nothing can be non-finite
        _only(fmt, opts, {"selection"})
        return Archs4Blocks(source, check_selection(opts.get("selection")))
    return MemoryBlocks(read(source, format=fmt, nonfinite=nf, **opts), path=source,
                        nonfinite=nf)


def iter_sample_blocks(
    path,
    *,
    block_size: int,
    genes: Sequence[str] | None = None,
    format: str | None = None,
    **opts,
) -> Iterator[ExpressionData]:
    """Yield the file's samples in consecutive blocks of at most ``block_size``
    (:func:`open_blocks`); ``genes`` restricts every block to those genes (in order)."""
    if block_size < 1:
        raise GeneinferError(f"block_size must be a positive number of samples, got {block_size}")
    with open_blocks(path, format=format, **opts) as reader:
        yield from reader.iter_blocks(block_size, genes=genes)


def peek(path, *, format: str | None = None, **opts) -> tuple[int, int, list[str]]:
    """Cheap header information: ``(n_samples, n_genes, gene_ids)`` without the values
    (for SOFT / series-matrix the file is parsed)."""
    fmt = detect_format(path, format=format)
    if fmt == "gctx":
        return peek_gctx(path)
    if fmt == "gct":
        return peek_gct(path)
    if fmt in _TABLE_SEP:
        return peek_table(
            path, sep=opts.get("sep") or _TABLE_SEP[fmt], orientation=opts.get("orientation")
        )
    if fmt == "h5ad":
        return peek_h5ad(path)
    if fmt == "archs4":
        return peek_archs4(path, selection=check_selection(opts.get("selection")))
    data = read(path, format=fmt, **opts)
    return data.n_samples, data.n_genes, list(data.gene_ids)
