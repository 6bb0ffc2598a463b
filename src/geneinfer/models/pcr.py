"""Principal component regression: PCA of the landmarks, then OLS on the leading components."""

from __future__ import annotations

from typing import Any

import numpy as np

from geneinfer.errors import ConfigError
from geneinfer.models.classical import GramLinearModel
from geneinfer.models.gram import CenteredGram, Precision, coef_from_eigen, eigenbasis


class PCARegression(GramLinearModel):
    """PCA on the landmarks followed by per-gene OLS on the first ``n_components`` scores.

    The principal axes are the eigenvectors of ``X_c'X_c`` (the Gram matrix the OLS fit
    already needs), so the regression on ``k`` components is
    ``V_k diag(1/d_k) V_k' X_c'Y_c`` and every ``k`` can be scored at once.
    With ``n_components="auto"`` the number is chosen by generalized cross-validation
    (residual sum of squares of each ``k`` from the same eigenbasis, ``df = k + 1``),
    summed over genes. Equivalent to ``Pipeline([PCA(k), LinearRegression()])``.

    Parameters
    ----------
    n_components
        Number of components (int), or ``"auto"`` (default).
    max_components
        Largest ``k`` tried by ``"auto"`` (default: all, capped at ``n_samples - 2``).
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
        Mean GCV score over genes of ``k = 1, 2, ...`` (with ``"auto"``).
    """

    name = "pcr"

    def __init__(
        self,
        *,
        n_components: int | str = "auto",
        max_components: int | None = None,
        precision: Precision = "float32",
        rcond: float | None = None,
        block_rows: int | None = None,
    ) -> None:
        self.n_components = n_components
        self.max_components = max_components
        self.precision = precision
        self.rcond = rcond
        self.block_rows = block_rows

    def _solve(self, gram: CenteredGram) -> np.ndarray:
        self.__dict__.pop("gcv_", None)
        basis = eigenbasis(gram, rcond=self.rcond, precision=self.precision)
        order = np.argsort(basis.d)[::-1]  # largest variance first
        rank = int(basis.keep.sum())
        d_sorted = basis.d[order]
        q2 = basis.Q[order] ** 2
        if self.n_components == "auto":
            top = min(rank, max(1, gram.n - 2))
            if self.max_components is not None:
                top = min(top, int(self.max_components))
            k = self._choose(d_sorted[:top], q2[:top], gram)
        elif isinstance(self.n_components, (int, np.integer)) and self.n_components >= 1:
            k = int(min(self.n_components, rank))
        else:
            raise ConfigError(
                f"n_components must be a positive integer or 'auto', got {self.n_components!r}"
            )
        use = np.zeros(basis.d.shape, dtype=bool)
        use[order[:k]] = True
        basis.keep &= use
        self.n_components_ = k
        self.components_ = np.ascontiguousarray(basis.V[:, order[:k]].T)
        self.explained_variance_ = d_sorted[:k] / max(gram.n - 1, 1)
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
        return int(np.argmin(self.gcv_)) + 1

    def component_scores(self, X: Any) -> np.ndarray:
        """Principal component scores of ``X`` (n_samples x n_components_)."""
        X = self._validate_predict(X)
        return ((X - self.mean_x_) @ self.components_.T).astype(np.float32)
