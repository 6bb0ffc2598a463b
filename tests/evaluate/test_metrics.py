"""Per-gene metrics checked against scipy / numpy / sklearn, gene by gene."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, zscore
from sklearn.metrics import mean_absolute_error, mean_squared_error

from geneinfer.errors import GeneinferError
from geneinfer.evaluate import (
    mae,
    per_gene_ccc,
    per_gene_mae,
    per_gene_pearson,
    per_gene_rmse,
    share_better,
    summarize,
    within_study_zscore,
)


@pytest.fixture
def data(rng):
    """Correlated truth / prediction (samples x genes) with gene-specific quality."""
    n, g = 60, 200
    Y = rng.normal(size=(n, g)) * rng.uniform(0.5, 2, g) + rng.normal(0, 3, g)
    P = Y * rng.uniform(0.2, 1.2, g) + rng.normal(size=(n, g)) + rng.normal(0, 0.5, g)
    return Y, P


def ccc_reference(y, p):
    cov = np.mean((y - y.mean()) * (p - p.mean()))
    return 2 * cov / (y.var() + p.var() + (y.mean() - p.mean()) ** 2)


def test_against_library_functions(data):
    Y, P = data
    np.testing.assert_allclose(
        per_gene_mae(Y, P), mean_absolute_error(Y, P, multioutput="raw_values"), rtol=1e-12
    )
    np.testing.assert_allclose(
        per_gene_rmse(Y, P),
        np.sqrt(mean_squared_error(Y, P, multioutput="raw_values")),
        rtol=1e-12,
    )
    r = [pearsonr(Y[:, j], P[:, j])[0] for j in range(Y.shape[1])]
    np.testing.assert_allclose(per_gene_pearson(Y, P), r, rtol=1e-10)
    ccc = [ccc_reference(Y[:, j], P[:, j]) for j in range(Y.shape[1])]
    np.testing.assert_allclose(per_gene_ccc(Y, P), ccc, rtol=1e-10)
    assert mae(Y, P) == pytest.approx(np.mean(np.abs(Y - P)))  # complete data: equal


def test_missing_values_use_complete_pairs(data, rng):
    Y, P = data[0].copy(), data[1].copy()
    Y[rng.random(Y.shape) < 0.1] = np.nan
    P[rng.random(P.shape) < 0.05] = np.nan
    Y[:, 3] = np.nan  # a gene never measured
    r, m, c = per_gene_pearson(Y, P), per_gene_mae(Y, P), per_gene_ccc(Y, P)
    for j in range(Y.shape[1]):
        ok = ~np.isnan(Y[:, j]) & ~np.isnan(P[:, j])
        if not ok.any():
            assert np.isnan(r[j]) and np.isnan(m[j]) and np.isnan(c[j])
            continue
        y, p = Y[ok, j], P[ok, j]
        assert r[j] == pytest.approx(pearsonr(y, p)[0], rel=1e-10)
        assert m[j] == pytest.approx(np.mean(np.abs(y - p)), rel=1e-12)
        assert c[j] == pytest.approx(ccc_reference(y, p), rel=1e-10)
    # D-GEX MAE: mean over genes of per-gene MAE (differs from the pooled mean with NaN)
    assert mae(Y, P) == pytest.approx(np.nanmean(m))
    assert np.isfinite(summarize(Y, P)["mean_r"])


def test_constant_gene_has_no_correlation(data):
    Y, P = data[0].copy(), data[1].copy()
    P[:, 0] = 1.0
    Y[:, 1] = 2.0
    r = per_gene_pearson(Y, P)
    assert np.isnan(r[0]) and np.isnan(r[1]) and np.isfinite(r[2:]).all()
    assert np.isfinite(per_gene_ccc(Y, P)[0])  # CCC is defined (and low) for a constant guess
    P2 = Y.copy()
    np.testing.assert_allclose(per_gene_ccc(Y, P2)[2:], 1.0)


def test_share_better_and_summary(data, rng):
    Y, P = data
    baseline = Y + rng.normal(size=Y.shape) * 2.5
    e_model, e_base = per_gene_mae(Y, P), per_gene_mae(Y, baseline)
    expected = np.mean(e_model < e_base)
    assert share_better(e_model, e_base) == pytest.approx(expected)
    e_base[:10] = np.nan
    assert share_better(e_model, e_base) == pytest.approx(np.mean(e_model[10:] < e_base[10:]))
    assert share_better(e_model, e_model) == 0.0  # ties are not "better"
    s = summarize(Y, P, baseline=baseline)
    r = per_gene_pearson(Y, P)
    assert s["mae"] == pytest.approx(e_model.mean())
    assert s["median_r"] == pytest.approx(np.median(r)) and s["mean_r"] == pytest.approx(r.mean())
    assert s["median_ccc"] == pytest.approx(np.median(per_gene_ccc(Y, P)))
    assert s["baseline_mae"] == pytest.approx(per_gene_mae(Y, baseline).mean())
    assert s["share_better"] == pytest.approx(expected)
    assert (s["n_genes"], s["n_samples"]) == (Y.shape[1], Y.shape[0])
    assert "share_better" not in summarize(Y, P)


def test_within_study_zscore(data):
    Y = data[0]
    groups = np.repeat(["gtex", "geuvadis", "geo"], [25, 20, 15])
    Z = within_study_zscore(Y, groups)
    for g in np.unique(groups):
        np.testing.assert_allclose(Z[groups == g], zscore(Y[groups == g], axis=0), rtol=1e-10)
    Yc = Y.copy()
    Yc[groups == "geo", 0] = 4.0  # constant within a study -> 0, not inf
    assert np.all(within_study_zscore(Yc, groups)[groups == "geo", 0] == 0)


def test_shape_errors(data):
    Y, P = data
    with pytest.raises(GeneinferError, match="shape"):
        mae(Y, P[:, :5])
    with pytest.raises(GeneinferError, match="one per sample"):
        within_study_zscore(Y, ["a"] * 3)
    with pytest.raises(GeneinferError, match="shapes"):
        share_better(np.ones(3), np.ones(4))


def test_gene_scores_in_column_blocks_equal_the_per_gene_metrics(data, rng, monkeypatch):
    """Scored 64 genes at a time (200 genes: four blocks, the last partial), with missing
    values and a constant gene, every column equals its per-gene function's value."""
    import geneinfer.evaluate.metrics as metrics

    Y, P = data
    Y, P = Y.copy(), P.copy()
    Y[rng.random(Y.shape) < 0.05] = np.nan
    P[:7, 130] = np.nan
    Y[:, 199] = 1.5
    monkeypatch.setattr(metrics, "SCORE_COLUMNS", 64)
    got = metrics.gene_scores(Y, P)
    assert list(got.columns) == ["mae", "rmse", "r", "ccc", "n"] and len(got) == 200
    for column, fn in (("mae", per_gene_mae), ("rmse", per_gene_rmse),
                       ("r", per_gene_pearson), ("ccc", per_gene_ccc)):
        np.testing.assert_allclose(got[column], fn(Y, P), rtol=1e-12, equal_nan=True)
    assert np.isnan(got["r"][199]) and got["n"][130] == (np.isfinite(Y[:, 130]) & (
        np.arange(len(Y)) >= 7)).sum()
    labels = np.repeat(["s1", "s2", "s3"], [20, 25, 15])
    grouped = metrics.grouped_gene_scores(Y, P, labels)
    want = np.nanmean([per_gene_pearson(Y[labels == s, :199], P[labels == s, :199])
                       for s in ("s1", "s2", "s3")], axis=0)
    np.testing.assert_allclose(grouped["r"][:199], want, rtol=1e-12)
    assert np.isnan(grouped["r"][199]) and grouped["n_groups"][199] == 0
    assert metrics.gene_scores(Y[:, :0], P[:, :0]).empty
