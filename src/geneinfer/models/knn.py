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

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from sklearn.neighbors import NearestNeighbors
from sklearn.utils.validation import check_array

from geneinfer.errors import ConfigError
from geneinfer.models.classical import (
    ClassicalModel,
    GramLinearModel,
    validation_mask,
)
from geneinfer.models.gram import CenteredGram, GramStats, Precision, validation_sse
from geneinfer.models.gram_cv import HeldOutGroup
from geneinfer.models.selection import (
    GroupMoments,
    GroupScores,
    check_validation_pair,
    constant_floor,
    n_distinct,
    plan_folds,
    selection_record,
    zscore_mse_from_moments,
)

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
        with the best score, computed from Gram matrices. With ``groups`` (two or more
        studies) the score is the study-aware cross-validation of
        :mod:`geneinfer.models.selection` (within-group z-scored MSE of held-out studies;
        per-group sums from one pass, :mod:`geneinfer.models.gram_cv`); with ``X_val`` given
        or no groups, the mean squared error of the standardized targets (all genes weigh
        the same, as in D-GEX's evaluation) on the validation set or a random hold-out.
    k_grid
        Candidates for ``"auto"``.
    validation_fraction, random_state
        Held-out split for ``"auto"`` without groups (``random_state`` also seeds the
        ``cv_genes`` subset); the final model is refitted on all training samples.
    cv_genes
        Number of target genes (seeded random subset) the study-aware curve is scored on;
        ``None``: all.
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
        Held-out standardized MSE of each candidate (``"auto"`` without groups).
    cv_scores_ : ndarray (len(k_grid), n_scored), float32
        (groups) Within-group z-scored MSE of each candidate on each scored gene.
    selection_ : dict
        Rule used, number of groups and folds, grid and mean score of each ``k``.
    """

    name = "knn-ge"
    _selection_attrs = ("validation_mse_",)

    def __init__(
        self,
        *,
        k: int | str = "auto",
        k_grid: Sequence[int] = DEFAULT_K_GRID,
        validation_fraction: float = 0.2,
        random_state: int | None = 0,
        cv_genes: int | None = 1000,
        precision: Precision = "float32",
        block_rows: int | None = None,
    ) -> None:
        self.k = k
        self.k_grid = k_grid
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.cv_genes = cv_genes
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

    def _chooses(self) -> bool:
        _check_k(self.k, "KNNGE")
        return self.k == "auto"

    def _k_grid(self, p: int) -> list[int]:
        grid = sorted({int(k) for k in self.k_grid if int(k) >= 1})
        if not grid:
            raise ConfigError(f"KNNGE: k_grid has no positive values: {self.k_grid!r}")
        return [k for k in grid if k <= p] or [p]

    def _fit_single(self, X: np.ndarray, Y: np.ndarray) -> None:
        self._fit_random_holdout(X, Y, self.validation_fraction, self.random_state)

    def _fit_holdout(self, train: GramStats, val: GramStats, final: GramStats) -> None:
        """Standardized validation MSE of each ``k``, then the fit on ``final``."""
        tg = train.centered()
        moments = val.moments_about(tg.mean_x, tg.mean_y)
        grid = self._k_grid(tg.cxx.shape[0])
        order = _neighbour_order(tg, max(grid))
        var_y = np.where(tg.cyy > 0, tg.cyy / tg.n, 1.0)
        mse = np.array([
            float((validation_sse(_knn_coef(tg, order, k), moments) / var_y).mean()) / val.n
            for k in grid
        ])
        self.validation_mse_ = mse
        self.k_ = grid[int(np.argmin(mse))]
        self.selection_ = selection_record("holdout", n_groups=1, grid=grid, scores=mse,
                                           score="standardized-mse")
        self._stats = final
        self._finish(final.centered())

    def _cv_prepare(self, full: CenteredGram) -> tuple[np.ndarray, None]:
        return np.asarray(self._k_grid(full.cxx.shape[0])), None

    def _cv_fold_scores(
        self, train: CenteredGram, held: list[HeldOutGroup], grid: np.ndarray, ctx: Any,
        n_total: int, genes: np.ndarray, floor: np.ndarray,
    ) -> Iterator[tuple[int, np.ndarray]]:
        kmax = int(grid.max())
        order = _neighbour_order(train, kmax)  # (kmax, S)
        sx = np.sqrt(np.diag(train.cxx))
        # the prediction of k neighbours is proportional to sum_i x_i / sx_i; r is blind
        # to the factor std_y / k
        with np.errstate(divide="ignore"):
            u = np.where(sx > 0, 1.0 / sx, 0.0)[order]  # (kmax, S)
        cols = np.arange(order.shape[1])
        for group in held:
            cov, var_p = _cumulative_neighbour_moments(group.gram, order, u, cols)
            scores = zscore_mse_from_moments(cov[grid - 1], var_p[grid - 1],
                                             group.gram.cyy[None, :],
                                             floor_y=floor[None, :] * group.gram.n)
            yield group.code, scores

    def _cv_solve(
        self, full: CenteredGram, grid: np.ndarray, ctx: Any, board: GroupScores,
        genes: np.ndarray,
    ) -> np.ndarray:
        self.k_ = int(grid[board.best()])
        return self._solve(full)


def _cumulative_neighbour_moments(
    gram: CenteredGram, order: np.ndarray, u: np.ndarray, cols: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Within-group cov(y, p_k) and var(p_k) of ``p_k = sum_{i<k} u_i x_order_i``, all k.

    ``order``/``u`` are (kmax, S); results are (kmax, S). Each gene's neighbour block of
    ``C_xx,g`` is gathered (S x kmax x kmax) and summed cumulatively, instead of a dense
    p x p by p x S product per ``k``.
    """
    idx = order.T  # (S, kmax)
    block = gram.cxx[idx[:, :, None], idx[:, None, :]]  # (S, kmax, kmax)
    ut = u.T
    block *= ut[:, :, None] * ut[:, None, :]
    # the sum over the leading k x k corner, for every k
    corner = block.cumsum(axis=1).cumsum(axis=2)
    kk = np.arange(idx.shape[1])
    var_p = corner[:, kk, kk].T
    cov = np.cumsum(u * gram.cxy[order, cols[None, :]], axis=0)
    return cov, var_p


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
        Number of neighbours or ``"auto"`` (default): the ``k_grid`` value with the best
        score: with ``groups`` (two or more studies) the study-aware cross-validation of
        :mod:`geneinfer.models.selection` (each held-out study's rows searched among the
        other studies' rows, within-group z-scored MSE); with ``X_val`` given, or else on a
        random hold-out, the standardized MSE.
    k_grid, validation_fraction, random_state
        As in :class:`KNNGE`.

    Attributes
    ----------
    k_ : int
    X_train_ : ndarray (n_samples, n_landmarks), float32, standardized
    Y_train_ : ndarray (n_samples, n_targets), float32
    mean_x_, scale_x_ : ndarray (n_landmarks,)
    validation_mse_ : ndarray (n_k,)
        Score of each ``k`` (with ``"auto"``; the study-aware score with groups).
    selection_ : dict
        Rule used, number of groups and folds, grid and scores (with ``"auto"``).
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

    def fit(
        self, X: Any, Y: Any, *, groups: Any = None, X_val: Any = None, Y_val: Any = None
    ) -> SampleKNN:
        """Store the standardized training profiles (choosing ``k`` first if ``"auto"``)."""
        _check_k(self.k, "SampleKNN")
        X, Y = self._validate_fit(X, Y)
        n_groups = n_distinct(groups, X.shape[0])
        mean = X.mean(axis=0, dtype=np.float64)
        std = X.std(axis=0, dtype=np.float64)
        scale = np.where(std > 0, std, 1.0)
        Z = ((X - mean) / scale).astype(np.float32)
        Yf = np.asarray(Y, dtype=np.float32)
        for key in ("validation_mse_", "selection_"):
            self.__dict__.pop(key, None)
        if self.k == "auto":
            self.validation_mse_, self.selection_ = self._choose_k(
                Z, Yf, groups, X_val, Y_val, mean, scale)
            self.selection_["n_groups"] = n_groups
            self.k_ = int(self.selection_["grid"][int(np.argmin(self.validation_mse_))])
        else:
            self.k_ = int(min(self.k, X.shape[0]))
        self.mean_x_, self.scale_x_ = mean, scale
        self.X_train_, self.Y_train_ = Z, Yf
        return self

    def _grid(self, n_train: int) -> list[int]:
        grid = sorted({min(int(k), n_train) for k in self.k_grid if int(k) >= 1})
        if not grid:
            raise ConfigError(f"SampleKNN: k_grid has no positive values: {self.k_grid!r}")
        return grid

    def _choose_k(
        self, Z: np.ndarray, Y: np.ndarray, groups: Any, X_val: Any, Y_val: Any,
        mean: np.ndarray, scale: np.ndarray,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """(score of each k, selection record) by the rule that applies."""
        if check_validation_pair(X_val, Y_val):
            Xv = self._validate_predict_like(X_val, Z.shape[1])
            Zv = ((Xv - mean) / scale).astype(np.float32)
            Yv = np.asarray(Y_val, dtype=np.float32).reshape(len(Zv), -1)
            grid = self._grid(len(Z))
            mse = self._holdout_mse(Z, Y, Zv, Yv, grid)
            return mse, selection_record("holdout", n_groups=1, grid=grid, scores=mse,
                                         score="standardized-mse", holdout="given")
        folds = plan_folds(groups, Z.shape[0])
        if folds is None:
            mask = validation_mask(Z.shape[0], self.validation_fraction, self.random_state)
            grid = self._grid(int((~mask).sum()))
            mse = self._holdout_mse(Z[~mask], Y[~mask], Z[mask], Y[mask], grid)
            return mse, selection_record("holdout", n_groups=1, grid=grid, scores=mse,
                                         score="standardized-mse", holdout="random")
        grid = self._grid(int(min(Z.shape[0] - folds.sizes[f].sum() for f in folds.folds)))
        board = GroupScores(len(grid), Y.shape[1])
        floor = constant_floor(Y.var(axis=0, dtype=np.float64))
        for fold in range(len(folds.folds)):
            held = folds.held_out(fold)
            for code, scores in self._fold_scores(Z[~held], Y[~held], Z[held], Y[held],
                                                  folds.codes[held], grid, floor):
                board.add(code, scores)
        scores = board.overall()
        return scores, selection_record(folds.method, n_groups=folds.n_groups, folds=folds,
                                        grid=grid, scores=scores, score="within-group-z-mse")

    def _validate_predict_like(self, X: Any, p: int) -> np.ndarray:
        X = check_array(X, dtype=(np.float32, np.float64), input_name="X_val")
        if X.shape[1] != p:
            raise ConfigError(f"X_val has {X.shape[1]} landmarks; expected {p} like X")
        return X

    @staticmethod
    def _neighbour_means(
        Ztr: np.ndarray, Ytr: np.ndarray, Zq: np.ndarray, grid: list[int]
    ) -> Iterator[tuple[slice, np.ndarray]]:
        """Per chunk of query rows: the mean target of the first k neighbours, every k."""
        nn = NearestNeighbors(n_neighbors=max(grid), algorithm="brute").fit(Ztr)
        idx = nn.kneighbors(Zq, return_distance=False)
        ks = np.asarray(grid)
        for rows in _chunks(len(idx), max(grid) * Ytr.shape[1]):
            csum = np.cumsum(Ytr[idx[rows]], axis=1, dtype=np.float64)  # (r, kmax, T)
            yield rows, np.moveaxis(csum[:, ks - 1, :] / ks[None, :, None], 1, 0)

    def _holdout_mse(
        self, Ztr: np.ndarray, Ytr: np.ndarray, Zval: np.ndarray, Yval: np.ndarray,
        grid: list[int],
    ) -> np.ndarray:
        """Standardized MSE of each k on the validation rows."""
        var = Ytr.var(axis=0, dtype=np.float64)
        inv_var = np.where(var > 0, 1.0 / np.where(var > 0, var, 1.0), 0.0)
        sse = np.zeros(len(grid))
        for rows, pred in self._neighbour_means(Ztr, Ytr, Zval, grid):
            sse += ((pred - Yval[rows]) ** 2 @ inv_var).sum(axis=1)
        return sse / (len(Zval) * Ytr.shape[1])

    def _fold_scores(
        self, Ztr: np.ndarray, Ytr: np.ndarray, Zq: np.ndarray, Yq: np.ndarray,
        codes: np.ndarray, grid: list[int], floor: np.ndarray,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Within-group z-scored MSE of each k on every held-out group of one fold."""
        for code in np.unique(codes):
            rows = codes == code
            moments = GroupMoments(len(grid), Ytr.shape[1])
            for chunk, pred in self._neighbour_means(Ztr, Ytr, Zq[rows], grid):
                moments.add(Yq[rows][chunk], pred)
            yield int(code), moments.scores(floor)

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
