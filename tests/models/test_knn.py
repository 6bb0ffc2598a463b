"""KNN-GE and sample KNN on real expression, against direct computations and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from classical_data import landmark_target_split
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from geneinfer.errors import ConfigError
from geneinfer.models.classical import validation_mask
from geneinfer.models.gram import iter_row_blocks
from geneinfer.models.knn import KNNGE, SampleKNN


@pytest.fixture(scope="module")
def real(shared):
    X, Y = landmark_target_split(shared, n_landmarks=200, n_targets=300)
    return X, Y


def _knn_ge_direct(Xtr, Ytr, Xte, k):
    """D-GEX's recipe written out: z-score, rank landmarks by correlation, average, map back."""
    mx, sx = Xtr.mean(0), Xtr.std(0)
    my, sy = Ytr.mean(0), Ytr.std(0)
    corr = np.corrcoef(Xtr.T, Ytr.T)[: Xtr.shape[1], Xtr.shape[1] :]
    zte = (Xte - mx) / sx
    out = np.empty((len(Xte), Ytr.shape[1]))
    for t in range(Ytr.shape[1]):
        nb = np.argsort(-corr[:, t], kind="stable")[:k]
        out[:, t] = my[t] + sy[t] * zte[:, nb].mean(1)
    return out


def test_knn_ge_matches_direct_recipe(real):
    X, Y = real
    tr, te = np.arange(57) < 45, np.arange(57) >= 45
    for k in (1, 5, 20):
        m = KNNGE(k=k, precision="float64").fit(X[tr], Y[tr])
        np.testing.assert_allclose(m.predict(X[te]), _knn_ge_direct(X[tr], Y[tr], X[te], k),
                                   rtol=1e-5, atol=1e-4)
        assert m.neighbors_.shape == (300, k)
        corr = np.corrcoef(X[tr].T, Y[tr].T)[:200, 200:]
        best = corr.argmax(axis=0)
        np.testing.assert_array_equal(m.neighbors_[:, 0], best)


def test_knn_ge_auto_k_uses_held_out_standardized_error(real):
    X, Y = real
    grid = (1, 3, 10, 30)
    m = KNNGE(k_grid=grid, precision="float64").fit(X, Y)
    mask = validation_mask(len(X), 0.2, 0)
    direct = []
    for k in grid:
        pred = _knn_ge_direct(X[~mask], Y[~mask], X[mask], k)
        var = Y[~mask].var(0)
        direct.append(np.mean((pred - Y[mask]) ** 2 / var))
    np.testing.assert_allclose(m.validation_mse_, direct, rtol=1e-6)
    assert m.k_ == grid[int(np.argmin(direct))]
    # the final model is refitted on all samples with the chosen k
    full = KNNGE(k=m.k_, precision="float64").fit(X, Y)
    np.testing.assert_allclose(m.coef_, full.coef_, rtol=1e-6, atol=1e-7)


def test_knn_ge_blocks_and_bad_k(real):
    X, Y = real
    m = KNNGE(k=4).fit_blocks(iter_row_blocks(X, Y, 10))
    ref = KNNGE(k=4).fit(X, Y)
    np.testing.assert_array_equal(m.neighbors_, ref.neighbors_)
    assert not hasattr(KNNGE(), "fit_blocks")  # k="auto" needs a held-out split
    with pytest.raises(ConfigError, match="positive integer"):
        KNNGE(k=0).fit(X, Y)


def test_sample_knn_matches_sklearn_pipeline(real):
    X, Y = real
    tr, te = np.arange(57) % 3 != 0, np.arange(57) % 3 == 0
    for k in (1, 4):
        m = SampleKNN(k=k).fit(X[tr], Y[tr])
        ref = make_pipeline(StandardScaler(), KNeighborsRegressor(n_neighbors=k)).fit(
            X[tr], Y[tr])
        np.testing.assert_allclose(m.predict(X[te]), ref.predict(X[te]), rtol=1e-5, atol=1e-4)


def test_sample_knn_auto_k(real):
    X, Y = real
    grid = (1, 2, 5, 10)
    m = SampleKNN(k_grid=grid).fit(X, Y)
    mask = validation_mask(len(X), 0.2, 0)
    direct = []
    for k in grid:
        # SampleKNN standardizes with all training rows, then searches the training part
        scaler = StandardScaler().fit(X)
        ref = KNeighborsRegressor(n_neighbors=k).fit(scaler.transform(X[~mask]), Y[~mask])
        pred = ref.predict(scaler.transform(X[mask]))
        direct.append(np.mean((pred - Y[mask]) ** 2 / Y[~mask].var(0)))
    np.testing.assert_allclose(m.validation_mse_, direct, rtol=1e-4)
    assert m.k_ == grid[int(np.argmin(direct))]
