"""Principal component regression and per-gene SVR on real expression."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.linear_model as sk
from classical_data import landmark_target_split
from sklearn.decomposition import PCA
from sklearn.pipeline import make_pipeline
from sklearn.svm import SVR, LinearSVR

from geneinfer.errors import ConfigError
from geneinfer.models.linear import Ridge
from geneinfer.models.pcr import PCARegression
from geneinfer.models.svr import SVRRegression


@pytest.fixture(scope="module")
def real(shared):
    return landmark_target_split(shared, n_landmarks=200, n_targets=200)


def test_pcr_equals_pca_then_ols(real):
    X, Y = real
    Xn = X[::2] + np.random.default_rng(0).normal(0, 0.3, X[::2].shape)
    for k in (1, 8, 30):
        m = PCARegression(n_components=k, precision="float64").fit(X, Y)
        ref = make_pipeline(PCA(n_components=k), sk.LinearRegression()).fit(X, Y)
        np.testing.assert_allclose(m.predict(Xn), ref.predict(Xn), rtol=1e-5, atol=1e-4)
        pca = ref[0]
        np.testing.assert_allclose(np.abs(m.components_), np.abs(pca.components_), atol=1e-6)
        np.testing.assert_allclose(m.explained_variance_, pca.explained_variance_, rtol=1e-8)
        scores = m.component_scores(Xn)
        np.testing.assert_allclose(np.abs(scores), np.abs(pca.transform(Xn)), rtol=1e-4,
                                   atol=1e-4)


def test_pcr_auto_components_by_gcv(real):
    X, Y = real
    m = PCARegression(precision="float64", max_components=40).fit(X, Y)
    assert m.gcv_.shape == (40,)
    n = len(X)
    for k in (3, 17):
        resid = Y - make_pipeline(PCA(k), sk.LinearRegression()).fit(X, Y).predict(X)
        brute = np.mean((resid**2).mean(0) / (1 - (k + 1) / n) ** 2)
        np.testing.assert_allclose(m.gcv_[k - 1], brute, rtol=1e-6)
    assert m.n_components_ == int(np.argmin(m.gcv_)) + 1
    with pytest.raises(ConfigError, match="n_components"):
        PCARegression(n_components=0).fit(X, Y)


def _z(a, ref):
    return (a - ref.mean(0)) / ref.std(0)


def test_svr_rbf_matches_sklearn_on_fitted_genes_and_ridge_elsewhere(real):
    X, Y = real
    tr, te = np.arange(57) % 4 != 0, np.arange(57) % 4 == 0
    with pytest.warns(UserWarning, match="SVR fitted on 5 of 200 target genes"):
        m = SVRRegression(max_genes=5, C=2.0, epsilon=0.2).fit(X[tr], Y[tr])
    pred = m.predict(X[te])
    assert pred.shape == (int(te.sum()), 200) and pred.dtype == np.float32
    Ztr, Zte = _z(X[tr], X[tr]), _z(X[te], X[tr])
    gamma = 1.0 / (Ztr.shape[1] * Ztr.var())
    for j in m.svr_genes_:
        y = Y[tr, j]
        ref = SVR(C=2.0, epsilon=0.2, gamma=gamma).fit(Ztr, (y - y.mean()) / y.std())
        np.testing.assert_allclose(pred[:, j], ref.predict(Zte) * y.std() + y.mean(),
                                   rtol=1e-4, atol=1e-3)
    others = np.setdiff1d(np.arange(200), m.svr_genes_)
    ridge = Ridge().fit(X[tr], Y[tr]).predict(X[te])
    np.testing.assert_allclose(pred[:, others], ridge[:, others], rtol=1e-5, atol=1e-4)


def test_svr_linear_kernel_all_genes(real):
    X, Y = real
    Ys = Y[:, :6]
    m = SVRRegression(kernel="linear", max_genes=None).fit(X, Ys)
    assert m.svr_genes_.tolist() == list(range(6))
    Z = _z(X, X)
    y = Ys[:, 2]
    ref = LinearSVR(epsilon=0.1, dual="auto", max_iter=10000, random_state=0).fit(
        Z, (y - y.mean()) / y.std())
    np.testing.assert_allclose(m.predict(X)[:, 2], ref.predict(Z) * y.std() + y.mean(),
                               rtol=1e-4, atol=1e-3)
    with pytest.raises(ConfigError, match="kernel"):
        SVRRegression(kernel="poly").fit(X, Ys)
