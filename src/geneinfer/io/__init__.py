"""Reading and writing expression files.

Formats: ``gct`` (1.2/1.3, plain or .gz), ``gctx`` (CMap HDF5), ``soft`` (GEO family file,
read only), ``series-matrix`` (GEO, read only), ``tsv`` / ``csv`` (delimited tables) and
``h5ad`` (AnnData, optional extra). The format comes from ``format=``, else the file name
(``.gz`` allowed), else the content.

>>> data = read("profiles.gct.gz")                      # doctest: +SKIP
>>> write(data, "profiles.gctx")                        # doctest: +SKIP
>>> for block in iter_sample_blocks("big.gctx", block_size=10_000):  # doctest: +SKIP
...     ...

Every reader raises :class:`~geneinfer.errors.InputFormatError` (file, line or dataset,
what was expected) on malformed input; missing values stay NaN. Writers are atomic.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from geneinfer.errors import GeneinferError
from geneinfer.expression import ExpressionData
from geneinfer.io._common import NA_TOKENS
from geneinfer.io.detect import FORMATS, WRITABLE, detect_format, output_format
from geneinfer.io.gct import iter_gct_blocks, peek_gct, read_gct, write_gct
from geneinfer.io.gctx import GCTXWriter, iter_gctx_blocks, peek_gctx, read_gctx, write_gctx
from geneinfer.io.soft import read_series_matrix, read_soft, read_soft_platform, soft_platforms
from geneinfer.io.table import iter_table_blocks, peek_table, read_table, write_table

__all__ = [
    "FORMATS",
    "NA_TOKENS",
    "WRITABLE",
    "GCTXWriter",
    "detect_format",
    "iter_sample_blocks",
    "peek",
    "read",
    "read_gct",
    "read_gctx",
    "read_series_matrix",
    "read_soft",
    "read_table",
    "soft_platforms",
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


def read(path, *, format: str | None = None, **opts) -> ExpressionData:
    """Read an expression file of any supported format as samples x genes.

    Parameters
    ----------
    path
        The file.
    format
        One of :data:`FORMATS`; default: from the name, else the content.
    **opts
        Format options: ``platform`` (SOFT with several platforms: required),
        ``orientation`` and ``sep`` (tsv/csv), ``gene_ids`` / ``sample_ids`` /
        ``sample_slice`` (gctx subsets), ``sample_ids`` (gct).
    """
    fmt = detect_format(path, format=format)
    if fmt == "gct":
        _only(fmt, opts, {"sample_ids"})
        return read_gct(path, **opts)
    if fmt == "gctx":
        _only(fmt, opts, {"gene_ids", "sample_ids", "sample_slice"})
        return read_gctx(path, **opts)
    if fmt == "soft":
        _only(fmt, opts, {"platform"})
        return read_soft_platform(path, platform=opts.get("platform"))
    if fmt == "series-matrix":
        _only(fmt, opts, set())
        return read_series_matrix(path)
    if fmt in _TABLE_SEP:
        _only(fmt, opts, {"orientation", "sep"})
        return read_table(
            path, sep=opts.get("sep") or _TABLE_SEP[fmt], orientation=opts.get("orientation")
        )
    _only(fmt, opts, set())
    from geneinfer.io.h5ad import read_h5ad

    return read_h5ad(path)


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
        from geneinfer.io.h5ad import write_h5ad

        write_h5ad(data, path, **opts)


def iter_sample_blocks(
    path,
    *,
    block_size: int,
    genes: Sequence[str] | None = None,
    format: str | None = None,
    **opts,
) -> Iterator[ExpressionData]:
    """Yield the file's samples in consecutive blocks of at most ``block_size``.

    GCTX uses HDF5 slicing and h5ad anndata's backed mode (memory ~ one block); text
    formats are read incrementally (genes-in-rows files: one parse per block, see
    :func:`iter_gct_blocks`). ``genes`` restricts every block to those genes (in order).
    SOFT / series-matrix files are small enough to be read whole and then split.
    """
    if block_size < 1:
        raise GeneinferError(f"block_size must be positive, got {block_size}")
    fmt = detect_format(path, format=format)
    if fmt == "gctx":
        yield from iter_gctx_blocks(path, block_size=block_size, genes=genes)
    elif fmt == "gct":
        yield from iter_gct_blocks(path, block_size=block_size, genes=genes)
    elif fmt in _TABLE_SEP:
        yield from iter_table_blocks(
            path,
            block_size=block_size,
            genes=genes,
            sep=opts.get("sep") or _TABLE_SEP[fmt],
            orientation=opts.get("orientation"),
        )
    elif fmt == "h5ad":
        from geneinfer.io.h5ad import iter_h5ad_blocks

        yield from iter_h5ad_blocks(path, block_size=block_size, genes=genes)
    else:
        data = read(path, format=fmt, **opts)
        if genes is not None:
            data = data.select_genes(list(genes))
        for start in range(0, data.n_samples, block_size):
            yield data.select_samples(slice(start, start + block_size))


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
        from geneinfer.io.h5ad import peek_h5ad

        return peek_h5ad(path)
    data = read(path, format=fmt, **opts)
    return data.n_samples, data.n_genes, list(data.gene_ids)
