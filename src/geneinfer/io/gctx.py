"""GCTX (HDF5) files in the CMap layout, on h5py.

Layout, as written by CMap's software (checked against ``test_l1000_highprecision.gctx``)::

    /                       attrs: version = b"GCTX1.0" (fixed-length bytes), src = file name
    /0/DATA/0/matrix        float32, shape (n_samples, n_genes)   # samples x genes
    /0/META/ROW/id          fixed-length bytes (|S..), one per gene
    /0/META/ROW/<field>     gene metadata: int64, float64 or fixed-length bytes
    /0/META/COL/id          fixed-length bytes, one per sample
    /0/META/COL/<field>     sample metadata

CMap stores metadata datasets gzip-compressed and chunked; we do the same and also chunk
and compress the matrix by blocks of whole samples so sample blocks read fast.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from geneinfer.errors import GeneinferError, InputFormatError, MissingGenesError
from geneinfer.expression import ExpressionData
from geneinfer.idkinds import detect_id_kind
from geneinfer.io._common import (
    PathLike,
    add_derived_gene_columns,
    check_readable,
    check_unique,
    samples_with_scale,
    strip_derived_gene_columns,
    translate_errors,
)
from geneinfer.scales import stated_scale
from geneinfer.utils.files import atomic_path

MATRIX = "0/DATA/0/matrix"
ROW_META = "0/META/ROW"
COL_META = "0/META/COL"
GCTX_VERSION = b"GCTX1.0"
_META_COMPRESSION = {"compression": "gzip", "compression_opts": 6}


# --------------------------------------------------------------------------- reading
def _open(path: PathLike) -> h5py.File:
    check_readable(path)
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise InputFormatError(
            path,
            f"not a readable HDF5 file ({str(exc).splitlines()[0]})",
            expected="a complete GCTX (HDF5) file",
        ) from exc


def _dataset(path: PathLike, f: h5py.File, name: str) -> h5py.Dataset:
    obj = f.get(name)
    if not isinstance(obj, h5py.Dataset):
        raise InputFormatError(
            path,
            "missing dataset",
            where=f"/{name}",
            expected="the CMap GCTX layout (/0/DATA/0/matrix, /0/META/...)",
        )
    return obj


def _texts(arr: np.ndarray) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in arr.tolist()]


def _ids(path: PathLike, f: h5py.File, group: str, what: str) -> list[str]:
    ds = _dataset(path, f, f"{group}/id")
    if ds.ndim != 1:
        raise InputFormatError(
            path, f"ids have shape {ds.shape}", where=f"/{group}/id", expected="a 1-D dataset"
        )
    ids = _texts(ds[()])
    check_unique(path, ids, what=what, where=f"/{group}/id")
    return ids


def _meta(path: PathLike, f: h5py.File, group: str, n: int, sel: np.ndarray | slice) -> dict:
    out: dict[str, object] = {}
    grp = f.get(group)
    if grp is None:
        return out
    for name, ds in grp.items():
        if name == "id" or not isinstance(ds, h5py.Dataset):
            continue
        if ds.shape != (n,):
            raise InputFormatError(
                path, f"metadata has shape {ds.shape}", where=f"/{group}/{name}", expected=f"({n},)"
            )
        vals = ds[()][sel]
        out[name] = np.asarray(_texts(vals), dtype=object) if vals.dtype.kind in "SOU" else vals
    return out


def _frame(meta: dict, index: pd.Index) -> pd.DataFrame:
    return pd.DataFrame(
        {k: np.asarray(v) if not isinstance(v, list) else v for k, v in meta.items()}, index=index
    )


def _positions(
    path: PathLike, ids: list[str], wanted: Sequence[str] | None, what: str
) -> np.ndarray | None:
    if wanted is None:
        return None
    pos = pd.Index(ids).get_indexer(pd.Index([str(w) for w in wanted]))
    if (pos < 0).any():
        absent = [str(w) for w, p in zip(wanted, pos) if p < 0]
        if what == "genes":
            raise MissingGenesError(absent, what="genes", source=str(path))
        raise InputFormatError(
            path, f"unknown sample ids: {', '.join(absent[:5])}", where=f"/{COL_META}/id"
        )
    return pos


def _check_matrix(path: PathLike, ds: h5py.Dataset, n_samples: int, n_genes: int) -> None:
    if ds.ndim != 2 or ds.shape != (n_samples, n_genes):
        raise InputFormatError(
            path,
            f"matrix has shape {ds.shape}",
            where=f"/{MATRIX}",
            expected=f"({n_samples}, {n_genes}) = (samples in /{COL_META}/id, "
            f"genes in /{ROW_META}/id)",
        )
    if ds.dtype.kind not in "fiu":
        raise InputFormatError(
            path, f"matrix has dtype {ds.dtype}", where=f"/{MATRIX}", expected="numbers (float32)"
        )


def _read_rows(ds: h5py.Dataset, rows: np.ndarray | slice, cols: np.ndarray | None) -> np.ndarray:
    """Read samples ``rows`` (a slice or positions) and genes ``cols`` as float32."""
    if isinstance(rows, slice):
        block = ds[rows]
    else:
        order = np.argsort(rows, kind="stable")
        srt = rows[order]
        uniq, inverse = np.unique(srt, return_inverse=True)
        block = ds[uniq.tolist(), :] if len(uniq) else np.empty((0, ds.shape[1]), ds.dtype)
        block = block[inverse][np.argsort(order, kind="stable")]
    if cols is not None:
        block = block[:, cols]
    return np.asarray(block, dtype=np.float32)


def _scale(samples: pd.DataFrame) -> str:
    """The scale the ``values`` column metadata states (unknown without it)."""
    return stated_scale(samples["values"].tolist()) if "values" in samples else "unknown"


class _FileMeta:
    """Ids and metadata of an open GCTX file, read once and sliced per request."""

    def __init__(self, path: PathLike, f: h5py.File) -> None:
        self.path, self.f = path, f
        self.gene_ids = _ids(path, f, ROW_META, "gene")
        self.sample_ids = _ids(path, f, COL_META, "sample")
        self.matrix = _dataset(path, f, MATRIX)
        _check_matrix(path, self.matrix, len(self.sample_ids), len(self.gene_ids))
        self.row_meta = _meta(path, f, ROW_META, len(self.gene_ids), slice(None))
        self.col_meta = _meta(path, f, COL_META, len(self.sample_ids), slice(None))
        self._genes_cache: dict[object, tuple[pd.Index, pd.DataFrame, str]] = {}

    def _genes(self, cols: np.ndarray | None) -> tuple[pd.Index, pd.DataFrame, str]:
        key = None if cols is None else cols.tobytes()
        if key not in self._genes_cache:
            gsel: np.ndarray | slice = cols if cols is not None else slice(None)
            g_index = pd.Index(np.asarray(self.gene_ids, dtype=object)[gsel], dtype=object)
            meta = {k: _take(v, gsel) for k, v in self.row_meta.items()}
            genes = add_derived_gene_columns(_frame(meta, g_index))
            self._genes_cache[key] = (g_index, genes, detect_id_kind(g_index))
        return self._genes_cache[key]

    def build(self, rows: np.ndarray | slice, cols: np.ndarray | None) -> ExpressionData:
        values = _read_rows(self.matrix, rows, cols)
        g_index, genes, kind = self._genes(cols)
        s_index = pd.Index(np.asarray(self.sample_ids, dtype=object)[rows], dtype=object)
        samples = _frame({k: _take(v, rows) for k, v in self.col_meta.items()}, s_index)
        return ExpressionData(
            values=values,
            gene_ids=g_index,
            sample_ids=s_index,
            genes=genes,
            samples=samples,
            scale=_scale(samples),
            gene_id_kind=kind,
            source=str(self.path),
        )


def _take(values: np.ndarray, sel: np.ndarray | slice) -> np.ndarray:
    return values[sel]


def read_gctx(
    path: PathLike,
    *,
    gene_ids: Sequence[str] | None = None,
    sample_ids: Sequence[str] | None = None,
    sample_slice: slice | None = None,
) -> ExpressionData:
    """Read a GCTX file, or only some of its genes/samples, without loading the rest.

    Parameters
    ----------
    gene_ids
        Genes to read, in this order (missing ones raise
        :class:`~geneinfer.errors.MissingGenesError`).
    sample_ids, sample_slice
        Samples to read by id (in this order) or by position range; at most one of them.
    """
    if sample_ids is not None and sample_slice is not None:
        raise GeneinferError("give sample_ids or sample_slice, not both")
    with translate_errors(path, what="GCTX (HDF5) file"), _open(path) as f:
        fm = _FileMeta(path, f)
        cols = _positions(path, fm.gene_ids, gene_ids, "genes")
        rows: np.ndarray | slice
        if sample_slice is not None:
            rows = slice(*sample_slice.indices(len(fm.sample_ids)))
        else:
            pos = _positions(path, fm.sample_ids, sample_ids, "samples")
            rows = slice(None) if pos is None else pos
        return fm.build(rows, cols)


def iter_gctx_blocks(
    path: PathLike, *, block_size: int, genes: Sequence[str] | None = None
) -> Iterator[ExpressionData]:
    """Yield consecutive blocks of ``block_size`` samples (optionally only ``genes``)."""
    with translate_errors(path, what="GCTX (HDF5) file"), _open(path) as f:
        fm = _FileMeta(path, f)
        cols = _positions(path, fm.gene_ids, genes, "genes")
        for start in range(0, len(fm.sample_ids), max(1, block_size)):
            yield fm.build(slice(start, start + block_size), cols)


def peek_gctx(path: PathLike) -> tuple[int, int, list[str]]:
    """``(n_samples, n_genes, gene_ids)`` from the ids only (the matrix is not read)."""
    with translate_errors(path, what="GCTX (HDF5) file"), _open(path) as f:
        g_ids = _ids(path, f, ROW_META, "gene")
        s_ids = _ids(path, f, COL_META, "sample")
        _check_matrix(path, _dataset(path, f, MATRIX), len(s_ids), len(g_ids))
        return len(s_ids), len(g_ids), g_ids


# --------------------------------------------------------------------------- writing
def _fixed_bytes(texts: Sequence[str]) -> np.ndarray:
    enc = [str(t).encode("utf-8") for t in texts]
    width = max([1, *(len(e) for e in enc)])
    return np.array(enc, dtype=f"S{width}")


def _meta_array(col: pd.Series) -> np.ndarray:
    """int64 / float64 columns stay numeric (as CMap stores them); anything else -> bytes."""
    kind = col.dtype.kind
    if kind in "iu":
        return col.to_numpy(dtype=np.int64)
    if kind == "f":
        return col.to_numpy(dtype=np.float64)
    if kind == "b":
        return col.to_numpy(dtype=np.int64)
    texts = [
        "na"
        if (v is None or (isinstance(v, float) and np.isnan(v)))
        else (v.decode("utf-8") if isinstance(v, bytes) else str(v))
        for v in col.tolist()
    ]
    return _fixed_bytes(texts)


def _write_meta(group: h5py.Group, ids: Sequence[str], meta: pd.DataFrame) -> None:
    n = len(ids)
    chunk = (max(1, min(n, 1 << 16)),) if n else None
    group.create_dataset("id", data=_fixed_bytes(ids), chunks=chunk, **_META_COMPRESSION)
    for name in meta.columns:
        if str(name) == "id":
            raise GeneinferError("a metadata column may not be called 'id' in GCTX")
        group.create_dataset(
            str(name), data=_meta_array(meta[name]), chunks=chunk, **_META_COMPRESSION
        )


def default_chunk_samples(n_genes: int, *, target_bytes: int = 1 << 20) -> int:
    """Samples per HDF5 chunk so that a chunk of whole sample rows is about 1 MiB."""
    return max(1, target_bytes // max(1, 4 * n_genes))


class GCTXWriter:
    """Write a GCTX file block by block (for results too large to hold in memory).

    The file is built under a temporary name and renamed to ``path`` only by
    :meth:`close` once every sample has been written and sample ids are set; on
    :meth:`abort` or an exception inside ``with`` nothing is left behind.

    Parameters
    ----------
    path
        Output ``.gctx`` file.
    gene_ids
        Gene (matrix column) ids; written at once with ``genes`` metadata.
    genes
        Optional gene metadata indexed by ``gene_ids``.
    n_samples
        Total number of samples (matrix rows) that will be written.
    dtype
        Matrix dtype (CMap uses float32).
    chunk_samples
        Samples per HDF5 chunk (default: about 1 MiB of whole rows).
    compression, compression_level, shuffle
        HDF5 filters of the matrix (gzip + byte shuffle by default, readable by any
        HDF5 tool incl. CMap's).

    Attributes
    ----------
    chunk_samples
        Samples per HDF5 chunk actually used; blocks of whole chunks write fastest.

    Examples
    --------
    >>> with GCTXWriter("out.gctx", gene_ids=genes, n_samples=n) as w:  # doctest: +SKIP
    ...     for start, block in blocks:
    ...         w.write_block(start, block)        # (k, n_genes) values
    ...     w.write_sample_meta(sample_ids, samples_df)
    """

    def __init__(
        self,
        path: PathLike,
        *,
        gene_ids: Sequence[str],
        genes: pd.DataFrame | None = None,
        n_samples: int,
        dtype: np.dtype | type = np.float32,
        chunk_samples: int | None = None,
        compression: str | None = "gzip",
        compression_level: int = 4,
        shuffle: bool = True,
    ) -> None:
        self.path = Path(path)
        self.gene_ids = [str(g) for g in gene_ids]
        if len(set(self.gene_ids)) != len(self.gene_ids):
            raise GeneinferError(f"duplicate gene ids given for {path}")
        self.n_samples = int(n_samples)
        self._written = np.zeros(self.n_samples, dtype=bool)
        self._has_col_meta = False
        self._done = False
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        try:
            self._file = h5py.File(self._tmp, "w")
            self._file.attrs["version"] = np.bytes_(GCTX_VERSION)
            self._file.attrs["src"] = self.path.name
            n_genes = len(self.gene_ids)
            chunk = chunk_samples or default_chunk_samples(n_genes)
            self.chunk_samples = max(1, min(chunk, self.n_samples))
            chunks = (self.chunk_samples, max(1, n_genes))
            opts = {}
            if compression and self.n_samples and n_genes:
                opts = {
                    "compression": compression,
                    "compression_opts": compression_level,
                    "shuffle": shuffle,
                }
            self._matrix = self._file.create_dataset(
                MATRIX,
                shape=(self.n_samples, n_genes),
                dtype=dtype,
                chunks=chunks if self.n_samples and n_genes else None,
                fillvalue=np.nan,
                **opts,
            )
            meta = pd.DataFrame(index=pd.Index(self.gene_ids)) if genes is None else genes
            meta = strip_derived_gene_columns(meta.reindex(pd.Index(self.gene_ids)))
            _write_meta(self._file.create_group(ROW_META, track_order=True), self.gene_ids, meta)
        except BaseException:
            self.abort()
            raise

    def write_block(self, start: int, values: np.ndarray) -> None:
        """Write samples ``start .. start + len(values)`` (values: ``(k, n_genes)``)."""
        values = np.asarray(values)
        k = values.shape[0] if values.ndim == 2 else -1
        if values.ndim != 2 or values.shape[1] != len(self.gene_ids):
            raise GeneinferError(
                f"block has shape {values.shape}, expected (k, {len(self.gene_ids)})"
            )
        if start < 0 or start + k > self.n_samples:
            raise GeneinferError(
                f"block {start}..{start + k} outside the {self.n_samples} samples of {self.path}"
            )
        self._matrix[start : start + k] = values.astype(self._matrix.dtype, copy=False)
        self._written[start : start + k] = True

    def write_sample_meta(
        self, sample_ids: Sequence[str], samples: pd.DataFrame | None = None
    ) -> None:
        """Set the sample ids (and metadata columns) of all ``n_samples`` samples, once."""
        ids = [str(s) for s in sample_ids]
        if len(ids) != self.n_samples:
            raise GeneinferError(f"{len(ids)} sample ids for {self.n_samples} samples")
        if len(set(ids)) != len(ids):
            raise GeneinferError(f"duplicate sample ids given for {self.path}")
        if self._has_col_meta:
            raise GeneinferError("sample metadata already written")
        meta = pd.DataFrame(index=pd.Index(ids)) if samples is None else samples
        _write_meta(
            self._file.create_group(COL_META, track_order=True), ids, meta.reindex(pd.Index(ids))
        )
        self._has_col_meta = True

    @property
    def complete(self) -> bool:
        """True once every sample has been written."""
        return bool(self._written.all())

    def close(self) -> None:
        """Finish the file and move it to ``path``; raises if samples or ids are missing."""
        if not self._has_col_meta:
            self.abort()
            raise GeneinferError(f"{self.path}: sample ids were never written")
        if not self.complete:
            missing = int((~self._written).sum())
            self.abort()
            raise GeneinferError(f"{self.path}: {missing} samples were never written")
        self._file.close()
        self._done = True
        self._atomic.__exit__(None, None, None)

    def abort(self) -> None:
        """Discard the partial file."""
        if self._done:
            return
        self._done = True
        with contextlib.suppress(Exception):
            self._file.close()
        with contextlib.suppress(_Abort):
            self._atomic.__exit__(_Abort, _Abort(), None)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)

    def __enter__(self) -> GCTXWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class _Abort(Exception):
    pass


def write_gctx(
    data: ExpressionData,
    path: PathLike,
    *,
    chunk_samples: int | None = None,
    compression: str | None = "gzip",
    compression_level: int = 4,
    block_size: int = 8192,
) -> None:
    """Write ``data`` as a CMap-layout GCTX file (atomic; chunked and compressed)."""
    with GCTXWriter(
        path,
        gene_ids=list(data.gene_ids),
        genes=data.genes,
        n_samples=data.n_samples,
        chunk_samples=chunk_samples,
        compression=compression,
        compression_level=compression_level,
    ) as w:
        # blocks of whole chunks: no chunk is compressed twice
        chunk = w.chunk_samples
        step = max(chunk, block_size // chunk * chunk)
        for start in range(0, data.n_samples, step):
            w.write_block(start, data.values[start : start + step])
        w.write_sample_meta(list(data.sample_ids), samples_with_scale(data.samples, data.scale))
