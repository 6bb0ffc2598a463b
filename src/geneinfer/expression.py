"""The expression container used everywhere in geneinfer.

:class:`ExpressionData` holds a samples x genes float32 matrix with gene ids, sample ids,
per-gene and per-sample metadata tables, and the value scale. Every reader returns one and
every writer takes one; models receive its ``values`` (plain numpy arrays).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from geneinfer.errors import GeneinferError, MissingGenesError
from geneinfer.idkinds import GENE_ID_KINDS
from geneinfer.scales import SCALES


def _as_str_index(ids: Iterable[object], name: str) -> pd.Index:
    return pd.Index([str(i) for i in ids], name=name, dtype=object)


@dataclass(eq=False)
class ExpressionData:
    """A samples x genes expression matrix with identities and metadata.

    Parameters
    ----------
    values
        ``(n_samples, n_genes)`` matrix; stored as float32. NaN marks a missing value
        (never silently replaced).
    gene_ids, sample_ids
        Unique string identifiers for the columns and rows of ``values``.
    genes
        Per-gene metadata (index = gene ids), e.g. ``symbol``, ``entrez``, ``ensembl``.
    samples
        Per-sample metadata (index = sample ids), e.g. ``dataset``, ``label``, ``platform``.
    scale
        ``"log2"``, ``"linear"`` (e.g. MAS5), ``"counts"`` (RNA-seq), ``"zscore"`` or ``"unknown"``.
    gene_id_kind
        What the gene ids are: ``"probe"``, ``"entrez"``, ``"ensembl"``, ``"symbol"``
        or ``"unknown"``.
    source
        Where the data came from (a path or accession), used in messages.
    """

    values: np.ndarray
    gene_ids: pd.Index
    sample_ids: pd.Index
    genes: pd.DataFrame = field(default_factory=pd.DataFrame)
    samples: pd.DataFrame = field(default_factory=pd.DataFrame)
    scale: str = "unknown"
    gene_id_kind: str = "unknown"
    source: str | None = None

    def __post_init__(self) -> None:
        values = np.asarray(self.values)
        if values.ndim != 2:
            raise GeneinferError(
                f"expression values must be 2-D (samples x genes), got {values.ndim}-D"
            )
        if values.dtype != np.float32:
            values = values.astype(np.float32)
        self.values = values
        self.gene_ids = _as_str_index(self.gene_ids, "gene_id")
        self.sample_ids = _as_str_index(self.sample_ids, "sample_id")
        n_samples, n_genes = values.shape
        where = f" in {self.source}" if self.source else ""
        if len(self.gene_ids) != n_genes:
            raise GeneinferError(
                f"{len(self.gene_ids)} gene ids for {n_genes} matrix columns{where}"
            )
        if len(self.sample_ids) != n_samples:
            raise GeneinferError(
                f"{len(self.sample_ids)} sample ids for {n_samples} matrix rows{where}"
            )
        for ids, what in ((self.gene_ids, "gene"), (self.sample_ids, "sample")):
            if not ids.is_unique:
                dup = ids[ids.duplicated()].unique()[:5].tolist()
                raise GeneinferError(f"duplicate {what} ids{where}: {', '.join(dup)}")
        self.genes = self._aligned_meta(self.genes, self.gene_ids, "gene")
        self.samples = self._aligned_meta(self.samples, self.sample_ids, "sample")
        if self.scale not in SCALES:
            raise GeneinferError(f"unknown scale {self.scale!r}; expected one of {SCALES}")
        if self.gene_id_kind not in GENE_ID_KINDS:
            raise GeneinferError(
                f"unknown gene id kind {self.gene_id_kind!r}; expected one of {GENE_ID_KINDS}"
            )

    @staticmethod
    def _aligned_meta(meta: pd.DataFrame | None, ids: pd.Index, what: str) -> pd.DataFrame:
        if meta is None or (meta.shape[1] == 0 and len(meta) == 0):
            return pd.DataFrame(index=ids.copy())
        meta = meta.copy()
        meta.index = _as_str_index(meta.index, ids.name)
        if len(meta) != len(ids) or not meta.index.equals(ids):
            missing = ids.difference(meta.index)
            if len(missing):
                raise GeneinferError(
                    f"{what} metadata lacks {len(missing)} ids, e.g. {', '.join(missing[:5])}"
                )
            meta = meta.loc[ids]
        return meta

    # ------------------------------------------------------------------ basic properties
    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape  # type: ignore[return-value]

    @property
    def n_samples(self) -> int:
        return self.values.shape[0]

    @property
    def n_genes(self) -> int:
        return self.values.shape[1]

    def n_missing(self) -> int:
        """Number of missing (NaN) values."""
        return int(np.isnan(self.values).sum())

    def gene_symbols(self) -> pd.Series:
        """Gene symbols where known (column ``symbol`` of :attr:`genes`), else the id."""
        if "symbol" in self.genes:
            return self.genes["symbol"].fillna(pd.Series(self.gene_ids, index=self.gene_ids))
        return pd.Series(self.gene_ids, index=self.gene_ids, name="symbol")

    def __repr__(self) -> str:
        src = f", source={self.source!r}" if self.source else ""
        return (
            f"ExpressionData({self.n_samples} samples x {self.n_genes} genes, "
            f"scale={self.scale!r}, gene_id_kind={self.gene_id_kind!r}{src})"
        )

    # ------------------------------------------------------------------ subsets
    def replace(self, **changes: object) -> ExpressionData:
        """A copy with some fields changed (values, ids, metadata, scale, id kind, source);
        the result is checked like a new container."""
        kwargs = {
            "values": self.values,
            "gene_ids": self.gene_ids,
            "sample_ids": self.sample_ids,
            "genes": self.genes,
            "samples": self.samples,
            "scale": self.scale,
            "gene_id_kind": self.gene_id_kind,
            "source": self.source,
        }
        kwargs.update(changes)
        return ExpressionData(**kwargs)  # type: ignore[arg-type]

    def with_values(self, values: np.ndarray, *, scale: str | None = None) -> ExpressionData:
        """Same ids and metadata, new values of the same shape."""
        if values.shape != self.values.shape:
            raise GeneinferError(f"new values have shape {values.shape}, expected {self.shape}")
        return self.replace(values=values, scale=scale or self.scale)

    def select_genes(
        self,
        gene_ids: Sequence[str] | pd.Index,
        *,
        missing: Literal["error", "drop", "nan"] = "error",
        what: str = "genes",
    ) -> ExpressionData:
        """Columns for ``gene_ids``, in that order.

        Parameters
        ----------
        missing
            What to do with ids that are not present: ``"error"`` raises
            :class:`~geneinfer.errors.MissingGenesError` listing them, ``"drop"`` leaves them
            out (see :meth:`missing_genes` to report them), ``"nan"`` adds all-NaN columns.
        """
        wanted = _as_str_index(gene_ids, "gene_id")
        pos = self.gene_ids.get_indexer(wanted)
        absent = wanted[pos < 0]
        if len(absent) and missing == "error":
            raise MissingGenesError(list(absent), what=what, source=self.source)
        if missing == "drop" or not len(absent):
            keep = pos >= 0
            idx = pos[keep]
            return self.replace(
                values=self.values[:, idx],
                gene_ids=wanted[keep],
                genes=self.genes.iloc[idx].set_axis(wanted[keep], axis=0),
            )
        values = np.full((self.n_samples, len(wanted)), np.nan, dtype=np.float32)
        present = pos >= 0
        values[:, present] = self.values[:, pos[present]]
        genes = self.genes.reindex(wanted)
        return self.replace(values=values, gene_ids=wanted, genes=genes)

    def missing_genes(self, gene_ids: Iterable[str]) -> list[str]:
        """The ids among ``gene_ids`` that this data does not have."""
        wanted = _as_str_index(gene_ids, "gene_id")
        return list(wanted[self.gene_ids.get_indexer(wanted) < 0])

    def select_samples(self, which: Sequence[str] | np.ndarray | slice) -> ExpressionData:
        """Rows by sample ids, boolean mask, integer positions or a slice (a view for slices)."""
        if isinstance(which, slice):
            idx: np.ndarray | slice = which
        else:
            arr = np.asarray(which)
            if arr.dtype == bool:
                if arr.shape != (self.n_samples,):
                    raise GeneinferError(
                        f"sample mask has length {arr.shape}, expected {self.n_samples}"
                    )
                idx = np.flatnonzero(arr)
            elif np.issubdtype(arr.dtype, np.integer):
                idx = arr
            else:
                wanted = _as_str_index(arr, "sample_id")
                idx = self.sample_ids.get_indexer(wanted)
                if (idx < 0).any():
                    absent = list(wanted[idx < 0][:10])
                    raise GeneinferError(f"unknown sample ids: {', '.join(absent)}")
        return self.replace(
            values=self.values[idx],
            sample_ids=self.sample_ids[idx],
            samples=self.samples.iloc[idx],
        )

    def copy(self) -> ExpressionData:
        return self.replace(
            values=self.values.copy(), genes=self.genes.copy(), samples=self.samples.copy()
        )

    # ------------------------------------------------------------------ conversions
    def to_frame(self) -> pd.DataFrame:
        """Samples x genes :class:`pandas.DataFrame` of the values."""
        return pd.DataFrame(self.values, index=self.sample_ids, columns=self.gene_ids)

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        *,
        genes_in_rows: bool = False,
        **kwargs: object,
    ) -> ExpressionData:
        """Build from a DataFrame (samples x genes, or genes x samples with ``genes_in_rows``)."""
        if genes_in_rows:
            frame = frame.T
        return cls(
            values=frame.to_numpy(dtype=np.float32),
            gene_ids=frame.columns,
            sample_ids=frame.index,
            **kwargs,  # type: ignore[arg-type]
        )

    @staticmethod
    def concat_samples(
        parts: Sequence[ExpressionData], *, join: Literal["inner", "outer", "exact"] = "exact"
    ) -> ExpressionData:
        """Stack samples of several datasets.

        ``join="exact"`` requires identical gene ids; ``"inner"`` keeps genes shared by all;
        ``"outer"`` keeps every gene and fills absent ones with NaN. Sample metadata columns
        are unioned. The result's scale is the common scale, else ``"unknown"``.
        """
        if not parts:
            raise GeneinferError("nothing to concatenate")
        first = parts[0]
        if join == "exact":
            for p in parts[1:]:
                if not p.gene_ids.equals(first.gene_ids):
                    raise GeneinferError(
                        f"gene ids differ between {first.source} and {p.source}; "
                        "use join='inner' or 'outer'"
                    )
            genes_idx = first.gene_ids
        elif join == "inner":
            genes_idx = first.gene_ids
            for p in parts[1:]:
                genes_idx = genes_idx[genes_idx.isin(p.gene_ids)]
        else:
            genes_idx = first.gene_ids
            for p in parts[1:]:
                genes_idx = genes_idx.append(p.gene_ids[~p.gene_ids.isin(genes_idx)])
        aligned = [p.select_genes(genes_idx, missing="nan") for p in parts]
        values = np.concatenate([p.values for p in aligned], axis=0)
        samples = pd.concat([p.samples for p in aligned], axis=0)
        gene_meta = pd.concat([p.genes for p in aligned], axis=0)
        gene_meta = gene_meta[~gene_meta.index.duplicated(keep="first")].reindex(genes_idx)
        scales = {p.scale for p in parts}
        kinds = {p.gene_id_kind for p in parts}
        return ExpressionData(
            values=values,
            gene_ids=genes_idx,
            sample_ids=samples.index,
            genes=gene_meta,
            samples=samples,
            scale=scales.pop() if len(scales) == 1 else "unknown",
            gene_id_kind=kinds.pop() if len(kinds) == 1 else "unknown",
            source=", ".join(str(p.source) for p in parts if p.source) or None,
        )
