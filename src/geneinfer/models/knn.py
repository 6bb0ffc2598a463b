"""Nearest-neighbour baselines: D-GEX's KNN-GE (neighbour genes) and sample KNN.

``KNNGE`` (Chen et al. 2016, "KNN-GE"): each target gene is predicted as the mean of the
``k`` landmark genes whose training profiles are most similar to it. D-GEX worked on
per-gene z-scored data, where the Euclidean distance between two gene profiles is a
decreasing function of their Pearson correlation; so neighbours are the ``k`` landmarks of
highest correlation, the average is taken in z-score units and mapped back to the
target's units with its training mean and standard deviation. The result is a (sparse)
linear model, fitted from the same Gram statistics as OLS in one pass over the data.

``SampleKNN``: the mean target profile of the ``k`` training samples nearest to the query
(Euclidean distance on standardized landmarks).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.neighbors import NearestNeighbors

from geneinfer.errors import ConfigError
from geneinfer.models.classical import (
    ClassicalModel,
    GramLinearModel,
    split_stats,
    validation_mask,
)
from geneinfer.models.gram import CenteredGram, GramStats, Precision, validation_sse

DEFAULT_K_GRID: tuple[int, ...] = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50)


def _check_k(k: Any, what: str) -> None:
    if k == "auto":
        return
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"{what}: k must be a positive integer or 'auto', got {k!r}")


class KNNGE(GramLinearModel):
    """KNN-GE: target = mean (in z-scores) of its ``k`` most correlated landmarks.

    Parameters
    ----------
    k
        Number of neighbour landmarks, or ``"auto"`` (default): the value of ``k_grid``
        with the smallest held-out mean squared error of the standardized targets (all
        genes weigh the same, as in D-GEX's evaluation), computed from Gram matrices.
    k_grid
        Candidates for ``"auto"``.
    validation_fraction, random_state
        Held-out split for ``"auto"``; the final model is refitted on all samples.
    precision, block_rows
        As in :class:`geneinfer.models.linear.LinearRegression`.

    Attributes
    ----------
    k_ : int
    neighbors_ : ndarray (n_targets, k_), int32
        Landmark column indices of each target's neighbours, most correlated first.
    coef_ : ndarray (n_targets, n_landmarks), float32
        The equivalent linear model: ``std_y / (k std_x)`` at the neighbours, else 0.
    validation_mse_ : ndarray (len(k_grid),)
        Held-out standardized MSE of each candidate (with ``"auto"``).
    """

    name = "knn-ge"

    def __init__(
        self,
        *,
        k: int | str = "auto",
        k_grid: Sequence[int] = DEFAULT_K_GRID,
        validation_fraction: float = 0.2,
        random_state: int | None = 0,
        precision: Precision = "float32",
        block_rows: int | None = None,
    ) -> None:
        self.k = k
        self.k_grid = k_grid
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.precision = precision
        self.block_rows = block_rows

    def _can_partial_fit(self) -> bool:
        # partial_fit / fit_blocks exist only with a fixed k
        return self.k != "auto"

    def _solve(self, gram: CenteredGram) -> np.ndarray:
        _check_k(self.k, "KNNGE")
        k = self.k if self.k != "auto" else getattr(self, "k_", None)
        if k is None:
            raise ConfigError("KNNGE(k='auto') can only be fitted with fit(); give k")
        k = int(min(k, gram.cxx.shape[0]))
        order = _neighbour_order(gram, k)
        self.k_ = k
        self.neighbors_ = np.ascontiguousarray(order[:k].T, dtype=np.int32)
        return _knn_coef(gram, order, k)

    def fit(self, X: Any, Y: Any) -> KNNGE:
        """Find each target's neighbour landmarks (choosing ``k`` first if ``"auto"``)."""
        _check_k(self.k, "KNNGE")
        self.__dict__.pop("validation_mse_", None)
        if self.k != "auto":
            return super().fit(X, Y)
        X, Y = self._validate_fit(X, Y, gram_checks_finite=True)
        grid = sorted({int(k) for k in self.k_grid if int(k) >= 1})
        if not grid:
            raise ConfigError(f"KNNGE: k_grid has no positive values: {self.k_grid!r}")
        mask = validation_mask(X.shape[0], self.validation_fraction, self.random_state)
        train, val = split_stats(X, Y, mask, precision=self.precision,
                                 block_rows=self.block_rows)
        tg = train.centered()
        moments = val.moments_about(tg.mean_x, tg.mean_y)
        grid = [k for k in grid if k <= tg.cxx.shape[0]] or [tg.cxx.shape[0]]
        order = _neighbour_order(tg, max(grid))
        var_y = np.where(tg.cyy > 0, tg.cyy / tg.n, 1.0)
        mse = np.array([
            float((validation_sse(_knn_coef(tg, order, k), moments) / var_y).mean()) / val.n
            for k in grid
        ])
        self.validation_mse_ = mse
        self.k_ = grid[int(np.argmin(mse))]
        full = GramStats(precision=self.precision)
        full += train
        full += val
        self._stats = full
        self._finish(full.centered())
        return self


def _neighbour_order(gram: CenteredGram, kmax: int) -> np.ndarray:
    """Landmark indices (kmax x T) sorted by decreasing correlation with each target."""
    sx = np.sqrt(np.diag(gram.cxx))
    sy = np.sqrt(gram.cyy)
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = gram.cxy / np.outer(sx, sy)
    # constant landmarks have no correlation: rank them last
    corr = np.where(np.isfinite(corr), corr, -np.inf)
    corr[sx == 0] = -np.inf
    kmax = min(kmax, corr.shape[0])
    top = np.argpartition(-corr, kmax - 1, axis=0)[:kmax] if kmax < corr.shape[0] else (
        np.broadcast_to(np.arange(corr.shape[0])[:, None], corr.shape).copy()
    )
    vals = np.take_along_axis(corr, top, axis=0)
    return np.take_along_axis(top, np.argsort(-vals, axis=0, kind="stable"), axis=0)


def _knn_coef(gram: CenteredGram, order: np.ndarray, k: int) -> np.ndarray:
    """Linear coefficients (p x T) of the z-score average of the first ``k`` neighbours."""
    p, t = gram.cxy.shape
    sx = np.sqrt(np.diag(gram.cxx) / gram.n)
    sy = np.sqrt(gram.cyy / gram.n)
    idx = order[:k]  # (k, T)
    with np.errstate(divide="ignore"):
        inv_sx = np.where(sx > 0, 1.0 / sx, 0.0)
    coef = np.zeros((p, t))
    cols = np.broadcast_to(np.arange(t), idx.shape)
    coef[idx, cols] = inv_sx[idx] * (sy / k)[None, :]
    return coef


class SampleKNN(ClassicalModel):
    """Mean target profile of the ``k`` nearest training samples.

    Distances are Euclidean on landmarks standardized with the training means and
    standard deviations (so no landmark dominates by scale); search is exact
    (``sklearn.neighbors.NearestNeighbors``, brute force). The training profiles are the
    fitted state, so the saved model is as large as the training data.

    Parameters
    ----------
    k
        Number of neighbours or ``"auto"`` (default): the ``k_grid`` value with the
        smallest held-out standardized MSE.
    k_grid, validation_fraction, random_state
        As in :class:`KNNGE`.

    Attributes
    ----------
    k_ : int
    X_train_ : ndarray (n_samples, n_landmarks), float32, standardized
    Y_train_ : ndarray (n_samples, n_targets), float32
    mean_x_, scale_x_ : ndarray (n_landmarks,)
    """

    name = "knn"

    def __init__(
        self,
        *,
        k: int | str = "auto",
        k_grid: Sequence[int] = DEFAULT_K_GRID,
        validation_fraction: float = 0.2,
        random_state: int | None = 0,
    ) -> None:
        self.k = k
        self.k_grid = k_grid
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def fit(self, X: Any, Y: Any) -> SampleKNN:
        """Store the standardized training profiles (choosing ``k`` first if ``"auto"``)."""
        _check_k(self.k, "SampleKNN")
        X, Y = self._validate_fit(X, Y)
        mean = X.mean(axis=0, dtype=np.float64)
        std = X.std(axis=0, dtype=np.float64)
        scale = np.where(std > 0, std, 1.0)
        Z = ((X - mean) / scale).astype(np.float32)
        Yf = np.asarray(Y, dtype=np.float32)
        self.__dict__.pop("validation_mse_", None)
        if self.k == "auto":
            self.k_, self.validation_mse_ = self._choose_k(Z, Yf)
        else:
            self.k_ = int(min(self.k, X.shape[0]))
        self.mean_x_, self.scale_x_ = mean, scale
        self.X_train_, self.Y_train_ = Z, Yf
        return self

    def _choose_k(self, Z: np.ndarray, Y: np.ndarray) -> tuple[int, np.ndarray]:
        mask = validation_mask(Z.shape[0], self.validation_fraction, self.random_state)
        n_train = int((~mask).sum())
        grid = sorted({min(int(k), n_train) for k in self.k_grid if int(k) >= 1})
        if not grid:
            raise ConfigError(f"SampleKNN: k_grid has no positive values: {self.k_grid!r}")
        ytr, yval = Y[~mask], Y[mask]
        var = ytr.var(axis=0, dtype=np.float64)
        inv_var = np.where(var > 0, 1.0 / np.where(var > 0, var, 1.0), 0.0)
        nn = NearestNeighbors(n_neighbors=max(grid), algorithm="brute").fit(Z[~mask])
        idx = nn.kneighbors(Z[mask], return_distance=False)
        sse = np.zeros(len(grid))
        for rows in _chunks(len(idx), max(grid) * Y.shape[1]):
            csum = np.cumsum(ytr[idx[rows]], axis=1, dtype=np.float64)  # (r, kmax, T)
            for i, k in enumerate(grid):
                err = csum[:, k - 1, :] / k - yval[rows]
                sse[i] += float((err**2 @ inv_var).sum())
        mse = sse / (mask.sum() * Y.shape[1])
        return grid[int(np.argmin(mse))], mse

    def predict(self, X: Any) -> np.ndarray:
        """Mean of the neighbours' target profiles, float32."""
        X = self._validate_predict(X)
        Z = ((X - self.mean_x_) / self.scale_x_).astype(np.float32)
        k = int(min(self.k_, self.X_train_.shape[0]))
        nn = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(self.X_train_)
        out = np.empty((Z.shape[0], self.Y_train_.shape[1]), dtype=np.float32)
        for rows in _chunks(Z.shape[0], k * self.Y_train_.shape[1]):
            idx = nn.kneighbors(Z[rows], return_distance=False)
            out[rows] = self.Y_train_[idx].mean(axis=1)
        return self._output(out)


def _chunks(n: int, values_per_row: int, budget: int = 2**25) -> list[slice]:
    """Row slices so that a gathered (rows x values_per_row) block stays near ``budget``."""
    step = max(1, budget // max(1, values_per_row))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]
