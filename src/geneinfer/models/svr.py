"""Support vector regression per target gene, on a subsample of genes, ridge for the rest.

How it is done (honestly): scikit-learn fits one ``SVR`` (or ``LinearSVR``) per target
gene; there is no multi-output SVR. ``max_genes`` (default 200) target genes are drawn at
random and fitted in parallel with joblib; **every other gene is predicted by a ridge
model** (:class:`geneinfer.models.linear.Ridge`, GCV alpha) fitted on all genes, and a
warning says so. Set ``max_genes=None`` to fit every gene (slow: one kernel SVR per gene,
each ``O(n_samples^2)``, so 9,520 genes on 100k samples is out of reach). ``svr_genes_``
lists the genes that have an SVR.

Landmarks are standardized and each target is z-scored before its SVR (``epsilon`` is
therefore in standard deviations); predictions are mapped back to the target's units.
Prediction is vectorised: the kernel between queries and training samples is computed
once and multiplied by the stacked dual coefficients of all fitted genes.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.svm import SVR, LinearSVR

from geneinfer.errors import ConfigError
from geneinfer.models.classical import ClassicalModel
from geneinfer.models.linear import Ridge


class SVRRegression(ClassicalModel):
    """Per-gene SVR on up to ``max_genes`` targets; ridge predicts the others.

    Parameters
    ----------
    kernel
        ``"rbf"`` (``sklearn.svm.SVR``) or ``"linear"`` (``sklearn.svm.LinearSVR``).
    C, epsilon, gamma
        SVR parameters (on standardized data); ``gamma="scale"`` as in scikit-learn.
    max_genes
        Number of target genes given an SVR (random subset); ``None`` = all.
    random_state
        Seed of the gene subsample.
    n_jobs
        joblib workers for the per-gene fits.

    Attributes
    ----------
    svr_genes_ : ndarray (n_svr,), int
        Target columns with an SVR; all other columns use the ridge fallback.
    dual_coef_ : ndarray (n_samples, n_svr), float32
        (rbf) Dual coefficients of each gene's SVR over all training samples (0 = not a
        support vector).
    support_X_ : ndarray (n_samples, n_landmarks), float32
        (rbf) Standardized training landmarks.
    svr_coef_ : ndarray (n_svr, n_landmarks)
        (linear) Primal coefficients on standardized landmarks.
    svr_intercept_ : ndarray (n_svr,)
    fallback_coef_, fallback_mean_x_, fallback_mean_y_ : ndarray
        The ridge model used for the other genes: ``mean_y + (x - mean_x) @ coef.T``.
    fallback_selection_ : dict
        How that ridge model chose its alpha (its ``selection_``).
    """

    name = "svr"
    cheap_refit = False

    def __init__(
        self,
        *,
        kernel: str = "rbf",
        C: float = 1.0,
        epsilon: float = 0.1,
        gamma: float | str = "scale",
        max_genes: int | None = 200,
        random_state: int | None = 0,
        n_jobs: int | None = None,
    ) -> None:
        self.kernel = kernel
        self.C = C
        self.epsilon = epsilon
        self.gamma = gamma
        self.max_genes = max_genes
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, X: Any, Y: Any, *, groups: Any = None) -> SVRRegression:
        """Fit ridge on all targets and an SVR on each of ``max_genes`` random targets.

        ``groups`` (one label per row, e.g. the study) is passed to the ridge fallback,
        whose alpha is then chosen over studies (:class:`geneinfer.models.linear.Ridge`);
        the SVRs' own parameters are fixed.
        """
        if self.kernel not in ("rbf", "linear"):
            raise ConfigError(f"SVR kernel must be 'rbf' or 'linear', got {self.kernel!r}")
        X, Y = self._validate_fit(X, Y)
        t = Y.shape[1]
        ridge = Ridge().fit(X, Y, groups=groups)
        self.fallback_selection_ = ridge.selection_
        self.fallback_coef_ = ridge.coef_
        self.fallback_mean_x_ = ridge.mean_x_
        self.fallback_mean_y_ = ridge.mean_y_

        if self.max_genes is not None and self.max_genes < t:
            rng = np.random.default_rng(self.random_state)
            genes = np.sort(rng.choice(t, int(max(self.max_genes, 0)), replace=False))
            warnings.warn(
                f"SVR fitted on {genes.size} of {t} target genes (max_genes={self.max_genes}); "
                "the other genes are predicted by ridge regression",
                UserWarning,
                stacklevel=2,
            )
        else:
            genes = np.arange(t)
        self.svr_genes_ = genes.astype(np.int64)

        mean = X.mean(axis=0, dtype=np.float64)
        std = X.std(axis=0, dtype=np.float64)
        self.mean_x_, self.scale_x_ = mean, np.where(std > 0, std, 1.0)
        Z = ((X - mean) / self.scale_x_).astype(np.float64)
        ysel = Y[:, genes].astype(np.float64)
        self.mean_y_ = ysel.mean(axis=0)
        ystd = ysel.std(axis=0)
        self.scale_y_ = np.where(ystd > 0, ystd, 1.0)
        zy = (ysel - self.mean_y_) / self.scale_y_
        self.gamma_ = (
            1.0 / (Z.shape[1] * Z.var()) if self.gamma == "scale" and Z.var() > 0
            else 1.0 if self.gamma == "scale" else float(self.gamma)
        )
        fits = Parallel(n_jobs=self.n_jobs)(delayed(self._fit_one)(Z, zy[:, j])
                                            for j in range(genes.size))
        self.svr_intercept_ = np.array([f[1] for f in fits], dtype=np.float64)
        if self.kernel == "rbf":
            dual = np.zeros((Z.shape[0], genes.size), dtype=np.float32)
            for j, (coef, _) in enumerate(fits):
                dual[:, j] = coef
            self.dual_coef_ = dual
            self.support_X_ = Z.astype(np.float32)
        else:
            self.svr_coef_ = np.array([f[0] for f in fits], dtype=np.float64).reshape(
                genes.size, Z.shape[1]
            )
        return self

    def _fit_one(self, Z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        """One gene: (dense dual coefficients or primal coefficients, intercept)."""
        if self.kernel == "rbf":
            model = SVR(kernel="rbf", C=self.C, epsilon=self.epsilon, gamma=self.gamma_)
            model.fit(Z, y)
            dense = np.zeros(Z.shape[0])
            dense[model.support_] = model.dual_coef_[0]
            return dense, float(model.intercept_[0])
        model = LinearSVR(C=self.C, epsilon=self.epsilon, dual="auto", max_iter=10000,
                          random_state=0)
        model.fit(Z, y)
        return model.coef_.astype(np.float64), float(np.ravel(model.intercept_)[0])

    def predict(self, X: Any) -> np.ndarray:
        """Ridge prediction for every gene, replaced by the SVR where one was fitted."""
        X = self._validate_predict(X)
        out = (X - self.fallback_mean_x_).astype(np.float32) @ self.fallback_coef_.T
        out += self.fallback_mean_y_.astype(np.float32)
        if self.svr_genes_.size:
            Z = (X - self.mean_x_) / self.scale_x_
            if self.kernel == "rbf":
                K = rbf_kernel(Z.astype(np.float32), self.support_X_, gamma=self.gamma_)
                zpred = K @ self.dual_coef_ + self.svr_intercept_
            else:
                zpred = Z @ self.svr_coef_.T + self.svr_intercept_
            out[:, self.svr_genes_] = zpred * self.scale_y_ + self.mean_y_
        return self._output(out)
