"""Linear baselines: per-gene OLS as LINCS does it, ridge with built-in alpha choice, lasso.

All targets are fitted together from the Gram statistics (``X'X``, ``X'Y``) of
:mod:`geneinfer.models.gram`: the data is read once, in row blocks, and the per-gene
problems become small dense linear algebra on ``n_landmarks x n_targets`` matrices. Each
target's model is the same as fitting it alone (with an intercept), as in LINCS/CMap's
per-gene OLS inference of the non-landmark genes.

``coef_`` follows scikit-learn: shape ``(n_targets, n_landmarks)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from geneinfer.errors import ConfigError
from geneinfer.models.classical import GramLinearModel
from geneinfer.models.gram import (
    CenteredGram,
    Eigenbasis,
    GramStats,
    Moments,
    Precision,
    blas_threads,
    coef_from_eigen,
    eigenbasis,
    one_blas_thread,
    pinv_solve,
    residual_ss_perp,
    validation_sse,
)
from geneinfer.models.gram_cv import (
    GroupedGramStats,
    HeldOutGroup,
    RidgeFoldScorer,
    score_coefficients,
)
from geneinfer.models.selection import (
    GroupScores,
    nan_mean,
    selection_record,
    zscore_mse_from_moments,
)

#: default ridge grid, relative to the mean eigenvalue of X_c'X_c (= n * mean landmark
#: variance), so that it suits any number of samples and any expression scale
DEFAULT_RELATIVE_ALPHAS = np.logspace(-4, 2, 13)


class LinearRegression(GramLinearModel):
    """Ordinary least squares for every target gene at once (LINCS's per-gene OLS).

    Each target gets its own intercept and coefficients over all landmarks. The solution is
    the pseudo-inverse (minimum-norm) one, as ``numpy.linalg.lstsq``/scikit-learn give when
    there are fewer samples than landmarks or collinear landmarks.

    Parameters
    ----------
    precision
        ``"float32"``: block products in float32 about a shift, summed in float64 (fast,
        see :mod:`geneinfer.models.gram`); ``"float64"``: all in float64.
    rcond
        Eigenvalues of ``X_c'X_c`` below ``rcond * largest`` are treated as zero. Default:
        1e-6 for float32, 1e-12 for float64 (the rounding-noise level of each).
    block_rows
        Rows per block when fitting in-memory data (default: ~256 MB of targets per block).

    Attributes
    ----------
    coef_ : ndarray (n_targets, n_landmarks), float32
    intercept_ : ndarray (n_targets,)
    mean_x_, mean_y_ : ndarray
    rank_ : int
        Number of eigen-directions used (the numerical rank of the centred landmarks).
    """

    name = "ols"

    def __init__(
        self,
        *,
        precision: Precision = "float32",
        rcond: float | None = None,
        block_rows: int | None = None,
    ) -> None:
        self.precision = precision
        self.rcond = rcond
        self.block_rows = block_rows

    def _solve(self, gram: CenteredGram) -> np.ndarray:
        coef, self.rank_ = pinv_solve(gram, rcond=self.rcond, precision=self.precision)
        return coef


class Ridge(GramLinearModel):
    """Ridge regression for all targets; alpha chosen over studies, on a validation set or by GCV.

    One eigendecomposition ``X_c'X_c = V diag(d) V'`` and one product ``Q = V'X_c'Y_c``
    serve every alpha and every gene.

    Choosing alpha (``selection_["method"]`` records which rule ran):

    * ``groups`` with two or more studies of 3+ rows: **study-aware cross-validation**
      (leave-one-group-out, or group K-fold above 10 groups; see
      :mod:`geneinfer.models.selection`). Each fold's statistics are the total minus the
      held-out groups' sums, accumulated per group in the same pass over the data
      (:mod:`geneinfer.models.gram_cv`); one eigendecomposition per fold serves all alphas,
      and each held-out group is scored by the within-group z-scored MSE ``2 (1 - r)``
      from its own centred moments (all alphas of a group at the cost of about two
      products, see :class:`geneinfer.models.gram_cv.RidgeFoldScorer`). The curve is
      scored on ``cv_genes`` random target genes (alpha is one number for all genes), the
      final model is fitted on every row.
      A fold fitted on ``n_f`` of the ``n`` rows uses ``alpha * n_f / n``: the same penalty
      per row as the final fit.
    * ``X_val``/``Y_val`` given: the alpha with the smallest validation MSE (each gene's
      MSE divided by its training variance, averaged), fitted on ``X`` alone.
    * otherwise **GCV**: for each alpha the residual sum of squares is
      ``RSS_ols + sum_j Q_j^2 alpha^2 / (d_j (d_j + alpha)^2)`` and the effective degrees
      of freedom ``1 + sum_j d_j / (d_j + alpha)``, so GCV(alpha) =
      ``(RSS / n) / (1 - df / n)^2`` is computed for all alphas and genes with an
      ``n_alphas x n_landmarks`` by ``n_landmarks x n_targets`` product and no residual
      matrix: choosing alpha costs little more than the OLS fit. It is the
      rotation-invariant version of leave-one-out, so it rewards fitting each study's own
      structure when the rows come from few studies.

    Parameters
    ----------
    alphas
        Penalties (absolute, as in ``sklearn.linear_model.Ridge``: the loss is
        ``||y - Xb||^2 + alpha ||b||^2``). Default ``None``: 13 values
        ``logspace(-4, 2, 13)`` times the mean eigenvalue of ``X_c'X_c``.
    alpha_per_gene
        Choose alpha separately for each target instead of one alpha for all (with groups,
        every gene is then scored: per-group sums of all targets, ``n_groups`` times the
        memory of ``X'Y``).
    cv_genes
        Number of target genes (seeded random subset) the study-aware curve is scored on;
        ``None``: all. The validation-set rule uses the same subset.
    random_state
        Seed of that subset.
    precision, rcond, block_rows
        As in :class:`LinearRegression`.

    Attributes
    ----------
    coef_ : ndarray (n_targets, n_landmarks), float32
    intercept_ : ndarray (n_targets,)
    alpha_ : float or ndarray (n_targets,)
        The chosen penalty (an array when ``alpha_per_gene``).
    alphas_ : ndarray (n_alphas,)
        The absolute penalties tried.
    selection_ : dict
        Rule used (``"gcv"``, ``"holdout"``, ``"leave-one-group-out"``, ``"group-k-fold"``),
        number of groups and folds, the grid and the mean score of each alpha.
    gcv_ : ndarray (n_alphas, n_targets), float32
        (GCV) Score (mean squared leave-one-out error estimate) of each alpha and gene.
    gcv_mean_ : ndarray (n_alphas,)
        (GCV) Mean over genes: the curve that picks ``alpha_`` when not per gene.
    cv_scores_ : ndarray (n_alphas, n_scored), float32
        (groups or validation set) Score of each alpha on each scored gene.
    cv_genes_ : ndarray (n_scored,)
        Target columns scored.
    """

    name = "ridge"
    _selection_attrs = ("gcv_", "gcv_mean_")

    def __init__(
        self,
        *,
        alphas: Any = None,
        alpha_per_gene: bool = False,
        cv_genes: int | None = 1000,
        random_state: int | None = 0,
        precision: Precision = "float32",
        rcond: float | None = None,
        block_rows: int | None = None,
    ) -> None:
        self.alphas = alphas
        self.alpha_per_gene = alpha_per_gene
        self.cv_genes = cv_genes
        self.random_state = random_state
        self.precision = precision
        self.rcond = rcond
        self.block_rows = block_rows

    def _alpha_grid(self, d: np.ndarray) -> np.ndarray:
        if self.alphas is None:
            scale = float(d.mean()) if d.size and d.mean() > 0 else 1.0
            return DEFAULT_RELATIVE_ALPHAS * scale
        alphas = np.atleast_1d(np.asarray(self.alphas, dtype=np.float64))
        if alphas.ndim != 1 or alphas.size == 0 or not np.all(np.isfinite(alphas)) or np.any(
            alphas < 0
        ):
            raise ConfigError(f"ridge alphas must be non-negative numbers, got {self.alphas!r}")
        return alphas

    def _chooses(self) -> bool:
        return self.alphas is None or np.size(self.alphas) > 1

    # ---- GCV (one group, partial_fit, fit_blocks) ---------------------------------------
    def _solve(self, gram: CenteredGram) -> np.ndarray:
        basis = eigenbasis(gram, rcond=self.rcond, precision=self.precision)
        alphas = self._alpha_grid(basis.d)
        gcv = gcv_curve(basis, gram, alphas)
        self.alphas_ = alphas
        self.gcv_ = gcv.astype(np.float32)
        with np.errstate(invalid="ignore"):
            self.gcv_mean_ = gcv.mean(axis=1)
        if self.alpha_per_gene:
            best = _argmin_finite(gcv, axis=0)
        else:
            best = int(_argmin_finite(self.gcv_mean_[:, None], axis=0)[0])
        self.selection_ = selection_record("gcv", n_groups=1, grid=alphas,
                                           scores=self.gcv_mean_, score="gcv")
        return self._coef_at(basis, alphas, best)

    def _coef_at(self, basis: Eigenbasis, alphas: np.ndarray, best: Any) -> np.ndarray:
        """Coefficients (p, T) at grid index ``best`` (an int, or one per gene); sets alpha_."""
        safe_d = np.where(basis.keep, basis.d, 1.0)
        if np.ndim(best):
            alpha = alphas[np.asarray(best)]
            self.alpha_ = alpha
            scale = 1.0 / (safe_d[:, None] + alpha[None, :])
        else:
            self.alpha_ = float(alphas[int(best)])
            scale = 1.0 / (safe_d + self.alpha_)
        return coef_from_eigen(basis, scale)

    def _choose(self, board_or_scores: Any) -> Any:
        """Grid index (or one per gene) from a score board."""
        return board_or_scores.best_per_gene() if self.alpha_per_gene else board_or_scores.best()

    # ---- a given validation set ------------------------------------------------------
    def _fit_holdout(self, train: GramStats, val: GramStats, final: GramStats) -> None:
        tg = train.centered()
        basis = eigenbasis(tg, rcond=self.rcond, precision=self.precision)
        alphas = self._alpha_grid(basis.d)
        genes = self._cv_genes(tg.cxy.shape[1])
        mom = val.moments_about(tg.mean_x, tg.mean_y)
        mom = Moments(mom.n, mom.sxx, mom.sxy[:, genes], mom.syy[genes])
        sub = Eigenbasis(basis.d, basis.V, basis.Q[:, genes], basis.keep)
        safe_d = np.where(basis.keep, basis.d, 1.0)
        var_y = np.where(tg.cyy[genes] > 0, tg.cyy[genes] / tg.n, 1.0)
        mse = np.vstack([validation_sse(coef_from_eigen(sub, 1.0 / (safe_d + a)), mom)
                         / (max(val.n, 1) * var_y) for a in alphas])
        board = _ScoreTable(mse)
        if final is not train:
            tg = final.centered()
            basis = eigenbasis(tg, rcond=self.rcond, precision=self.precision)
        coef = self._coef_at(basis, alphas, self._choose(board))
        self.alphas_ = alphas
        self.cv_scores_ = mse.astype(np.float32)
        self.cv_genes_ = genes.astype(np.int64)
        self.selection_ = selection_record("holdout", n_groups=1, grid=alphas,
                                           scores=board.overall(), score="standardized-mse",
                                           genes_scored=len(genes))
        self._stats = final
        self._set_coefficients(tg, coef)

    # ---- study-aware cross-validation --------------------------------------------------
    def _cv_prepare(self, full: CenteredGram) -> tuple[np.ndarray, Eigenbasis]:
        basis = eigenbasis(full, rcond=self.rcond, precision=self.precision)
        return self._alpha_grid(basis.d), basis

    def _cv_fold_scores(
        self, train: CenteredGram, held: list[HeldOutGroup], grid: np.ndarray, ctx: Any,
        n_total: int, genes: np.ndarray, floor: np.ndarray,
    ) -> Iterator[tuple[int, np.ndarray]]:
        basis = eigenbasis(train, rcond=self.rcond, precision=self.precision)
        # the same penalty per row as the final fit
        scorer = RidgeFoldScorer(basis, grid * (train.n / n_total))
        for group in held:
            cov, var_p = scorer.moments(group.gram)
            yield group.code, zscore_mse_from_moments(
                cov, var_p, group.gram.cyy[None, :], floor_y=floor[None, :] * group.gram.n)

    def _cv_solve(
        self, full: CenteredGram, grid: np.ndarray, ctx: Eigenbasis, board: GroupScores,
        genes: np.ndarray,
    ) -> np.ndarray:
        self.alphas_ = grid
        return self._coef_at(ctx, grid, self._choose(board))


class _ScoreTable:
    """A (candidates x genes) table of one validation set's scores, with GroupScores' API."""

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = scores

    def overall(self) -> np.ndarray:
        return nan_mean(self.scores, axis=1)

    def best(self) -> int:
        return int(_argmin_finite(self.overall()[:, None], axis=0)[0])

    def best_per_gene(self) -> np.ndarray:
        return _argmin_finite(self.scores, axis=0)


def gcv_curve(basis: Any, gram: CenteredGram, alphas: np.ndarray) -> np.ndarray:
    """GCV score (n_alphas x n_targets) of ridge with each alpha, from the eigenbasis."""
    n = gram.n
    keep = basis.keep
    d = np.where(keep, basis.d, 1.0)
    a = alphas[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        extra_w = np.where(keep[None, :], a**2 / (d * (d + a) ** 2), 0.0)  # (A, p)
        df = 1.0 + np.where(keep[None, :], d / (d + a), 0.0).sum(axis=1)  # (A,)
    rss = residual_ss_perp(basis, gram)[None, :] + extra_w @ (basis.Q**2)
    denom = (1.0 - df / n) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        gcv = (rss / n) / denom[:, None]
    gcv[df >= n - 1e-9] = np.inf
    return gcv


def _argmin_finite(values: np.ndarray, axis: int) -> np.ndarray:
    """argmin treating NaN as +inf."""
    return np.argmin(np.where(np.isnan(values), np.inf, values), axis=axis)


# ====================================================================== lasso
class Lasso(GramLinearModel):
    """Per-gene lasso for all targets at once, alpha chosen over studies or on a held-out split.

    Minimises ``(1/(2n)) ||y - b0 - X b||^2 + alpha ||b||_1`` for every target (the
    scikit-learn ``Lasso`` objective) by FISTA with adaptive restart on the Gram matrices,
    vectorised over targets: one iteration is one ``(p x p) @ (p x T)`` product. Genes
    whose duality gap is below ``tol * ||y_c||^2`` (scikit-learn's criterion) leave the
    active set. Alphas run from each gene's ``alpha_max`` (where all coefficients are zero)
    downwards with warm starts.

    Choosing alpha (a grid index shared by all genes unless ``alpha_per_gene``):

    * ``groups`` with two or more studies: study-aware cross-validation as for
      :class:`Ridge` (the path is fitted on each fold's statistics, total minus held-out
      groups, for ``cv_genes`` random genes, and scored by the within-group z-scored MSE of
      each held-out group from its own moments). The penalty of the scikit-learn objective
      is already per row, so folds use the grid as it is.
    * ``X_val``/``Y_val`` given: the path is fitted on ``X`` and scored by the validation
      squared error; the final model is fitted on ``X``.
    * otherwise ``validation_fraction`` of the samples are held out; the path is fitted
      on the rest and the held-out squared error of every alpha is computed from the
      held-out Gram matrices.

    The path is then refitted on all training samples and stopped at the chosen alpha.
    With a fixed ``alpha`` the model fits that penalty directly (and supports
    ``partial_fit``/``fit_blocks``).

    Parameters
    ----------
    alpha
        Fixed penalty for every gene; ``None`` (default) chooses it.
    n_alphas, eps
        Default grid per gene: ``n_alphas`` values from ``alpha_max`` down to
        ``eps * alpha_max`` (log-spaced), ``alpha_max = max_j |x_j'y_c| / n``.
    alphas
        Explicit grid (absolute values shared by all genes) instead.
    alpha_per_gene
        Choose a grid point per gene (default: the grid index with the smallest held-out
        error summed over genes).
    validation_fraction, random_state
        Size and seed of the held-out split (and seed of the ``cv_genes`` subset).
    cv_genes
        Number of target genes (seeded random subset) the study-aware curve is scored on;
        ``None``: all (always all with ``alpha_per_gene``).
    max_iter, tol
        FISTA iterations per alpha and duality-gap tolerance.

    Attributes
    ----------
    coef_ : ndarray (n_targets, n_landmarks), float32
    alpha_ : ndarray (n_targets,)
        Chosen penalty of each gene.
    alphas_ : ndarray (n_alphas, n_targets)
        Grid of each gene (absolute).
    validation_mse_ : ndarray (n_alphas, n_targets), float32
        (hold-out) Mean squared error per grid point and gene (absent with a fixed alpha).
    cv_scores_ : ndarray (n_alphas, n_scored), float32
        (groups) Within-group z-scored MSE per grid point and scored gene (``cv_genes_``).
    selection_ : dict
        Rule used, number of groups and folds, grid (ratios to each gene's ``alpha_max``
        with the default grid) and mean score per grid point.
    n_iter_ : int
        Total FISTA iterations.
    """

    name = "lasso"

    def __init__(
        self,
        *,
        alpha: float | None = None,
        n_alphas: int = 10,
        eps: float = 1e-3,
        alphas: Any = None,
        alpha_per_gene: bool = False,
        validation_fraction: float = 0.2,
        random_state: int | None = 0,
        cv_genes: int | None = 1000,
        max_iter: int = 2000,
        tol: float = 1e-4,
        precision: Precision = "float32",
        block_rows: int | None = None,
    ) -> None:
        self.alpha = alpha
        self.n_alphas = n_alphas
        self.eps = eps
        self.alphas = alphas
        self.alpha_per_gene = alpha_per_gene
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.cv_genes = cv_genes
        self.max_iter = max_iter
        self.tol = tol
        self.precision = precision
        self.block_rows = block_rows

    def _can_partial_fit(self) -> bool:
        # partial_fit / fit_blocks exist only with a fixed alpha
        return self.alpha is not None

    # fixed alpha: the generic Gram fit (fit / partial_fit / fit_blocks)
    def _solve(self, gram: CenteredGram) -> np.ndarray:
        if self.alpha is None:
            raise ConfigError(
                "Lasso.partial_fit/fit_blocks need a fixed alpha (alpha=None chooses it on a "
                "held-out split, which only fit() can do)"
            )
        if not np.isfinite(self.alpha) or self.alpha < 0:
            raise ConfigError(f"lasso alpha must be a non-negative number, got {self.alpha!r}")
        amax = _alpha_max(gram)
        path = np.geomspace(np.maximum(amax, self.alpha), max(self.alpha, 1e-300), num=6)
        path[-1] = self.alpha  # exact target (alpha may be 0)
        solver = _GramLasso(gram, self.max_iter, self.tol)
        coef = np.zeros_like(gram.cxy)
        for row in path:
            coef = solver.solve(row, coef)
        self._record(solver, np.full(gram.cxy.shape[1], float(self.alpha)))
        return coef

    def _record(self, solver: _GramLasso, alpha: np.ndarray) -> None:
        self.alpha_ = alpha
        self.n_iter_ = solver.n_iter
        if solver.not_converged:
            warnings.warn(
                f"lasso did not converge for {solver.not_converged} gene fits within "
                f"max_iter={self.max_iter}; raise max_iter or tol",
                ConvergenceWarning,
                stacklevel=3,
            )

    def _chooses(self) -> bool:
        return self.alpha is None

    def _fit_single(self, X: np.ndarray, Y: np.ndarray) -> None:
        self._fit_random_holdout(X, Y, self.validation_fraction, self.random_state)

    def _fit_holdout(self, train: GramStats, val: GramStats, final: GramStats) -> None:
        """Path on ``train`` scored by the squared error on ``val``; refit on ``final``."""
        full_gram = final.centered()
        grid = self._grid(full_gram)
        train_gram = train.centered()
        moments = val.moments_about(train_gram.mean_x, train_gram.mean_y)
        solver = _GramLasso(train_gram, self.max_iter, self.tol)
        coef = np.zeros_like(train_gram.cxy)
        sse = np.empty_like(grid)
        for k, row in enumerate(grid):
            coef = solver.solve(row, coef)
            sse[k] = validation_sse(coef, moments)
        mse = sse / max(val.n, 1)
        if self.alpha_per_gene:
            best = _argmin_finite(mse, axis=0)
        else:
            best = np.full(grid.shape[1], _argmin_finite(mse.sum(axis=1), axis=0))
        self.validation_mse_ = mse.astype(np.float32)
        self.selection_ = selection_record("holdout", n_groups=1, grid=self._grid_values(grid),
                                           scores=mse.mean(axis=1), score="mse")
        self._final_path(final, full_gram, grid, best, [solver])

    def _final_path(
        self, stats: GramStats, gram: CenteredGram, grid: np.ndarray, best: np.ndarray,
        solvers: list[_GramLasso],
    ) -> None:
        """Path on all training rows, each gene stopped at its chosen grid index."""
        final = _GramLasso(gram, self.max_iter, self.tol)
        coef = np.zeros_like(gram.cxy)
        chosen = np.zeros_like(coef)
        for k in range(int(best.max()) + 1):
            coef = final.solve(grid[k], coef)
            chosen[:, best == k] = coef[:, best == k]
        for solver in solvers:
            final.n_iter += solver.n_iter
            final.not_converged += solver.not_converged
        self._record(final, grid[best, np.arange(grid.shape[1])])
        self.alphas_ = grid
        self._stats = stats
        self._set_coefficients(gram, chosen)

    def _fit_from_groups(self, stats: GroupedGramStats) -> None:
        self._solvers: list[_GramLasso] = []
        try:
            super()._fit_from_groups(stats)
        finally:
            del self._solvers

    def _cv_prepare(self, full: CenteredGram) -> tuple[np.ndarray, None]:
        return self._grid(full), None

    def _cv_fold_scores(
        self, train: CenteredGram, held: list[HeldOutGroup], grid: np.ndarray, ctx: Any,
        n_total: int, genes: np.ndarray, floor: np.ndarray,
    ) -> Iterator[tuple[int, np.ndarray]]:
        solver = _GramLasso(train, self.max_iter, self.tol)
        self._solvers.append(solver)
        coef = np.zeros_like(train.cxy)
        path = np.empty((coef.shape[0], len(grid), coef.shape[1]))
        for k, row in enumerate(grid):
            coef = solver.solve(row[genes], coef)
            path[:, k] = coef
        for group in held:
            yield group.code, score_coefficients(path, group.gram, floor,
                                                 precision=self.precision)

    def _cv_solve(
        self, full: CenteredGram, grid: np.ndarray, ctx: Any, board: GroupScores,
        genes: np.ndarray,
    ) -> np.ndarray:
        if self.alpha_per_gene:
            best = board.best_per_gene()
        else:
            best = np.full(grid.shape[1], board.best())
        self._final_path(self._stats, full, grid, best, self._solvers)
        return self.coef_.T.astype(np.float64)

    def _grid_values(self, grid: np.ndarray) -> Any:
        if self.alphas is not None:
            return grid[:, 0]
        return np.logspace(0, np.log10(self.eps), self.n_alphas)

    def _grid(self, gram: CenteredGram) -> np.ndarray:
        t = gram.cxy.shape[1]
        if self.alphas is not None:
            alphas = np.sort(np.atleast_1d(np.asarray(self.alphas, dtype=np.float64)))[::-1]
            if alphas.ndim != 1 or not np.all(np.isfinite(alphas)) or np.any(alphas < 0):
                raise ConfigError(f"lasso alphas must be non-negative numbers: {self.alphas!r}")
            return np.repeat(alphas[:, None], t, axis=1)
        if self.n_alphas < 1 or not 0 < self.eps < 1:
            raise ConfigError(
                f"need n_alphas >= 1 and 0 < eps < 1, got {self.n_alphas}, {self.eps}"
            )
        amax = np.maximum(_alpha_max(gram), 1e-12)
        ratios = np.logspace(0, np.log10(self.eps), self.n_alphas)
        return ratios[:, None] * amax[None, :]


def _alpha_max(gram: CenteredGram) -> np.ndarray:
    """Smallest alpha with an all-zero solution, per gene."""
    return np.abs(gram.cxy).max(axis=0) / gram.n


class _GramLasso:
    """FISTA with adaptive restart for many lasso problems sharing ``X_c'X_c``.

    Works on ``f(b) = 0.5 b'Cb - c'b + n alpha ||b||_1`` (n times the scikit-learn
    objective), Lipschitz constant ``max eig(C)``.
    """

    def __init__(self, gram: CenteredGram, max_iter: int, tol: float) -> None:
        self.C = gram.cxx
        self.ct = np.ascontiguousarray(gram.cxy.T)  # targets x landmarks
        self.cyy = gram.cyy
        self.n = gram.n
        with one_blas_thread():
            self.L = max(float(np.linalg.eigvalsh(self.C)[-1]), 1e-300)
        self.max_iter = max_iter
        self.tol = tol
        self.n_iter = 0
        self.not_converged = 0

    def _gap(
        self, b: np.ndarray, cb: np.ndarray, c: np.ndarray, cyy: np.ndarray, lam: np.ndarray
    ) -> np.ndarray:
        """Duality gap (scikit-learn's formula) of targets-by-landmarks ``b``; ``cb = b C``."""
        bc = np.einsum("tp,tp->t", b, c)
        rr = np.maximum(cyy - 2 * bc + np.einsum("tp,tp->t", b, cb), 0.0)
        ry = cyy - bc
        dual = np.abs(c - cb).max(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            const = np.where(dual > lam, lam / dual, 1.0)
        return 0.5 * rr * (1 + const**2) + lam * np.abs(b).sum(axis=1) - const * ry

    def solve(self, alpha: np.ndarray, start: np.ndarray) -> np.ndarray:
        """Minimise for per-gene penalties ``alpha`` (T,), warm-started at ``start`` (p x T)."""
        p, t = start.shape
        # thousands of small GEMMs: BLAS threads cost more than they give
        with blas_threads(2.0 * p * p * t):
            return self._solve(alpha, start)

    def _solve(self, alpha: np.ndarray, start: np.ndarray) -> np.ndarray:
        """FISTA iterations.

        Works on targets-by-landmarks copies of only the genes not yet converged, so that
        each iteration is one GEMM plus a few contiguous element-wise passes.
        """
        out = start.T.copy()  # (T, p)
        lam_all = self.n * np.asarray(alpha, dtype=np.float64)
        active = np.arange(out.shape[0])
        B = out.copy()
        Z = out.copy()
        t = np.ones(out.shape[0])
        c = self.ct.copy()
        cyy = self.cyy.copy()
        lam = lam_all.copy()
        thr = (lam / self.L)[:, None]
        inv_l = 1.0 / self.L
        for it in range(1, self.max_iter + 1):
            if active.size == 0:
                break
            step = Z @ self.C
            step -= c
            step *= -inv_l
            step += Z  # Z - grad / L
            Bn = step - np.clip(step, -thr, thr)  # soft threshold
            # adaptive restart (O'Donoghue & Candes): drop momentum that points uphill
            Z -= Bn
            diff = Bn - B
            restart = np.einsum("tp,tp->t", Z, diff) > 0
            t = np.where(restart, 1.0, t)
            tn = 0.5 * (1 + np.sqrt(1 + 4 * t**2))
            Z = Bn + ((t - 1) / tn)[:, None] * diff
            B, t = Bn, tn
            self.n_iter += 1
            if it % 10 == 0 or it == self.max_iter:
                gap = self._gap(B, B @ self.C, c, cyy, lam)
                done = gap <= self.tol * np.maximum(cyy, 1e-300)
                if done.any():
                    out[active[done]] = B[done]
                    keep = ~done
                    active, B, Z, t = active[keep], B[keep], Z[keep], t[keep]
                    c, cyy, lam, thr = c[keep], cyy[keep], lam[keep], thr[keep]
        out[active] = B
        self.not_converged += int(active.size)
        return out.T
