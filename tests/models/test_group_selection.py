"""Study-aware hyper-parameter choice of the Gram-based models on real HG-U133A studies.

The three GCT studies (bladderbatch RMA, nakayama and borovecki MAS5) are the groups. Fold
scores computed from per-group sums must equal a brute-force refit per fold, and on a
left-out study the alpha chosen over studies must do better than GCV's.
"""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.linear_model as sk
from gpl96_data import DATASETS, load_gpl96
from sklearn.decomposition import PCA
from sklearn.pipeline import make_pipeline
from test_knn import _knn_ge_direct

from geneinfer.models.knn import KNNGE
from geneinfer.models.linear import Lasso, Ridge
from geneinfer.models.pcr import PCARegression
from geneinfer.models.selection import zscore_mse


@pytest.fixture(scope="module")
def studies(shared):
    return load_gpl96(shared)


def _stack(studies, names):
    X = np.vstack([studies[n][0] for n in names]).astype(np.float64)
    Y = np.vstack([studies[n][1] for n in names]).astype(np.float64)
    groups = np.concatenate([[n] * len(studies[n][0]) for n in names])
    return X, Y, groups


def _standardize(X, *others):
    """As the training workflow hands data to models: z-scored with training statistics."""
    mean, std = X.mean(0), X.std(0)
    return [(A - mean) / std for A in (X, *others)]


def _within_study_r(Y, P) -> float:
    """Mean over genes of the Pearson r of truth and prediction within one study."""
    return float(1.0 - np.nanmean(zscore_mse(Y, P)) / 2.0)


def _brute_force_curve(X, Y, groups, fit_predict, candidates, genes):
    """Leave-one-group-out score of each candidate, refitting on every fold."""
    curve = []
    for cand in candidates:
        per_group = []
        for g in np.unique(groups):
            train = groups != g
            pred = fit_predict(cand, X[train], Y[train][:, genes], X[~train], train.sum())
            per_group.append(np.nanmean(zscore_mse(Y[~train][:, genes], pred)))
        curve.append(np.mean(per_group))
    return np.array(curve)


# ------------------------------------------------------------------------- real studies
def test_ridge_over_studies_picks_larger_alpha_and_transfers_better(studies):
    """Leave one study out entirely; train on the other two with them as groups."""
    r_gcv, r_study = [], []
    for held in DATASETS:
        X, Y, groups = _stack(studies, [n for n in DATASETS if n != held])
        Xt, Yt = studies[held]
        Xs, Xts = _standardize(X, Xt)
        gcv = Ridge().fit(Xs, Y)
        study = Ridge().fit(Xs, Y, groups=groups)
        assert gcv.selection_["method"] == "gcv"
        assert study.selection_["method"] == "leave-one-group-out"
        assert study.selection_["n_groups"] == 2
        np.testing.assert_array_equal(study.alphas_, gcv.alphas_)  # the same grid
        assert study.alpha_ > gcv.alpha_, held
        r_gcv.append(_within_study_r(Yt, gcv.predict(Xts)))
        r_study.append(_within_study_r(Yt, study.predict(Xts)))
    # measured (bladderbatch / nakayama / borovecki left out): alphas 430 / 8.8 / 51 by
    # GCV, 4301 / 880 / 512 over studies; r 0.465 / 0.149 / 0.145 (mean 0.253) against
    # 0.450 / 0.186 / 0.201 (mean 0.279)
    assert np.mean(r_study) > np.mean(r_gcv) + 0.015
    assert sum(s > g for s, g in zip(r_study, r_gcv)) >= 2


def test_ridge_fold_scores_equal_refitting_every_fold(studies):
    X, Y, groups = _stack(studies, DATASETS)
    (X,) = _standardize(X)
    m = Ridge(precision="float64", cv_genes=150, random_state=3).fit(X, Y, groups=groups)
    n = len(X)

    def fit_predict(alpha, Xtr, Ytr, Xte, n_train):
        # the fold's penalty per row equals the final fit's
        return sk.Ridge(alpha=alpha * n_train / n).fit(Xtr, Ytr).predict(Xte)

    brute = _brute_force_curve(X, Y, groups, fit_predict, m.alphas_, m.cv_genes_)
    np.testing.assert_allclose(m.selection_["scores"], brute, atol=1e-6)
    assert m.alpha_ == m.alphas_[np.argmin(brute)]
    # the final model is ridge on every row with the chosen alpha
    ref = sk.Ridge(alpha=m.alpha_).fit(X, Y)
    np.testing.assert_allclose(m.coef_, ref.coef_, rtol=1e-5, atol=1e-7)
    assert m.cv_scores_.shape == (13, 150)


def test_ridge_fold_scores_with_more_rows_than_landmarks_per_group(studies):
    """Every group's C_xx,g is then positive definite: the Cholesky (trmm) path scores it;
    alpha per gene picks each gene's best alpha of the same curves."""
    X, Y, groups = _stack(studies, DATASETS)
    X, Y = X[:, :25], Y[:, :120]
    n = len(X)
    m = Ridge(precision="float64", cv_genes=None, alpha_per_gene=True).fit(X, Y,
                                                                         groups=groups)

    def fit_predict(alpha, Xtr, Ytr, Xte, n_train):
        return sk.Ridge(alpha=alpha * n_train / n).fit(Xtr, Ytr).predict(Xte)

    per_gene = []
    for alpha in m.alphas_:
        per_group = []
        for g in DATASETS:
            tr = groups != g
            per_group.append(zscore_mse(Y[~tr], fit_predict(alpha, X[tr], Y[tr], X[~tr],
                                                            tr.sum())))
        per_gene.append(np.nanmean(per_group, axis=0))
    per_gene = np.array(per_gene)
    np.testing.assert_allclose(m.cv_scores_, per_gene, atol=1e-6)
    np.testing.assert_array_equal(m.alpha_, m.alphas_[np.argmin(per_gene, axis=0)])
    # float32 products (the default) agree to what float32 can tell apart
    fast = Ridge(cv_genes=None).fit(X, Y, groups=groups)
    np.testing.assert_allclose(fast.selection_["scores"], per_gene.mean(1), atol=1e-4)


def test_group_k_fold_above_ten_groups_equals_refitting(studies):
    """Twelve groups (each study cut in four) switch to five folds of whole groups."""
    X, Y, studies_of_rows = _stack(studies, DATASETS)
    (X,) = _standardize(X)
    groups = np.concatenate([np.array_split(np.full(np.sum(studies_of_rows == s), i * 4), 4)
                             [k] + k for i, s in enumerate(DATASETS) for k in range(4)])
    m = Ridge(precision="float64", cv_genes=100).fit(X, Y, groups=groups)
    assert m.selection_["method"] == "group-k-fold"
    assert m.selection_["n_folds"] == 5 and m.selection_["n_groups"] == 12
    from geneinfer.models.selection import plan_folds

    folds = plan_folds(groups, len(X))
    n = len(X)
    curve = []
    for alpha in m.alphas_[::3]:
        per_group = []
        for k in range(5):
            held = folds.held_out(k)
            fit = sk.Ridge(alpha=alpha * (~held).sum() / n).fit(X[~held],
                                                                 Y[~held][:, m.cv_genes_])
            for g in folds.folds[k]:
                rows = folds.codes == g
                per_group.append(np.nanmean(zscore_mse(Y[rows][:, m.cv_genes_],
                                                       fit.predict(X[rows]))))
        curve.append(np.mean(per_group))
    np.testing.assert_allclose(m.selection_["scores"][::3], curve, atol=1e-6)


def test_row_order_does_not_change_the_choice(studies):
    X, Y, groups = _stack(studies, DATASETS)
    a = Ridge(cv_genes=200).fit(X, Y, groups=groups)
    perm = np.random.default_rng(0).permutation(len(X))  # interleaved groups
    b = Ridge(cv_genes=200).fit(X[perm], Y[perm], groups=groups[perm])
    np.testing.assert_allclose(a.selection_["scores"], b.selection_["scores"], atol=1e-5)
    assert a.alpha_ == pytest.approx(b.alpha_, rel=1e-6)  # the same grid point


def test_pcr_and_knn_ge_fold_scores_equal_refitting(studies):
    X, Y, groups = _stack(studies, DATASETS)
    X = X[:, :80]
    pcr = PCARegression(precision="float64", cv_genes=60, max_components=25).fit(
        X, Y, groups=groups)
    ks = np.array([1, 4, 11, 25])

    def pcr_fit_predict(k, Xtr, Ytr, Xte, _):
        return make_pipeline(PCA(int(k)), sk.LinearRegression()).fit(Xtr, Ytr).predict(Xte)

    brute = _brute_force_curve(X, Y, groups, pcr_fit_predict, ks, pcr.cv_genes_)
    np.testing.assert_allclose(np.asarray(pcr.selection_["scores"])[ks - 1], brute, atol=1e-6)
    assert pcr.n_components_ == int(np.argmin(pcr.selection_["scores"])) + 1

    knn = KNNGE(precision="float64", cv_genes=60).fit(X, Y, groups=groups)

    def knn_fit_predict(k, Xtr, Ytr, Xte, _):
        return _knn_ge_direct(Xtr, Ytr, Xte, int(k))

    brute = _brute_force_curve(X, Y, groups, knn_fit_predict, knn.selection_["grid"],
                               knn.cv_genes_)
    np.testing.assert_allclose(knn.selection_["scores"], brute, atol=1e-6)
    assert knn.k_ == knn.selection_["grid"][int(np.argmin(brute))]


def test_lasso_fold_scores_equal_refitting(studies):
    X, Y, groups = _stack(studies, DATASETS)
    X = X[:, :40]
    m = Lasso(n_alphas=4, eps=0.05, cv_genes=12, precision="float64", tol=1e-12,
              max_iter=50000).fit(X, Y, groups=groups)
    genes = m.cv_genes_
    curve = []
    for k in range(4):
        per_group = []
        for g in np.unique(groups):
            tr = groups != g
            pred = np.column_stack([
                sk.Lasso(alpha=m.alphas_[k, j], tol=1e-12, max_iter=200000).fit(
                    X[tr], Y[tr, j]).predict(X[~tr]) for j in genes])
            per_group.append(np.nanmean(zscore_mse(Y[~tr][:, genes], pred)))
        curve.append(np.mean(per_group))
    np.testing.assert_allclose(m.selection_["scores"], curve, atol=1e-6)


def test_one_group_keeps_gcv_and_a_validation_set_wins(studies):
    X, Y, groups = _stack(studies, DATASETS)
    one = Ridge().fit(X, Y, groups=np.zeros(len(X)))
    none = Ridge().fit(X, Y)
    assert one.selection_["method"] == none.selection_["method"] == "gcv"
    assert one.alpha_ == none.alpha_
    np.testing.assert_array_equal(one.coef_, none.coef_)
    # a given validation set: the alpha of least standardized validation MSE, fit on X
    Xv, Yv = X[groups == "borovecki"], Y[groups == "borovecki"]
    Xf, Yf = X[groups != "borovecki"], Y[groups != "borovecki"]
    m = Ridge(cv_genes=None, precision="float64").fit(Xf, Yf, groups=groups[groups !=
                                                      "borovecki"], X_val=Xv, Y_val=Yv)
    assert m.selection_["method"] == "holdout" and m.selection_["holdout"] == "given"
    mse = [np.mean(((sk.Ridge(alpha=a).fit(Xf, Yf).predict(Xv) - Yv) ** 2) / Yf.var(0))
           for a in m.alphas_]
    np.testing.assert_allclose(m.selection_["scores"], mse, rtol=1e-6)
    assert m.n_samples_seen_ == len(Xf)


def test_grouped_fits_round_trip_with_their_selection_record(studies):
    import json

    from geneinfer.models.registry import make_model

    X, Y, groups = _stack(studies, DATASETS)
    Xt = X[::7] + 0.1
    for name in ("ridge", "lasso", "knn-ge", "pcr", "knn"):
        params = {"n_alphas": 3, "cv_genes": 20} if name == "lasso" else {}
        model = make_model(name, **params).fit(X[:, :60], Y[:, :80], groups=groups)
        assert model.selection_["method"] == "leave-one-group-out", name
        arrays, meta = model.fitted_state()
        meta = json.loads(json.dumps(meta))
        restored = make_model(name, **model.get_params())
        restored.load_fitted_state(arrays, meta)
        assert restored.selection_ == model.selection_
        np.testing.assert_allclose(restored.predict(Xt[:, :60]), model.predict(Xt[:, :60]),
                                   rtol=1e-6)


def test_pcr_and_knn_ge_on_a_given_validation_set(studies):
    X, Y, groups = _stack(studies, DATASETS)
    X, Y = X[:, :60], Y[:, :40]
    val = groups == "borovecki"
    pcr = PCARegression(precision="float64", max_components=12, cv_genes=None).fit(
        X[~val], Y[~val], X_val=X[val], Y_val=Y[val])
    mse = [np.mean(((make_pipeline(PCA(k), sk.LinearRegression()).fit(X[~val], Y[~val])
                     .predict(X[val]) - Y[val]) ** 2) / Y[~val].var(0)) for k in range(1, 13)]
    np.testing.assert_allclose(pcr.selection_["scores"], mse, rtol=1e-6)
    assert pcr.n_components_ == int(np.argmin(mse)) + 1
    knn = KNNGE(precision="float64").fit(X[~val], Y[~val], X_val=X[val], Y_val=Y[val])
    mse = [np.mean((_knn_ge_direct(X[~val], Y[~val], X[val], k) - Y[val]) ** 2
                   / Y[~val].var(0)) for k in knn.selection_["grid"]]
    np.testing.assert_allclose(knn.validation_mse_, mse, rtol=1e-6)
    assert knn.selection_["holdout"] == "given" and knn.n_samples_seen_ == (~val).sum()
