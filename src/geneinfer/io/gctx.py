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
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from geneinfer.errors import GeneinferError, InputFormatError
from geneinfer.expression import ExpressionData
from geneinfer.idkinds import detect_id_kind
from geneinfer.io._common import (
    PathLike,
    add_derived_gene_columns,
    check_declared_size,
    check_readable,
    check_unique,
    samples_with_scale,
    strip_derived_gene_columns,
    translate_hdf5,
)
from geneinfer.io.blocks import BlockReader
from geneinfer.io.cells import (
    MAX_ID_CHARS,
    NonFinite,
    as_nonfinite,
    check_id_length,
    check_writable_texts,
    check_writable_values,
)
from geneinfer.io.h5probe import probe
from geneinfer.scales import stated_scale
from geneinfer.utils.files import OutputError, atomic_path, os_reason

MATRIX = "0/DATA/0/matrix"
ROW_META = "0/META/ROW"
COL_META = "0/META/COL"
GCTX_VERSION = b"GCTX1.0"
_META_COMPRESSION = {"compression": "gzip", "compression_opts": 6}


# --------------------------------------------------------------------------- reading
_WHAT = "a GCTX (HDF5) file in the CMap layout"


def _open(path: PathLike) -> h5py.File:
    check_readable(path)
    probe(path, what=_WHAT)
    try:
        return h5py.File(path, "r")
    except Exception as exc:  # h5py raises many types for damaged files
        raise InputFormatError(
            path,
            f"not a readable HDF5 file ({(str(exc).splitlines() or [type(exc).__name__])[0]})",
            expected="a complete GCTX (HDF5) file",
        ) from None


def _dataset(path: PathLike, f: h5py.File, name: str) -> h5py.Dataset:
    with translate_hdf5(path, f"/{name}", what=_WHAT):
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
    where = f"/{group}/id"
    ds = _dataset(path, f, f"{group}/id")
    with translate_hdf5(path, where, what=_WHAT):
        if ds.ndim != 1:
            raise InputFormatError(path, f"ids have shape {ds.shape}", where=where,
                                   expected="a 1-D dataset")
        check_declared_size(path, ds, where)
        ids = _texts(ds[()])
    check_unique(path, ids, what=what, where=where)
    for k, ident in enumerate(ids):
        if not ident.strip():
            raise InputFormatError(path, f"empty {what} id at position {k}", where=where,
                                   expected=f"a non-empty id for every {what}")
        check_id_length(path, ident, what=what, where=where)
    return ids


def _meta_column(path: PathLike, ds: h5py.Dataset, n: int, where: str) -> np.ndarray:
    """One metadata column, text as Python strings (object dtype), numbers as they are."""
    with translate_hdf5(path, where, what=_WHAT):
        if ds.shape != (n,):
            raise InputFormatError(path, f"metadata has shape {ds.shape}", where=where,
                                   expected=f"({n},)")
        check_declared_size(path, ds, where)
        values = ds[()]
        if values.dtype.kind in "SOU":
            return np.asarray(_texts(values), dtype=object)
        if values.dtype.kind not in "biuf":
            raise InputFormatError(path, f"metadata has dtype {values.dtype}", where=where,
                                   expected="numbers or text")
        return values


def _meta_names(path: PathLike, f: h5py.File, group: str) -> list[str]:
    with translate_hdf5(path, f"/{group}", what=_WHAT):
        grp = f.get(group)
        if not isinstance(grp, h5py.Group):
            return []
        return [name for name, ds in grp.items()
                if name != "id" and isinstance(ds, h5py.Dataset)]


def _check_matrix(path: PathLike, ds: h5py.Dataset, n_samples: int, n_genes: int) -> None:
    with translate_hdf5(path, f"/{MATRIX}", what=_WHAT):
        _check_matrix_shape(path, ds, n_samples, n_genes)
        check_declared_size(path, ds, f"/{MATRIX}")


def _check_matrix_shape(path: PathLike, ds: h5py.Dataset, n_samples: int, n_genes: int
                        ) -> None:
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
    if cols is not None and not (len(cols) == block.shape[1]
                                 and np.array_equal(cols, np.arange(block.shape[1]))):
        block = block[:, cols]
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, which the reader checks
        return np.asarray(block, dtype=np.float32)


class GCTXBlocks(BlockReader):
    """Random access to a CMap GCTX file: h5py slices of ``/0/DATA/0/matrix``.

    Gene ids and metadata are read once; sample metadata columns are read when asked for.
    """

    values_where = f"/{MATRIX}"

    def __init__(self, path: PathLike, *, nonfinite: str | NonFinite | None = None) -> None:
        self.path = Path(path)
        self.source = str(path)
        self.nonfinite = as_nonfinite(nonfinite)
        self._file = _open(path)
        try:
            with translate_hdf5(path, "/", what=_WHAT):
                self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        f, path = self._file, self.path
        gene_ids = _ids(path, f, ROW_META, "gene")
        self._sample_ids = pd.Index(_ids(path, f, COL_META, "sample"), dtype=object)
        self.matrix = _dataset(path, f, MATRIX)
        _check_matrix(path, self.matrix, len(self._sample_ids), len(gene_ids))
        self.n_samples = len(self._sample_ids)
        self.gene_ids = pd.Index(gene_ids, dtype=object)
        n = len(gene_ids)
        meta = {name: _meta_column(path, _dataset(path, f, f"{ROW_META}/{name}"), n,
                                   f"/{ROW_META}/{name}")
                for name in _meta_names(path, f, ROW_META)}
        self.genes = add_derived_gene_columns(pd.DataFrame(meta, index=self.gene_ids))
        self.gene_id_kind = detect_id_kind(self.gene_ids)
        self._col_names = _meta_names(path, f, COL_META)
        self.scale = self._stated_scale()

    def _column(self, name: str) -> np.ndarray:
        where = f"{COL_META}/{name}"
        return _meta_column(self.path, _dataset(self.path, self._file, where), self.n_samples,
                            f"/{where}")

    def _stated_scale(self) -> str:
        if "values" not in self._col_names:
            return "unknown"
        return stated_scale(list(dict.fromkeys(map(str, self._column("values")))))

    def read(self, start: int, stop: int, cols: np.ndarray | None = None) -> np.ndarray:
        with translate_hdf5(self.path, self.values_where, what=_WHAT):
            block = _read_rows(self.matrix, slice(start, stop), cols)
        return self.finite(block, range(start, start + len(block)), cols)

    def read_rows(self, rows: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
        """Values of samples at positions ``rows`` (any order, repeats allowed)."""
        rows = np.asarray(rows, dtype=np.int64)
        with translate_hdf5(self.path, self.values_where, what=_WHAT):
            block = _read_rows(self.matrix, rows, cols)
        return self.finite(block, rows, cols)

    def sample_ids(self) -> pd.Index:
        return self._sample_ids

    def sample_columns(self) -> list[tuple[str, Callable[[], np.ndarray]]]:
        return [(name, (lambda n=name: self._column(n))) for name in self._col_names]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._file.close()


def read_gctx(
    path: PathLike,
    *,
    gene_ids: Sequence[str] | None = None,
    sample_ids: Sequence[str] | None = None,
    sample_slice: slice | None = None,
    nonfinite: str | NonFinite | None = None,
) -> ExpressionData:
    """Read a GCTX file, or only some of its genes/samples, without loading the rest.

    Parameters
    ----------
    gene_ids
        Genes to read, in this order (missing ones raise
        :class:`~geneinfer.errors.MissingGenesError`).
    sample_ids, sample_slice
        Samples to read by id (in this order) or by position range; at most one of them.
    nonfinite
        ``"error"`` (default) refuses infinite values (and numbers beyond float32) naming the
        sample and gene; ``"missing"`` reads them as NaN (see
        :class:`~geneinfer.io.cells.NonFinite`).
    """
    if sample_ids is not None and sample_slice is not None:
        raise GeneinferError("give sample_ids or sample_slice, not both")
    with GCTXBlocks(path, nonfinite=nonfinite) as reader:
        if sample_ids is None:
            start, stop, _ = (sample_slice or slice(None)).indices(reader.n_samples)
            return reader.block(start, stop, genes=gene_ids)
        rows = reader.sample_ids().get_indexer(pd.Index([str(s) for s in sample_ids]))
        if (rows < 0).any():
            absent = [str(s) for s, r in zip(sample_ids, rows) if r < 0]
            raise InputFormatError(path, f"unknown sample ids: {', '.join(absent[:5])}",
                                   where=f"/{COL_META}/id")
        return reader.take(rows, genes=gene_ids)


def peek_gctx(path: PathLike) -> tuple[int, int, list[str]]:
    """``(n_samples, n_genes, gene_ids)`` from the ids only (the matrix is not read)."""
    with _open(path) as f, translate_hdf5(path, "/", what=_WHAT):
        g_ids = _ids(path, f, ROW_META, "gene")
        s_ids = _ids(path, f, COL_META, "sample")
        _check_matrix(path, _dataset(path, f, MATRIX), len(s_ids), len(g_ids))
        return len(s_ids), len(g_ids), g_ids


# --------------------------------------------------------------------------- writing
def _fixed_bytes(texts: Sequence[str]) -> np.ndarray:
    enc = [str(t).encode("utf-8") for t in texts]
    width = max([1, *(len(e) for e in enc)])
    return np.array(enc, dtype=f"S{width}")


def meta_array(values: object) -> np.ndarray:
    """A metadata column as stored in GCTX: integers and booleans as int64, floats as
    float64 (as CMap stores them), anything else as fixed-length UTF-8 bytes (missing ->
    ``na``)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        return arr.astype(np.float64)
    if arr.dtype.kind == "S":
        return arr
    texts = [
        "na"
        if (v is None or (isinstance(v, float) and np.isnan(v)))
        else (v.decode("utf-8") if isinstance(v, bytes) else str(v))
        for v in arr.tolist()
    ]
    return _fixed_bytes(texts)


MetaColumns = Iterable[tuple[str, object]]


def write_meta_group(group: h5py.Group, ids: Sequence[str], columns: MetaColumns) -> None:
    """Write ``id`` and metadata datasets (CMap layout: chunked, gzip).

    ``columns`` are ``(name, values)`` pairs; ``values`` may be a callable returning the
    column, so that millions of samples' metadata is converted one column at a time.
    """
    n = len(ids)
    chunk = (max(1, min(n, 1 << 16)),) if n else None
    group.create_dataset("id", data=_fixed_bytes(ids), chunks=chunk, **_META_COMPRESSION)
    for name, values in columns:
        if str(name) == "id":
            raise GeneinferError("a metadata column may not be called 'id' in GCTX")
        data = meta_array(values() if callable(values) else values)
        group.create_dataset(str(name), data=data, chunks=chunk, **_META_COMPRESSION)


def frame_columns(meta: pd.DataFrame) -> list[tuple[str, object]]:
    """``(name, values)`` pairs of a metadata table, for :func:`write_meta_group`."""
    return [(str(c), meta[c].to_numpy()) for c in meta.columns]


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
        check_writable_texts(self.gene_ids, what="gene id", limit=MAX_ID_CHARS, control=False)
        self.n_samples = int(n_samples)
        self._written = np.zeros(self.n_samples, dtype=bool)
        self._has_col_meta = False
        self._done = False
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        try:
            self._create(genes=genes, dtype=dtype, chunk_samples=chunk_samples,
                         compression=compression, compression_level=compression_level,
                         shuffle=shuffle)
        except BaseException as exc:
            self.abort()
            self._raise_output_error(exc)
            raise

    def _raise_output_error(self, exc: BaseException) -> None:
        """h5py's errors of a failing disk (read-only, full, size limit) as one line."""
        if isinstance(exc, (OSError, RuntimeError)):
            raise OutputError(f"cannot write {self.path}: {os_reason(exc)}") from None

    def _create(self, *, genes: pd.DataFrame | None, dtype: object,
                chunk_samples: int | None, compression: str | None, compression_level: int,
                shuffle: bool) -> None:
        """The file, its (unwritten) matrix and the gene metadata."""
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
        write_meta_group(self._file.create_group(ROW_META, track_order=True),
                         self.gene_ids, frame_columns(meta))

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
        try:
            self._matrix[start : start + k] = values.astype(self._matrix.dtype, copy=False)
        except BaseException as exc:
            self.abort()
            self._raise_output_error(exc)
            raise
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
        check_writable_texts(ids, what="sample id", limit=MAX_ID_CHARS, control=False)
        meta = pd.DataFrame(index=pd.Index(ids)) if samples is None else samples
        try:
            write_meta_group(self._file.create_group(COL_META, track_order=True), ids,
                             frame_columns(meta.reindex(pd.Index(ids))))
        except BaseException as exc:
            self.abort()
            self._raise_output_error(exc)
            raise
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
        try:
            self._file.close()
        except BaseException as exc:
            self.abort()
            self._raise_output_error(exc)
            raise
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
    """Write ``data`` as a CMap-layout GCTX file (atomic; chunked and compressed).

    Infinite values are refused (geneinfer would not read them back); NaN is written as is.
    """
    check_writable_values(data.values, data.gene_ids, data.sample_ids)
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
