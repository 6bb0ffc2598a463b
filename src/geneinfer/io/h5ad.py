"""AnnData ``.h5ad`` files (optional extra ``geneinfer[anndata]``).

Samples are observations (``obs``), genes are variables (``var``); ``X`` is stored as
float32. geneinfer's own fields (``scale``, ``gene_id_kind``) live in ``uns["geneinfer"]``.
anndata is imported only when an ``.h5ad`` file is actually read or written.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import ModuleType

import h5py
import numpy as np
import pandas as pd

from geneinfer.errors import GeneinferError, InputFormatError
from geneinfer.expression import ExpressionData
from geneinfer.idkinds import GENE_ID_KINDS, detect_id_kind
from geneinfer.io._common import (
    PathLike,
    check_declared_size,
    check_readable,
    check_unique,
    translate_hdf5,
)
from geneinfer.io.blocks import BlockReader, finite_data
from geneinfer.io.cells import (
    MAX_ID_CHARS,
    NonFinite,
    as_nonfinite,
    check_id_length,
    check_writable_texts,
    check_writable_values,
)
from geneinfer.io.h5probe import probe
from geneinfer.scales import SCALES
from geneinfer.utils.files import atomic_path

UNS_KEY = "geneinfer"


def _anndata() -> ModuleType:
    try:
        import anndata
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise GeneinferError(
            "reading or writing .h5ad files needs the optional package anndata: "
            "pip install 'geneinfer[anndata]'"
        ) from exc
    return anndata


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """anndata's warnings (e.g. "Variable names are not unique") would print under our own
    precise errors; the readers check what they warn about."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Categorical / string columns (anndata stores strings as categoricals) -> object."""
    frame = frame.copy()
    for c in frame.columns:
        if (
            isinstance(frame[c].dtype, pd.CategoricalDtype)
            or frame[c].dtype.kind in "OUS"
            or str(frame[c].dtype).startswith("string")
        ):
            frame[c] = pd.Series(frame[c].astype(object).tolist(), index=frame.index, dtype=object)
    return frame


def _dense(x) -> np.ndarray:
    if hasattr(x, "toarray"):
        x = x.toarray()
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, which the reader checks
        return np.asarray(x, dtype=np.float32)


def _info(adata) -> tuple[str, str | None]:
    info = adata.uns.get(UNS_KEY, {}) if hasattr(adata.uns, "get") else {}
    scale = str(info.get("scale", "unknown"))
    kind = info.get("gene_id_kind")
    return (
        scale if scale in SCALES else "unknown",
        str(kind) if kind is not None and str(kind) in GENE_ID_KINDS else None,
    )


def _check_ids(path: PathLike, ids: Sequence[str], what: str, where: str) -> None:
    for ident in ids:
        if not ident.strip():
            raise InputFormatError(path, f"empty {what} id", where=where,
                                   expected=f"a non-empty id for every {what}")
        check_id_length(path, ident, what=what, where=where)


def _gene_part(path: PathLike, adata) -> tuple[pd.DataFrame, str, str]:
    """Gene metadata, scale and gene id kind (computed once per file)."""
    gene_ids = [str(v) for v in adata.var_names]
    check_unique(path, gene_ids, what="gene", where="var index")
    _check_ids(path, gene_ids, "gene", "var index")
    genes = _plain(adata.var)
    genes.index = pd.Index(gene_ids, dtype=object)
    scale, kind = _info(adata)
    if kind in (None, "unknown"):
        kind = detect_id_kind(gene_ids)
    return genes, scale, kind


def _to_data(
    path: PathLike, gene_part: tuple[pd.DataFrame, str, str], x: np.ndarray, obs: pd.DataFrame
) -> ExpressionData:
    genes, scale, kind = gene_part
    sample_ids = [str(v) for v in obs.index]
    check_unique(path, sample_ids, what="sample", where="obs index")
    _check_ids(path, sample_ids, "sample", "obs index")
    samples = _plain(obs)
    samples.index = pd.Index(sample_ids, dtype=object)
    return ExpressionData(
        values=x,
        gene_ids=genes.index,
        sample_ids=sample_ids,
        genes=genes,
        samples=samples,
        scale=scale,
        gene_id_kind=kind,
        source=str(path),
    )


_WHAT = "an AnnData .h5ad file (X, obs, var)"
_SPARSE = ("csr_matrix", "csc_matrix")
#: stored entries of a sparse X checked at a time (bounds the memory of the check)
_CHECK_ENTRIES = 1 << 22


def _check_layout(path: PathLike) -> None:
    """Fail fast (and without anndata's warnings or crashes) on HDF5 files that are not
    AnnData or whose ``X`` is damaged; anndata and scipy trust what they are given (an
    out-of-range sparse index can crash the process), so ``X`` is checked here first."""
    probe(path, what=_WHAT)
    try:
        f = h5py.File(path, "r")
    except Exception as exc:  # h5py raises many types for damaged files
        raise InputFormatError(
            path, f"not a readable HDF5 file ({(str(exc).splitlines() or [''])[0][:200]})",
            expected=_WHAT) from None
    with f, translate_hdf5(path, "/", what=_WHAT):
        absent = [k for k in ("obs", "var") if k not in f]
        if absent:
            raise InputFormatError(
                path,
                f"no /{absent[0]} group",
                where=f"/{absent[0]}",
                expected="an AnnData file (X, obs, var)",
            )
        if "X" not in f:
            raise InputFormatError(
                path, "has no X matrix", where="/X", expected="a samples x genes X"
            )
        for group in ("obs", "var"):
            _check_group_sizes(path, f[group], f"/{group}")
        with translate_hdf5(path, "/X", what=_WHAT):
            shape = _check_x(path, f["X"])
            expected = (_n_entries(path, f["obs"], "obs"), _n_entries(path, f["var"], "var"))
        if shape != expected:  # anndata's backed mode would read past a mismatch silently
            raise InputFormatError(path, f"X has shape {shape}", where="/X",
                                   expected=f"{expected} (the entries of obs and var)")


def _n_entries(path: PathLike, group, name: str) -> int:
    """Rows of ``obs`` / ``var``: the length of its index (old files: of its table)."""
    if isinstance(group, h5py.Dataset):
        return int(group.shape[0]) if group.ndim else 1
    key = group.attrs.get("_index", "_index")
    key = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
    index = group.get(key)
    if not isinstance(index, h5py.Dataset) or index.ndim != 1:
        raise InputFormatError(path, "has no index", where=f"/{name}",
                               expected="an AnnData file (X, obs, var)")
    return int(index.shape[0])


def _check_group_sizes(path: PathLike, group, where: str) -> None:
    """Every dataset of ``obs`` / ``var`` (index, columns, categories) fits its storage, so
    anndata never allocates by a declared size the file cannot back."""
    if isinstance(group, h5py.Dataset):
        check_declared_size(path, group, where)
        return
    if not isinstance(group, h5py.Group):
        raise InputFormatError(path, "not a group", where=where, expected=_WHAT)
    for name in group:
        with translate_hdf5(path, f"{where}/{name}", what=_WHAT):
            item = group[name]
        _check_group_sizes(path, item, f"{where}/{name}")


def _check_x(path: PathLike, x) -> tuple[int, int]:
    """A dense X is a 2-D numeric dataset; a sparse one passes :func:`_check_sparse`.
    Returns its shape."""
    if isinstance(x, h5py.Dataset):
        if x.ndim != 2 or x.dtype.kind not in "biuf":
            raise InputFormatError(path, f"X has shape {x.shape} and dtype {x.dtype}",
                                   where="/X", expected="a 2-D numeric matrix")
        check_declared_size(path, x, "/X")
        return int(x.shape[0]), int(x.shape[1])
    kind = x.attrs.get("encoding-type")
    kind = kind.decode("utf-8", "replace") if isinstance(kind, bytes) else str(kind)
    if kind not in _SPARSE:
        raise InputFormatError(path, f"X is a group of encoding {kind!r}", where="/X",
                               expected="a dense matrix or a csr_matrix / csc_matrix")
    return _check_sparse(path, x, kind)


def _sparse_part(path: PathLike, x, name: str, kinds: str) -> h5py.Dataset:
    ds = x.get(name)
    if not isinstance(ds, h5py.Dataset) or ds.ndim != 1 or ds.dtype.kind not in kinds:
        raise InputFormatError(path, "missing or not a 1-D array of the right type",
                               where=f"/X/{name}", expected="the AnnData sparse layout")
    check_declared_size(path, ds, f"/X/{name}")
    return ds


def _check_sparse(path: PathLike, x, kind: str) -> tuple[int, int]:
    """Shape, index pointers (start at 0, never decrease, end at the number of entries) and
    indices (in range, no repeats within a row or column), without loading them whole."""
    shape = np.asarray(x.attrs.get("shape", []))
    if shape.shape != (2,) or shape.dtype.kind not in "iu" or (shape < 0).any():
        raise InputFormatError(path, f"shape attribute {shape.tolist()}", where="/X",
                               expected="two non-negative integers")
    major, minor = (int(shape[0]), int(shape[1])) if kind == "csr_matrix" else \
        (int(shape[1]), int(shape[0]))
    data = _sparse_part(path, x, "data", "biuf")
    indices = _sparse_part(path, x, "indices", "iu")
    indptr = _sparse_part(path, x, "indptr", "iu")
    if indptr.shape[0] != major + 1:
        raise InputFormatError(path, f"{indptr.shape[0]} index pointers", where="/X/indptr",
                               expected=f"{major + 1} (one more than the {kind[:3]} rows)")
    ptr = np.asarray(indptr[()], dtype=np.int64)
    n = data.shape[0]
    if ptr[0] != 0 or (np.diff(ptr) < 0).any() or ptr[-1] != n or indices.shape[0] != n:
        raise InputFormatError(path, "index pointers do not start at 0, decrease, or do not "
                               f"end at the {n} stored values", where="/X/indptr",
                               expected="the compressed sparse layout")
    start = 0
    while start < major:
        stop = int(np.searchsorted(ptr, ptr[start] + _CHECK_ENTRIES, side="right")) - 1
        stop = max(stop, start + 1)
        _check_indices(path, indices, ptr, start, min(stop, major), minor)
        start = stop
    return int(shape[0]), int(shape[1])


def _check_indices(path: PathLike, indices: h5py.Dataset, ptr: np.ndarray, start: int,
                   stop: int, minor: int) -> None:
    idx = np.asarray(indices[ptr[start]:ptr[stop]], dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= minor):
        raise InputFormatError(path, f"an index outside 0..{minor - 1}", where="/X/indices",
                               expected="indices within the matrix")
    line = np.repeat(np.arange(stop - start, dtype=np.int64), np.diff(ptr[start:stop + 1]))
    key = line * max(minor, 1) + idx
    if (np.diff(key) <= 0).any() and (np.diff(np.sort(key)) == 0).any():
        raise InputFormatError(path, "an entry stored twice", where="/X/indices",
                               expected="at most one value per cell")


def read_h5ad(path: PathLike, *, nonfinite: str | NonFinite | None = None) -> ExpressionData:
    """Read an ``.h5ad`` file (obs = samples, var = genes, ``X`` -> float32).

    ``nonfinite``: ``"error"`` (default) or ``"missing"``, as for
    :func:`geneinfer.io.read_gctx`.
    """
    ad = _anndata()
    check_readable(path)
    _check_layout(path)
    with translate_hdf5(path, "/", what=_WHAT):
        with _quiet():
            adata = ad.read_h5ad(path)
        if adata.X is None:
            raise InputFormatError(
                path, "has no X matrix", where="/X", expected="a samples x genes X"
            )
        data = _to_data(path, _gene_part(path, adata), _dense(adata.X), adata.obs)
    return finite_data(data, nonfinite, where="/X")


class H5adBlocks(BlockReader):
    """Random access to an ``.h5ad`` file through anndata's backed (on-disk) mode."""

    values_where = "/X"

    def __init__(self, path: PathLike, *, nonfinite: str | NonFinite | None = None) -> None:
        ad = _anndata()
        check_readable(path)
        _check_layout(path)
        self.path = Path(path)
        self.source = str(path)
        self.nonfinite = as_nonfinite(nonfinite)
        with translate_hdf5(path, "/", what=_WHAT), _quiet():
            self._adata = ad.read_h5ad(path, backed="r")
        try:
            with translate_hdf5(path, "/", what=_WHAT):
                if self._adata.X is None:
                    raise InputFormatError(path, "has no X matrix", where="/X",
                                           expected="a samples x genes X")
                self.genes, self.scale, self.gene_id_kind = _gene_part(path, self._adata)
                self.gene_ids = self.genes.index
                self.n_samples = int(self._adata.n_obs)
                self._sample_ids = pd.Index([str(v) for v in self._adata.obs_names],
                                            dtype=object)
                check_unique(path, self._sample_ids, what="sample", where="obs index")
                _check_ids(path, self._sample_ids, "sample", "obs index")
        except BaseException:
            self.close()
            raise

    def read(self, start: int, stop: int, cols: np.ndarray | None = None) -> np.ndarray:
        with translate_hdf5(self.path, "/X", what=_WHAT):
            block = _dense(self._adata.X[start:stop])
        block = block if cols is None else block[:, cols]
        return self.finite(block, range(start, start + len(block)), cols)

    def sample_ids(self) -> pd.Index:
        return self._sample_ids

    def sample_columns(self) -> list[tuple[str, Callable[[], np.ndarray]]]:
        obs = self._adata.obs
        return [(str(c), (lambda c=c: _plain(obs[[c]])[c].to_numpy())) for c in obs.columns]

    def samples(self, start: int = 0, stop: int | None = None) -> pd.DataFrame:
        frame = _plain(self._adata.obs.iloc[start:stop])
        frame.index = self._sample_ids[start:stop]
        return frame

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._adata.file.close()


def peek_h5ad(path: PathLike) -> tuple[int, int, list[str]]:
    """``(n_samples, n_genes, gene_ids)`` without reading ``X``."""
    ad = _anndata()
    check_readable(path)
    _check_layout(path)
    with translate_hdf5(path, "/", what=_WHAT):
        with _quiet():
            adata = ad.read_h5ad(path, backed="r")
        try:
            return adata.n_obs, adata.n_vars, [str(v) for v in adata.var_names]
        finally:
            adata.file.close()


def write_h5ad(data: ExpressionData, path: PathLike, *, compression: str | None = None) -> None:
    """Write ``data`` as ``.h5ad`` (X float32; scale and id kind in ``uns["geneinfer"]``).

    Infinite values and ids longer than :data:`~geneinfer.io.cells.MAX_ID_CHARS` are refused
    (geneinfer would not read them back); a failing disk is one
    :class:`~geneinfer.utils.files.OutputError` line.
    """
    ad = _anndata()
    for ids, what in ((data.gene_ids, "gene id"), (data.sample_ids, "sample id")):
        check_writable_texts(list(ids), what=what, limit=MAX_ID_CHARS, control=False)
    check_writable_values(data.values, data.gene_ids, data.sample_ids)
    obs = data.samples.copy()
    var = data.genes.copy()
    obs.columns = [str(c) for c in obs.columns]
    var.columns = [str(c) for c in var.columns]
    adata = ad.AnnData(
        X=np.asarray(data.values, dtype=np.float32),
        obs=obs.set_axis(pd.Index(list(data.sample_ids), dtype=object), axis=0),
        var=var.set_axis(pd.Index(list(data.gene_ids), dtype=object), axis=0),
        uns={UNS_KEY: {"scale": data.scale, "gene_id_kind": data.gene_id_kind}},
    )
    with atomic_path(path, suffix=".h5ad") as tmp:
        try:
            adata.write_h5ad(tmp, compression=compression)
        except RuntimeError as exc:  # h5py's way of saying a write failed
            raise OSError(str(exc)) from None


def write_skeleton(
    f,
    *,
    var: pd.DataFrame,
    sample_ids: Sequence[str],
    sample_columns: Iterable[tuple[str, Callable[[], np.ndarray]]],
    uns: dict | None = None,
) -> None:
    """Write everything of an AnnData file but ``X`` into the open h5py file ``f``.

    Used for outputs whose matrix is written afterwards block by block
    (:mod:`geneinfer.io.preallocated`). Text sample metadata becomes categorical, which keeps
    a million repeated plate names small in memory and on disk.
    """
    from anndata.io import write_elem

    var = var.copy()
    var.index = pd.Index([str(i) for i in var.index], name="gene_id")
    obs = pd.DataFrame(index=pd.Index(np.asarray(sample_ids).astype(str), name="sample_id"))
    for name, get in sample_columns:
        values = np.asarray(get())
        if values.dtype.kind == "S":
            values = np.char.decode(values, "utf-8")
        obs[name] = pd.Categorical(values.astype(str)) if values.dtype.kind in "OUS" else values
    f.attrs["encoding-type"] = "anndata"
    f.attrs["encoding-version"] = "0.1.0"
    write_elem(f, "obs", obs)
    write_elem(f, "var", var)
    for key in ("obsm", "varm", "obsp", "varp", "layers"):
        write_elem(f, key, {})
    write_elem(f, "uns", uns or {})
