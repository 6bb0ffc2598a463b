"""Principal component regression: PCA of the landmarks, then OLS on the leading components."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from geneinfer.errors import ConfigError
from geneinfer.models.classical import GramLinearModel
from geneinfer.models.gram import (
    CenteredGram,
    Eigenbasis,
    GramStats,
    Precision,
    blas_threads,
    coef_from_eigen,
    eigenbasis,
)
from geneinfer.models.gram_cv import HeldOutGroup
from geneinfer.models.selection import GroupScores, selection_record, zscore_mse_from_moments


class PCARegression(GramLinearModel):
    """PCA on the landmarks followed by per-gene OLS on the first ``n_components`` scores.

    The principal axes are the eigenvectors of ``X_c'X_c`` (the Gram matrix the OLS fit
    already needs), so the regression on ``k`` components is
    ``V_k diag(1/d_k) V_k' X_c'Y_c`` and every ``k`` can be scored at once: the
    predictions of successive ``k`` differ by one component, so their (co)variances with
    any data set's moments are cumulative sums (one p x p by p x S product per data set).
    With ``n_components="auto"`` the number is chosen, by the rule that applies:

    * ``groups`` with two or more studies: study-aware cross-validation
      (:mod:`geneinfer.models.selection`; each fold's eigenbasis from the total minus the
      held-out groups' sums, each held-out group scored from its own moments), on
      ``cv_genes`` random target genes;
    * ``X_val``/``Y_val`` given: the standardized validation MSE (fit on ``X`` alone);
    * otherwise generalized cross-validation (residual sum of squares of each ``k`` from
      the same eigenbasis, ``df = k + 1``), summed over genes.

    Equivalent to ``Pipeline([PCA(k), LinearRegression()])``.

    Parameters
    ----------
    n_components
        Number of components (int), or ``"auto"`` (default).
    max_components
        Largest ``k`` tried by ``"auto"`` (default: all, capped at ``n_samples - 2``).
    cv_genes, random_state
        Size and seed of the target-gene subset the study-aware curve is scored on
        (``None``: all).
    precision, rcond, block_rows
        As in :class:`geneinfer.models.linear.LinearRegression`.

    Attributes
    ----------
    coef_ : ndarray (n_targets, n_landmarks), float32
        The regression folded back onto the landmarks.
    components_ : ndarray (n_components_, n_landmarks)
        Principal axes, largest variance first.
    explained_variance_ : ndarray (n_components_,)
    n_components_ : int
    gcv_ : ndarray (max k,)
        Mean GCV score over genes of ``k = 1, 2, ...`` (``"auto"`` without groups).
    cv_scores_ : ndarray (max k, n_scored), float32
        Score of each ``k`` on each scored gene (groups or a validation set).
    selection_ : dict
        Rule used, number of groups and folds, grid and mean score of each ``k``.
    """

    name = "pcr"
    _selection_attrs = ("gcv_",)

    def __init__(
        self,
        *,
        n_components: int | str = "auto",
        max_components: int | None = None,
        cv_genes: int | None = 1000,
        random_state: int | None = 0,
        precision: Precision = "float32",
        rcond: float | None = None,
        block_rows: int | None = None,
    ) -> None:
        self.n_components = n_components
        self.max_components = max_components
        self.cv_genes = cv_genes
        self.random_state = random_state
        self.precision = precision
        self.rcond = rcond
        self.block_rows = block_rows

    def _chooses(self) -> bool:
        self._check_components()
        return self.n_components == "auto"

    def _check_components(self) -> None:
        k = self.n_components
        if k != "auto" and not (isinstance(k, (int, np.integer)) and not isinstance(k, bool)
                                and k >= 1):
            raise ConfigError(f"n_components must be a positive integer or 'auto', got {k!r}")

    def _top(self, basis: Eigenbasis, n: int) -> int:
        """Largest ``k`` that ``"auto"`` tries."""
        top = min(int(basis.keep.sum()), max(1, n - 2))
        if self.max_components is not None:
            top = min(top, int(self.max_components))
        return top

    def _solve(self, gram: CenteredGram) -> np.ndarray:
        self._check_components()
        basis = eigenbasis(gram, rcond=self.rcond, precision=self.precision)
        if self.n_components == "auto":
            order = np.argsort(basis.d)[::-1]
            top = self._top(basis, gram.n)
            k = self._choose(basis.d[order][:top], basis.Q[order][:top] ** 2, gram)
        else:
            k = int(self.n_components)
        return self._solve_k(gram, basis, k)

    def _solve_k(self, gram: CenteredGram, basis: Eigenbasis, k: int) -> np.ndarray:
        """Coefficients (p, T) of the regression on the first ``k`` components."""
        order = np.argsort(basis.d)[::-1]  # largest variance first
        k = int(min(k, basis.keep.sum()))
        use = np.zeros(basis.d.shape, dtype=bool)
        use[order[:k]] = True
        basis.keep &= use
        self.n_components_ = k
        self.components_ = np.ascontiguousarray(basis.V[:, order[:k]].T)
        self.explained_variance_ = basis.d[order][:k] / max(gram.n - 1, 1)
        safe = np.where(basis.keep, basis.d, 1.0)
        return coef_from_eigen(basis, 1.0 / safe)

    def _choose(self, d: np.ndarray, q2: np.ndarray, gram: CenteredGram) -> int:
        """GCV-best number of components (1-based) from the sorted eigenvalues."""
        if d.size == 0:
            return 0
        explained = np.cumsum(q2 / d[:, None], axis=0)  # (k, T)
        rss = np.maximum(gram.cyy[None, :] - explained, 0.0)
        df = np.arange(1, d.size + 1) + 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            gcv = (rss / gram.n) / ((1.0 - df / gram.n) ** 2)[:, None]
        gcv[df >= gram.n] = np.inf
        self.gcv_ = gcv.mean(axis=1)
        self.selection_ = selection_record("gcv", n_groups=1, grid=np.arange(1, d.size + 1),
                                           scores=self.gcv_, score="gcv")
        return int(np.argmin(self.gcv_)) + 1

    def _sorted_weights(self, basis: Eigenbasis, top: int) -> tuple[np.ndarray, np.ndarray]:
        """First ``top`` axes (largest variance first) and OLS weights on their scores."""
        order = np.argsort(basis.d)[::-1][:top]
        keep = basis.keep[order]
        w = np.where(keep[:, None], basis.Q[order] / np.where(keep, basis.d[order], 1.0)[:, None],
                     0.0)
        return basis.V[:, order], w

    def _fit_holdout(self, train: GramStats, val: GramStats, final: GramStats) -> None:
        tg = train.centered()
        basis = eigenbasis(tg, rcond=self.rcond, precision=self.precision)
        top = self._top(basis, tg.n)
        genes = self._cv_genes(tg.cxy.shape[1])
        mom = val.moments_about(tg.mean_x, tg.mean_y)
        axes, w = self._sorted_weights(basis, top)
        cross, quad = _cumulative_moments(axes, w[:, genes], mom.sxx, mom.sxy[:, genes],
                                          self.precision)
        var_y = np.where(tg.cyy[genes] > 0, tg.cyy[genes] / tg.n, 1.0)
        mse = np.maximum(mom.syy[genes] - 2 * cross + quad, 0.0) / (max(val.n, 1) * var_y)
        mean = mse.mean(axis=1)
        k = int(np.argmin(mean)) + 1
        self.cv_scores_ = mse.astype(np.float32)
        self.cv_genes_ = genes.astype(np.int64)
        self.selection_ = selection_record("holdout", n_groups=1, grid=np.arange(1, top + 1),
                                           scores=mean, score="standardized-mse",
                                           genes_scored=len(genes))
        gram = final.centered()
        basis = eigenbasis(gram, rcond=self.rcond, precision=self.precision)
        self._stats = final
        self._set_coefficients(gram, self._solve_k(gram, basis, k))

    def _cv_prepare(self, full: CenteredGram) -> tuple[np.ndarray, Eigenbasis]:
        basis = eigenbasis(full, rcond=self.rcond, precision=self.precision)
        return np.arange(1, max(self._top(basis, full.n), 1) + 1), basis

    def _cv_fold_scores(
        self, train: CenteredGram, held: list[HeldOutGroup], grid: np.ndarray, ctx: Any,
        n_total: int, genes: np.ndarray, floor: np.ndarray,
    ) -> Iterator[tuple[int, np.ndarray]]:
        basis = eigenbasis(train, rcond=self.rcond, precision=self.precision)
        axes, w = self._sorted_weights(basis, len(grid))
        # a fold of lower rank repeats its last model for the larger k
        pad = len(grid) - w.shape[0]
        if pad > 0:
            axes = np.hstack([axes, np.zeros((axes.shape[0], pad))])
            w = np.vstack([w, np.zeros((pad, w.shape[1]))])
        for group in held:
            cov, var_p = _cumulative_moments(axes, w, group.gram.cxx, group.gram.cxy,
                                             self.precision)
            yield group.code, zscore_mse_from_moments(
                cov, var_p, group.gram.cyy[None, :], floor_y=floor[None, :] * group.gram.n)

    def _cv_solve(
        self, full: CenteredGram, grid: np.ndarray, ctx: Eigenbasis, board: GroupScores,
        genes: np.ndarray,
    ) -> np.ndarray:
        return self._solve_k(full, ctx, int(grid[board.best()]))

    def component_scores(self, X: Any) -> np.ndarray:
        """Principal component scores of ``X`` (n_samples x n_components_)."""
        X = self._validate_predict(X)
        return ((X - self.mean_x_) @ self.components_.T).astype(np.float32)


def _cumulative_moments(
    axes: np.ndarray, w: np.ndarray, sxx: np.ndarray, sxy: np.ndarray, precision: Precision
) -> tuple[np.ndarray, np.ndarray]:
    """``b_k'sxy`` and ``b_k'sxx b_k`` (each (K, S)) for ``b_k = axes[:, :k] w[:k]``, all k.

    In the basis of the axes, ``M = A'sxx A`` and ``R = A'sxy``; adding component ``k``
    adds ``w_k R_k`` to the cross term and ``2 w_k (L w)_k + M_kk w_k^2`` to the quadratic
    one (``L`` = strictly lower triangle of ``M``): one p x K by K x S product for all k.
    """
    dtype = np.dtype(precision)
    with blas_threads(2.0 * axes.size * axes.shape[0]):
        M = axes.T @ (sxx @ axes)
    R = axes.T @ sxy
    with blas_threads(2.0 * M.size * w.shape[1]):
        lw = np.tril(M, -1).astype(dtype) @ w.astype(dtype)
    cross = np.cumsum(w * R, axis=0)
    quad = np.cumsum(2.0 * w * lw + np.diag(M)[:, None] * w * w, axis=0)
    return cross, quad
