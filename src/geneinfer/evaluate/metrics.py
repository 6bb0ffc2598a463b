"""Per-gene accuracy metrics for inferred expression, as D-GEX reported them.

All functions take ``(n_samples, n_genes)`` matrices of truth ``Y`` and prediction ``P``.
Missing values (NaN in either) are skipped pairwise, per gene; a gene with too few observed
pairs (or no variance, for correlations) gets NaN, and averages over genes skip NaN genes.
D-GEX's headline number is :func:`mae` on standardized expression: the mean over target genes
of each gene's mean absolute error (0.3204 for the MLP vs 0.3784 for linear regression).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from geneinfer.errors import GeneinferError


def _check_scored(Y: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    Y, P = np.asarray(Y), np.asarray(P)
    if Y.shape != P.shape or Y.ndim != 2:
        raise GeneinferError(
            f"truth has shape {Y.shape} but predictions have {P.shape}; expected equal "
            "2-D (samples x genes) matrices"
        )
    return Y, P


def _pair(Y: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    Y, P = _check_scored(Y, P)
    Y, P = Y.astype(np.float64, copy=False), P.astype(np.float64, copy=False)
    both = np.isfinite(Y) & np.isfinite(P)
    return np.where(both, Y, np.nan), np.where(both, P, np.nan), both


def _nanmean0(A: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # genes with no pairs -> NaN
        return np.nanmean(A, axis=0)


def per_gene_mae(Y: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Mean absolute error of each gene over samples."""
    Y, P, _ = _pair(Y, P)
    return _nanmean0(np.abs(Y - P))


def per_gene_rmse(Y: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Root mean squared error of each gene over samples."""
    Y, P, _ = _pair(Y, P)
    return np.sqrt(_nanmean0((Y - P) ** 2))


def mae(Y: np.ndarray, P: np.ndarray) -> float:
    """D-GEX MAE: mean over genes of the per-gene MAE (use standardized values)."""
    return _mean_over_genes(per_gene_mae(Y, P))


def _centered_moments(Y: np.ndarray, P: np.ndarray, both: np.ndarray):
    n = both.sum(axis=0).astype(np.float64)
    my, mp = _nanmean0(Y), _nanmean0(P)
    dy, dp = Y - my, P - mp
    with np.errstate(invalid="ignore", divide="ignore"):
        syy = np.nansum(dy * dy, axis=0) / n
        spp = np.nansum(dp * dp, axis=0) / n
        syp = np.nansum(dy * dp, axis=0) / n
    return n, my, mp, syy, spp, syp


def per_gene_pearson(Y: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Pearson correlation of truth and prediction across samples, per gene.

    NaN for genes with fewer than 2 complete pairs or with a constant truth or prediction.
    """
    Y, P, both = _pair(Y, P)
    n, _, _, syy, spp, syp = _centered_moments(Y, P, both)
    return _pearson_from_moments(n, syy, spp, syp)


def _pearson_from_moments(n: np.ndarray, syy: np.ndarray, spp: np.ndarray, syp: np.ndarray
                          ) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        r = syp / np.sqrt(syy * spp)
    bad = (n < 2) | ~(syy > 0) | ~(spp > 0)
    return np.where(bad, np.nan, np.clip(r, -1.0, 1.0))


def per_gene_ccc(Y: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Lin's concordance correlation per gene: ``2 cov / (var_y + var_p + (mean_y - mean_p)^2)``.

    Population (1/n) moments. Unlike Pearson's r it drops when predictions are offset or
    scaled, which is what cross-platform use breaks.
    """
    Y, P, both = _pair(Y, P)
    return _ccc_from_moments(*_centered_moments(Y, P, both))


def _ccc_from_moments(n: np.ndarray, my: np.ndarray, mp: np.ndarray, syy: np.ndarray,
                      spp: np.ndarray, syp: np.ndarray) -> np.ndarray:
    denom = syy + spp + (my - mp) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        ccc = 2.0 * syp / denom
    return np.where((n < 2) | ~(denom > 0), np.nan, ccc)


#: genes scored together: the float64 temporaries of a score are ``rows x`` this many
#: values (a held-out set of 10,000 compendium profiles x 10,000 genes would otherwise
#: take several GB per temporary)
SCORE_COLUMNS = 512


def _column_blocks(n_genes: int) -> list[slice]:
    return [slice(j, min(n_genes, j + SCORE_COLUMNS)) for j in range(0, n_genes, SCORE_COLUMNS)]


def _block_scores(Y: np.ndarray, P: np.ndarray) -> pd.DataFrame:
    """Every score of a block of genes from one pairing and one set of moments."""
    Y, P, both = _pair(Y, P)
    moments = _centered_moments(Y, P, both)
    n, _, _, syy, spp, syp = moments
    err = Y - P
    return pd.DataFrame({
        "mae": _nanmean0(np.abs(err)),
        "rmse": np.sqrt(_nanmean0(err * err)),
        "r": _pearson_from_moments(n, syy, spp, syp),
        "ccc": _ccc_from_moments(*moments),
        "n": both.sum(axis=0),
    })


def gene_scores(Y: np.ndarray, P: np.ndarray) -> pd.DataFrame:
    """Every per-gene score at once: ``mae``, ``rmse``, ``r`` (Pearson), ``ccc`` (Lin) and
    ``n`` (complete pairs), one row per gene (column of ``Y``); the values of
    :func:`per_gene_mae`, :func:`per_gene_rmse`, :func:`per_gene_pearson` and
    :func:`per_gene_ccc`.

    The one per-gene scoring used by training summaries, the study, the demo and the report.
    Genes are scored :data:`SCORE_COLUMNS` at a time, so memory beyond the inputs stays
    small whatever the number of samples.
    """
    Y, P = _check_scored(Y, P)
    blocks = _column_blocks(Y.shape[1])
    if not blocks:
        return _block_scores(Y, P)
    return pd.concat([_block_scores(Y[:, cols], P[:, cols]) for cols in blocks],
                     ignore_index=True)


def grouped_gene_scores(Y: np.ndarray, P: np.ndarray,
                        groups: Sequence[object] | np.ndarray) -> pd.DataFrame:
    """Per-gene scores of predictions for several studies at once: ``r`` is the mean over
    studies of the correlation *within* each study (what a gene gets on a new study, study
    offsets aside); ``mae``/``rmse`` are over all rows; ``n_groups`` counts the studies
    where the gene's r is defined. One group gives :func:`gene_scores`' values."""
    labels = np.asarray(groups)
    Y, P = np.asarray(Y), np.asarray(P)
    if labels.shape != (Y.shape[0],) or P.shape != Y.shape or Y.ndim != 2:
        raise GeneinferError(
            f"grouped_gene_scores: {labels.size} group labels, truth {Y.shape}, predictions "
            f"{P.shape} (expected one label per row and equal shapes)"
        )
    pooled = gene_scores(Y, P)
    rows = [labels == g for g in np.unique(labels)]
    per_group = np.full((len(rows), Y.shape[1]), np.nan)
    for cols in _column_blocks(Y.shape[1]):
        for i, m in enumerate(rows):
            per_group[i, cols] = per_gene_pearson(Y[m, cols], P[m, cols])
    counted = np.isfinite(per_group).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(np.isfinite(per_group), per_group, 0.0).sum(axis=0) / counted
    return pd.DataFrame({"mae": pooled["mae"], "rmse": pooled["rmse"],
                         "r": np.where(counted > 0, r, np.nan), "n": pooled["n"],
                         "n_groups": counted})


def share_better(err_model: np.ndarray, err_baseline: np.ndarray) -> float:
    """Share of genes where the model's error is strictly below the baseline's.

    Genes where either error is NaN are left out; NaN if none is left.
    """
    a = np.asarray(err_model, dtype=np.float64)
    b = np.asarray(err_baseline, dtype=np.float64)
    if a.shape != b.shape:
        raise GeneinferError(f"per-gene errors have shapes {a.shape} and {b.shape}; expected equal")
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.mean(a[ok] < b[ok])) if ok.any() else float("nan")


def within_study_zscore(Y: np.ndarray, groups: Sequence[object] | np.ndarray) -> np.ndarray:
    """Z-score each group's samples with the group's own per-gene mean and std.

    D-GEX evaluated GTEx and 1000 Genomes predictions this way, removing platform offsets.
    Population std; a gene constant within a group becomes 0 there. NaN stays NaN.
    """
    Y = np.asarray(Y, dtype=np.float64)
    g = np.asarray(groups)
    if Y.ndim != 2 or g.shape != (Y.shape[0],):
        raise GeneinferError(
            f"within_study_zscore: {g.size} group labels for {Y.shape[0] if Y.ndim else 0} "
            "samples (expected one per sample row)"
        )
    out = np.empty_like(Y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for label in np.unique(g):
            rows = g == label
            mu = np.nanmean(Y[rows], axis=0)
            sd = np.nanstd(Y[rows], axis=0)
            out[rows] = (Y[rows] - mu) / np.where(sd > 0, sd, 1.0)
    return out


def _mean_over_genes(v: np.ndarray) -> float:
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def _median_over_genes(v: np.ndarray) -> float:
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else float("nan")


def summarize(
    Y_true: np.ndarray, Y_pred: np.ndarray, *, baseline: np.ndarray | None = None
) -> dict[str, Any]:
    """Headline metrics of one prediction.

    Parameters
    ----------
    Y_true, Y_pred
        Truth and prediction (samples x genes), standardized scale for D-GEX-comparable MAE.
    baseline
        Optional baseline predictions (e.g. per-gene OLS) of the same shape; adds its MAE and
        the share of genes whose MAE the model beats.

    Returns
    -------
    dict with ``mae``, ``rmse`` (mean per-gene), ``mean_r``, ``median_r``, ``mean_ccc``,
    ``median_ccc``, ``n_genes``, ``n_samples`` and, with a baseline, ``baseline_mae`` and
    ``share_better``.
    """
    g_mae = per_gene_mae(Y_true, Y_pred)
    r = per_gene_pearson(Y_true, Y_pred)
    ccc = per_gene_ccc(Y_true, Y_pred)
    out: dict[str, Any] = {
        "mae": _mean_over_genes(g_mae),
        "rmse": _mean_over_genes(per_gene_rmse(Y_true, Y_pred)),
        "mean_r": _mean_over_genes(r),
        "median_r": _median_over_genes(r),
        "mean_ccc": _mean_over_genes(ccc),
        "median_ccc": _median_over_genes(ccc),
        "n_genes": int(np.shape(Y_true)[1]),
        "n_samples": int(np.shape(Y_true)[0]),
    }
    if baseline is not None:
        b_mae = per_gene_mae(Y_true, baseline)
        out["baseline_mae"] = _mean_over_genes(b_mae)
        out["share_better"] = share_better(g_mae, b_mae)
    return out
