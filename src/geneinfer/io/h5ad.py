"""AnnData ``.h5ad`` files (optional extra ``geneinfer[anndata]``).

Samples are observations (``obs``), genes are variables (``var``); ``X`` is stored as
float32. geneinfer's own fields (``scale``, ``gene_id_kind``) live in ``uns["geneinfer"]``.
anndata is imported only when an ``.h5ad`` file is actually read or written.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from types import ModuleType

import numpy as np
import pandas as pd

from geneinfer.errors import GeneinferError, InputFormatError
from geneinfer.expression import ExpressionData
from geneinfer.idkinds import GENE_ID_KINDS, detect_id_kind
from geneinfer.io._common import (
    PathLike,
    check_readable,
    check_unique,
    translate_errors,
)
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
    return np.asarray(x, dtype=np.float32)


def _info(adata) -> tuple[str, str | None]:
    info = adata.uns.get(UNS_KEY, {}) if hasattr(adata.uns, "get") else {}
    scale = str(info.get("scale", "unknown"))
    kind = info.get("gene_id_kind")
    return (
        scale if scale in SCALES else "unknown",
        str(kind) if kind is not None and str(kind) in GENE_ID_KINDS else None,
    )


def _gene_part(path: PathLike, adata) -> tuple[pd.DataFrame, str, str]:
    """Gene metadata, scale and gene id kind (computed once per file)."""
    gene_ids = [str(v) for v in adata.var_names]
    check_unique(path, gene_ids, what="gene", where="var index")
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


def _check_layout(path: PathLike) -> None:
    """Fail fast (and without anndata's warnings) on HDF5 files that are not AnnData."""
    import h5py

    with translate_errors(path, what="AnnData .h5ad file"), h5py.File(path, "r") as f:
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


def read_h5ad(path: PathLike) -> ExpressionData:
    """Read an ``.h5ad`` file (obs = samples, var = genes, ``X`` -> float32)."""
    ad = _anndata()
    check_readable(path)
    with translate_errors(path, what="AnnData .h5ad file"):
        _check_layout(path)
        adata = ad.read_h5ad(path)
        if adata.X is None:
            raise InputFormatError(
                path, "has no X matrix", where="/X", expected="a samples x genes X"
            )
        return _to_data(path, _gene_part(path, adata), _dense(adata.X), adata.obs)


def iter_h5ad_blocks(
    path: PathLike, *, block_size: int, genes: Sequence[str] | None = None
) -> Iterator[ExpressionData]:
    """Yield blocks of ``block_size`` samples using anndata's backed (on-disk) mode."""
    ad = _anndata()
    check_readable(path)
    _check_layout(path)
    with translate_errors(path, what="AnnData .h5ad file"):
        adata = ad.read_h5ad(path, backed="r")
        gene_part = _gene_part(path, adata)
    try:
        if adata.X is None:
            raise InputFormatError(
                path, "has no X matrix", where="/X", expected="a samples x genes X"
            )
        for start in range(0, adata.n_obs, max(1, block_size)):
            stop = min(start + block_size, adata.n_obs)
            with translate_errors(path, what="AnnData .h5ad file"):
                block = _to_data(
                    path, gene_part, _dense(adata.X[start:stop]), adata.obs.iloc[start:stop]
                )
            yield block if genes is None else block.select_genes(list(genes))
    finally:
        adata.file.close()


def peek_h5ad(path: PathLike) -> tuple[int, int, list[str]]:
    """``(n_samples, n_genes, gene_ids)`` without reading ``X``."""
    ad = _anndata()
    check_readable(path)
    _check_layout(path)
    with translate_errors(path, what="AnnData .h5ad file"):
        adata = ad.read_h5ad(path, backed="r")
        try:
            return adata.n_obs, adata.n_vars, [str(v) for v in adata.var_names]
        finally:
            adata.file.close()


def write_h5ad(data: ExpressionData, path: PathLike, *, compression: str | None = None) -> None:
    """Write ``data`` as ``.h5ad`` (X float32; scale and id kind in ``uns["geneinfer"]``)."""
    ad = _anndata()
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
        adata.write_h5ad(tmp, compression=compression)
