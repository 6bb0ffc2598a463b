"""RNA-seq count transforms: log2 counts-per-million and transcripts-per-million.

Both accept a samples x genes array or :class:`~geneinfer.expression.ExpressionData` and return the
same kind. Library sizes are the per-sample sums of the observed (non-NaN) counts; NaN counts
stay NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import pandas as pd

from geneinfer.errors import GeneinferError
from geneinfer.expression import ExpressionData

T = TypeVar("T", np.ndarray, ExpressionData)


def _check_counts(values: np.ndarray, source: str | None, sample_ids: Sequence[str] | None) -> None:
    src = source or "the count matrix"
    if values.ndim != 2:
        raise GeneinferError(f"{src}: counts must be 2-D (samples x genes), got {values.ndim}-D")
    neg = np.argwhere(values < 0)
    if len(neg):
        i, j = neg[0]
        who = sample_ids[i] if sample_ids is not None else f"row {i}"
        raise GeneinferError(
            f"{src}: {len(neg)} negative counts, e.g. {values[i, j]:g} in sample {who} "
            f"(column {j}); expected non-negative counts"
        )


def _library_sizes(values: np.ndarray, source: str | None, sample_ids: Sequence[str] | None):
    lib = np.nansum(values, axis=1, dtype=np.float64)
    empty = np.flatnonzero(lib <= 0)
    if len(empty):
        who = [str(sample_ids[i]) if sample_ids is not None else f"row {i}" for i in empty[:5]]
        raise GeneinferError(
            f"{source or 'the count matrix'}: {len(empty)} samples have no counts "
            f"(library size 0): {', '.join(who)}; remove them before normalising"
        )
    return lib


def _unpack(counts: T) -> tuple[np.ndarray, str | None, Sequence[str] | None]:
    if isinstance(counts, ExpressionData):
        return counts.values, counts.source, list(counts.sample_ids)
    return np.asarray(counts, dtype=np.float64), None, None


def counts_to_cpm(values: np.ndarray, *, source: str | None = None,
                  sample_ids: Sequence[str] | None = None) -> np.ndarray:
    """Counts per million (float64), each sample divided by its total count."""
    values = np.asarray(values)
    _check_counts(values, source, sample_ids)
    lib = _library_sizes(values, source, sample_ids)
    cpm = values.astype(np.float64)  # one float64 copy, scaled in place (blocks are large)
    cpm *= (1e6 / lib)[:, None]
    return cpm


def counts_to_log2cpm(counts: T, *, prior_count: float = 1.0) -> T:
    """``log2(counts / library_size * 1e6 + prior_count)`` per sample.

    Parameters
    ----------
    counts
        Raw counts, samples x genes (array or ExpressionData with genes as columns).
    prior_count
        Added to CPM before the log so zero counts map to 0 (default 1).

    Returns
    -------
    Same type as ``counts``; an ExpressionData result has ``scale="log2"``.
    """
    values, source, ids = _unpack(counts)
    cpm = counts_to_cpm(values, source=source, sample_ids=ids)
    out = np.log2(cpm + prior_count).astype(np.float32)
    if isinstance(counts, ExpressionData):
        return counts.with_values(out, scale="log2")
    return out


def counts_to_tpm(counts: T, gene_lengths: np.ndarray | pd.Series | Sequence[float]) -> T:
    """Transcripts per million: length-normalised rates rescaled to sum to 1e6 per sample.

    Parameters
    ----------
    counts
        Raw counts, samples x genes.
    gene_lengths
        Effective lengths (bases) of the genes, in column order; a :class:`pandas.Series`
        indexed by gene id is aligned to an ExpressionData's ``gene_ids``.

    Returns
    -------
    TPM on the linear scale (same type as ``counts``; ExpressionData gets
    ``scale="linear"``). Apply :func:`~geneinfer.preprocess.to_log2` or ``log2(TPM + 1)``
    afterwards as needed.
    """
    values, source, ids = _unpack(counts)
    _check_counts(values, source, ids)
    src = source or "the count matrix"
    if isinstance(gene_lengths, pd.Series) and isinstance(counts, ExpressionData):
        absent = counts.gene_ids.difference(gene_lengths.index.astype(str))
        if len(absent):
            raise GeneinferError(
                f"{src}: no gene length for {len(absent)} genes, e.g. {', '.join(absent[:5])}"
            )
        gene_lengths = gene_lengths.set_axis(gene_lengths.index.astype(str)).loc[counts.gene_ids]
    lengths = np.asarray(gene_lengths, dtype=np.float64)
    if lengths.shape != (values.shape[1],):
        raise GeneinferError(
            f"{src}: {lengths.size} gene lengths for {values.shape[1]} genes (expected one each)"
        )
    bad = np.flatnonzero(~(lengths > 0))
    if len(bad):
        names = (
            counts.gene_ids[bad[:5]].tolist()
            if isinstance(counts, ExpressionData)
            else [f"column {b}" for b in bad[:5]]
        )
        raise GeneinferError(
            f"{src}: {len(bad)} genes have a non-positive or missing length: {', '.join(names)}"
        )
    rate = values.astype(np.float64) / lengths[None, :]
    total = _library_sizes(rate, source, ids)
    out = (rate / total[:, None] * 1e6).astype(np.float32)
    if isinstance(counts, ExpressionData):
        return counts.with_values(out, scale="linear")
    return out
