"""Stacked model and out-of-group per-gene selection."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gpl96_data import DATASETS, load_gpl96
from scipy.optimize import minimize

from geneinfer.errors import ConfigError
from geneinfer.models.ensemble import PerGeneSelector
from geneinfer.models.linear import Ridge
from geneinfer.models.registry import make_model
from geneinfer.models.selection import zscore_mse
from geneinfer.models.stack import StackedModel, simplex_qp


def test_simplex_qp_is_the_constrained_minimum():
    rng = np.random.default_rng(0)
    t, m = 25, 4
    F = rng.normal(size=(t, 12, m))
    A = np.einsum("tim,til->tml", F, F) * rng.uniform(0.1, 3, (t, 1, 1))
    b = rng.normal(size=(t, m)) * 3
    w = simplex_qp(A, b)
    assert (w >= 0).all()
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-12)
    for i in range(t):
        def f(v, i=i):
            return v @ A[i] @ v - 2 * b[i] @ v
        ref = minimize(f, np.full(m, 1 / m), method="SLSQP", bounds=[(0, 1)] * m,
                       constraints={"type": "eq", "fun": lambda v: v.sum() - 1},
                       options={"ftol": 1e-14, "maxiter": 1000})
        assert f(w[i]) <= ref.fun + 1e-9 * max(1.0, abs(ref.fun))


def _synthetic(seed=0, n_groups=4, per_group=90):
    """Genes 0-14 linear in the landmarks; genes 15-29 a bump of one latent factor,
    which averaging similar samples (sample KNN) captures and a linear model cannot."""
    rng = np.random.default_rng(seed)
    n = n_groups * per_group
    z = rng.normal(size=(n, 3))
    X = z @ rng.normal(size=(3, 12)) + 0.3 * rng.normal(size=(n, 12))
    lin = z @ rng.normal(size=(3, 15)) + 0.5 * rng.normal(size=(n, 15))
    bump = np.exp(-2 * z[:, :1] ** 2) * rng.uniform(2, 3, 15) + 0.2 * rng.normal(size=(n, 15))
    groups = np.repeat(np.arange(n_groups), per_group)
    X += rng.normal(0, 0.5, (n_groups, 12))[groups]  # study offsets
    Y = np.hstack([lin, bump]) + rng.normal(0, 0.5, (n_groups, 30))[groups]
    return X, Y, groups


def test_stack_weights_prefer_the_better_candidate_per_gene_and_beat_ridge():
    X, Y, groups = _synthetic()
    test = groups == 3
    st = StackedModel(candidates=("ridge", "knn")).fit(X[~test], Y[~test],
                                                      groups=groups[~test])
    w = st.weights_
    assert w.shape == (2, 30) and (w >= 0).all()
    np.testing.assert_allclose(w.sum(0), 1.0, atol=1e-12)
    knn = st.labels_.index("knn")
    assert w[knn, 15:].mean() > 0.6 > w[knn, :15].mean()
    assert st.selection_["method"] == "leave-one-group-out"
    assert st.selection_["n_groups"] == 3
    ridge = Ridge().fit(X[~test], Y[~test], groups=groups[~test])
    stack_err = np.nanmean(zscore_mse(Y[test], st.predict(X[test])))
    ridge_err = np.nanmean(zscore_mse(Y[test], ridge.predict(X[test])))
    assert stack_err < ridge_err - 0.05
    mse = np.mean((st.predict(X[test]) - Y[test]) ** 2)
    assert mse <= np.mean((ridge.predict(X[test]) - Y[test]) ** 2)


def test_huge_tau_is_ridge():
    X, Y, groups = _synthetic(seed=1)
    st = StackedModel(candidates=("ridge", "knn", "pcr"), tau=1e12).fit(X, Y, groups=groups)
    np.testing.assert_allclose(st.weights_[0], 1.0, atol=1e-9)
    assert list(st.estimators_) == ["ridge"]  # candidates without weight are not refit
    ridge = Ridge().fit(X, Y, groups=groups)
    np.testing.assert_allclose(st.predict(X), ridge.predict(X), atol=1e-5)


def test_without_groups_out_of_fold_and_round_trip():
    X, Y, _ = _synthetic(seed=2)
    st = StackedModel(candidates=("ridge", "knn")).fit(X, Y)
    assert st.selection_["method"] == "k-fold" and st.selection_["units"] == "row folds"
    assert st.tau_ in st.selection_["grid"]
    arrays, meta = st.fitted_state()
    meta = json.loads(json.dumps(meta))
    restored = make_model("stack", **st.get_params())
    restored.load_fitted_state(arrays, meta)
    np.testing.assert_array_equal(restored.predict(X), st.predict(X))
    with pytest.raises(ConfigError, match="anchor"):
        StackedModel(candidates=("knn", "pcr")).fit(X, Y)


def test_a_given_validation_set_fits_the_weights_and_no_refit():
    X, Y, groups = _synthetic(seed=3)
    val = groups == 3
    st = StackedModel(candidates=("ridge", "knn")).fit(X[~val], Y[~val], groups=groups[~val],
                                                      X_val=X[val], Y_val=Y[val])
    assert st.selection_["method"] == "holdout" and st.selection_["holdout"] == "given"
    assert st.selection_["n_groups"] == 3
    np.testing.assert_allclose(st.weights_.sum(0), 1.0, atol=1e-12)
    ridge = Ridge().fit(X[~val], Y[~val], groups=groups[~val])  # fitted on X alone
    np.testing.assert_allclose(st.estimators_["ridge"].predict(X), ridge.predict(X), atol=1e-6)


@pytest.fixture(scope="module")
def pooled(shared):
    studies = load_gpl96(shared)
    X = np.vstack([studies[n][0] for n in DATASETS])
    Y = np.vstack([studies[n][1] for n in DATASETS])[:, :200]
    groups = np.concatenate([[n] * len(studies[n][0]) for n in DATASETS])
    return X, Y, groups


def test_per_gene_best_scores_out_of_group_predictions(pooled):
    """Each study predicted by candidates fitted on the other two (with them as groups)."""
    X, Y, groups = pooled
    sel = PerGeneSelector(candidates=("ridge", "knn-ge")).fit(X, Y, groups=groups)
    assert sel.selection_["method"] == "leave-one-group-out"
    errors = []
    for name in sel.labels_:
        per_group = []
        for g in DATASETS:
            tr = groups != g
            model = make_model(name).fit(X[tr], Y[tr], groups=groups[tr])
            per_group.append(zscore_mse(Y[~tr], model.predict(X[~tr])))
        errors.append(np.nanmean(per_group, axis=0))
    np.testing.assert_allclose(sel.val_error_, np.vstack(errors), atol=1e-5)
    np.testing.assert_array_equal(sel.choice_, np.argmin(errors, axis=0))
    # the chosen candidates are refit on every row, with the studies as groups
    ridge = Ridge().fit(X, Y, groups=groups)
    genes = sel.choice_ == 0
    np.testing.assert_allclose(sel.predict(X)[:, genes], ridge.predict(X)[:, genes], atol=1e-5)
