"""SampleLASSO: each new profile as a sparse combination of training profiles.

Mancuso, Canfield, Singla & Krishnan (Nucleic Acids Research 2020, "A flexible,
interpretable, and accurate approach for imputing the expression of unmeasured genes";
code: krishnanlab/Expresto) turn the regression around: for every new sample, a lasso is
fitted whose *observations are the landmark genes* and whose *features are the training
samples*. The query's landmark vector is written as an intercept plus a sparse signed
combination of the training samples' landmark vectors (scikit-learn ``Lasso`` with
``fit_intercept=True``, ``positive=False``; each training sample's vector standardized
across the genes), and the same weights, applied to the training samples' target values
(transformed with the same per-sample mean and standard deviation), give the prediction.
They found it more accurate than gene-based lasso, KNN and deep networks, and that it
automatically draws on training samples of the same tissue.

Here
----
* Landmarks and targets are first z-scored per gene with the training means and standard
  deviations (the geneinfer training workflow already hands models z-scored data; raw
  values work the same), then each training sample's landmark vector is standardized
  across the landmarks (mean 0, variance 1), its targets with the same two numbers.
* Per query: ``min_w (1/(2p)) ||z_q - b - A_S'w||^2 + alpha ||w||_1`` (optionally
  ``w >= 0``), with ``A_S`` the ``n_neighbors`` training profiles most correlated with the
  query (all of them when there are fewer). With the profiles centred across genes the
  intercept ``b`` is the query's mean over its landmarks.
* Solved for a batch of queries at once by FISTA with adaptive restart on the
  training-sample Gram matrix ``G = A_S A_S'/p`` (shared by all queries when every
  training sample is used, one per query otherwise), warm-started along the alpha path
  from large to small; genes never enter the solver, so its cost does not grow with the
  number of targets.
* ``alpha`` is chosen by study-aware cross-validation over ``groups``
  (:mod:`geneinfer.models.selection`), on ``X_val``/``Y_val`` when given, or on a random
  hold-out, all along one path per query.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_array

from geneinfer.errors import ConfigError
from geneinfer.models.classical import ClassicalModel, validation_mask
from geneinfer.models.gram import blas_threads
from geneinfer.models.selection import (
    GroupMoments,
    GroupScores,
    check_validation_pair,
    constant_floor,
    n_distinct,
    plan_folds,
    selection_record,
)

#: penalties tried by ``alpha="auto"`` (the paper's tuning found ~0.01 best)
DEFAULT_ALPHAS: tuple[float, ...] = (0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002)


@dataclass
class _Profiles:
    """Training samples in the model's space (see the module docstring).

    The targets are not transformed: with ``v_i = w_i / sd_i`` the prediction
    ``mean_y + scale_y * (b + sum_i w_i ((y_i - mean_y) / scale_y - mu_i) / sd_i)`` is
    ``mean_y (1 - sum v) + scale_y (b - sum v_i mu_i) + sum v_i y_i``, a sparse combination
    of raw target rows. So a fold's profiles index the caller's ``Y`` (``rows``) instead of
    copying it (at the D-GEX shapes a copy is gigabytes).
    """

    mean_x: np.ndarray  # (p,) per-gene standardization of landmarks
    scale_x: np.ndarray
    mean_y: np.ndarray  # (T,) and of targets
    scale_y: np.ndarray
    A: np.ndarray  # (n, p) float32: z-scored landmarks, rows standardized across genes
    mu: np.ndarray  # (n,) each row's mean across its z-scored landmarks
    sd: np.ndarray  # (n,) and standard deviation
    Y: np.ndarray  # targets of (at least) these samples, raw
    rows: np.ndarray  # (n,) the samples' rows in Y

    @classmethod
    def build(cls, X: np.ndarray, Y: np.ndarray, rows: np.ndarray) -> _Profiles:
        """Profiles of ``X[rows]`` with statistics of those rows; ``Y`` is kept, not copied."""
        mean_x, scale_x = _mean_scale(X, rows)
        mean_y, scale_y = _mean_scale(Y, rows)
        zx = (X[rows] - mean_x) / scale_x
        mu = zx.mean(axis=1)
        sd = zx.std(axis=1)
        sd = np.where(sd > 0, sd, 1.0)
        A = ((zx - mu[:, None]) / sd[:, None]).astype(np.float32)
        return cls(mean_x, scale_x, mean_y, scale_y, A, mu, sd, Y, rows)


def _mean_scale(M: np.ndarray, rows: np.ndarray, block: int = 4096
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation (1 where 0) of ``M[rows]``, in row blocks."""
    total = np.zeros(M.shape[1])
    for start in range(0, len(rows), block):
        total += M[rows[start:start + block]].sum(axis=0, dtype=np.float64)
    mean = total / max(len(rows), 1)
    sq = np.zeros(M.shape[1])
    for start in range(0, len(rows), block):  # second pass: no cancellation
        part = M[rows[start:start + block]] - mean
        sq += np.einsum("ij,ij->j", part, part)
    std = np.sqrt(sq / max(len(rows), 1))
    return mean, np.where(std > 0, std, 1.0)


class SampleLasso(ClassicalModel):
    """SampleLASSO (Mancuso et al. 2020): a lasso over training samples for every query.

    See the module docstring for the model. Prediction cost per query: the similarity to
    every training profile (``n p``), the Gram matrix of its neighbours (``m^2 p``), the
    FISTA path (``m^2`` per iteration) and the combination of targets (``m T``).

    Parameters
    ----------
    alpha
        Penalty (scikit-learn ``Lasso`` scale: the loss is averaged over the landmark
        genes), or ``"auto"`` (default): the value of ``alphas`` with the best score.
    alphas
        Candidates for ``"auto"``, and the warm-start path (values above ``alpha``).
    n_neighbors
        Each query uses its ``n_neighbors`` most correlated training profiles (``None``:
        all). With fewer training samples all are used and one Gram matrix serves every
        query.
    positive
        Non-negative weights (the paper's lasso was signed).
    fit_intercept
        Fit the intercept ``b`` (the paper did), carried over to the targets.
    validation_fraction, random_state
        Random hold-out for ``"auto"`` without groups or a validation set.
    max_iter, tol
        FISTA iterations per penalty and duality-gap tolerance (relative to the query's
        sum of squares; 1e-3 as the paper's scikit-learn ``Lasso``).
    precision
        ``"float32"`` (default) or ``"float64"``: dtype of the Gram matrices and their
        products in the solver (its iterates are float64). float32 halves the memory
        traffic of each iteration; gaps below ~1e-7 need ``"float64"``.
    batch_size
        Queries solved together.

    Attributes
    ----------
    alpha_ : float
    alphas_ : ndarray
        The path (descending).
    n_iter_ : int
        FISTA iterations run while choosing ``alpha`` (0 with a fixed one).
    profiles_ : ndarray (n_samples, n_landmarks), float32
        Training landmark profiles, z-scored per gene then standardized per sample.
    profile_mean_, profile_scale_ : ndarray (n_samples,)
        Each training sample's mean and standard deviation across its z-scored landmarks
        (the per-sample standardization, applied to its targets at prediction).
    targets_ : ndarray (n_samples, n_targets), float32
        Training targets as given.
    mean_x_, scale_x_, mean_y_, scale_y_ : ndarray
        Per-gene standardization of landmarks and targets.
    validation_score_ : ndarray (n_alphas,)
        Score of each candidate (with ``"auto"``).
    selection_ : dict
        Rule used (``"holdout"``, ``"leave-one-group-out"``, ``"group-k-fold"``), number of
        groups and folds, grid and scores.
    """

    name = "sample-lasso"
    cheap_refit = False

    def __init__(
        self,
        *,
        alpha: float | str = "auto",
        alphas: Sequence[float] = DEFAULT_ALPHAS,
        n_neighbors: int | None = 500,
        positive: bool = False,
        fit_intercept: bool = True,
        validation_fraction: float = 0.2,
        random_state: int | None = 0,
        max_iter: int = 1000,
        tol: float = 1e-3,
        precision: str = "float32",
        batch_size: int = 64,
    ) -> None:
        self.alpha = alpha
        self.alphas = alphas
        self.n_neighbors = n_neighbors
        self.positive = positive
        self.fit_intercept = fit_intercept
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.max_iter = max_iter
        self.tol = tol
        self.precision = precision
        self.batch_size = batch_size

    # ---------------------------------------------------------------- parameters
    def _grid(self) -> np.ndarray:
        grid = np.sort(np.atleast_1d(np.asarray(self.alphas, dtype=np.float64)))[::-1]
        if grid.ndim != 1 or grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(
            grid <= 0
        ):
            raise ConfigError(f"sample-lasso alphas must be positive numbers: {self.alphas!r}")
        return grid

    def _check_params(self) -> None:
        a = self.alpha
        if a != "auto" and not (isinstance(a, (int, float, np.number))
                                and not isinstance(a, bool) and a > 0):
            raise ConfigError(f"sample-lasso alpha must be a positive number or 'auto': {a!r}")
        m = self.n_neighbors
        if m is not None and not (isinstance(m, (int, np.integer)) and m >= 1):
            raise ConfigError(f"n_neighbors must be a positive integer or None, got {m!r}")
        if int(self.max_iter) < 1 or int(self.batch_size) < 1:
            raise ConfigError("max_iter and batch_size must be >= 1")
        if self.precision not in ("float32", "float64"):
            raise ConfigError(f"precision must be 'float32' or 'float64', got {self.precision!r}")

    def _path_to(self, alpha: float) -> np.ndarray:
        """Warm-start path: the grid values above ``alpha``, then ``alpha``."""
        grid = self._grid() if self.alphas is not None else np.array([])
        return np.append(grid[grid > alpha * (1 + 1e-12)], alpha)

    # ---------------------------------------------------------------- fitting
    def fit(
        self, X: Any, Y: Any, *, groups: Any = None, X_val: Any = None, Y_val: Any = None
    ) -> SampleLasso:
        """Keep the training profiles; choose ``alpha`` first if ``"auto"``."""
        self._check_params()
        X, Y = self._validate_fit(X, Y)
        X = np.asarray(X, np.float64)  # landmarks: small; targets stay as they are
        for key in ("validation_score_", "selection_"):
            self.__dict__.pop(key, None)
        self.n_iter_ = 0
        if self.alpha == "auto":
            grid = self._grid()
            counter = [0]
            scores, record = self._choose(X, Y, grid, groups, X_val, Y_val, counter)
            self.n_iter_ = counter[0]
            record["n_groups"] = n_distinct(groups, X.shape[0])
            self.validation_score_, self.selection_ = scores, record
            self.alpha_ = float(grid[int(np.argmin(np.nan_to_num(scores, nan=np.inf)))])
        else:
            self.alpha_ = float(self.alpha)
        self.alphas_ = self._path_to(self.alpha_)
        prof = _Profiles.build(X, Y, np.arange(X.shape[0]))
        self.mean_x_, self.scale_x_ = prof.mean_x, prof.scale_x
        self.mean_y_, self.scale_y_ = prof.mean_y, prof.scale_y
        self.profiles_ = prof.A
        self.profile_mean_, self.profile_scale_ = prof.mu, prof.sd
        self.targets_ = np.asarray(Y, dtype=np.float32)
        return self

    def _fitted_profiles(self) -> _Profiles:
        return _Profiles(self.mean_x_, self.scale_x_, self.mean_y_, self.scale_y_,
                         self.profiles_, self.profile_mean_, self.profile_scale_,
                         self.targets_, np.arange(self.targets_.shape[0]))

    def _choose(
        self, X: np.ndarray, Y: np.ndarray, grid: np.ndarray, groups: Any, X_val: Any,
        Y_val: Any, counter: list[int],
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """(score of each alpha, selection record) by the rule that applies."""
        if check_validation_pair(X_val, Y_val):
            Xv = check_array(X_val, dtype=np.float64, input_name="X_val")
            Yv = np.asarray(Y_val, np.float64).reshape(len(Xv), -1)
            mse = self._holdout_mse(_Profiles.build(X, Y, np.arange(len(X))), Xv, Yv, grid,
                                    counter)
            return mse, selection_record("holdout", n_groups=1, grid=grid, scores=mse,
                                         score="standardized-mse", holdout="given")
        folds = plan_folds(groups, X.shape[0])
        if folds is None:
            mask = validation_mask(X.shape[0], self.validation_fraction, self.random_state)
            prof = _Profiles.build(X, Y, np.flatnonzero(~mask))
            mse = self._holdout_mse(prof, X[mask], Y[mask], grid, counter)
            return mse, selection_record("holdout", n_groups=1, grid=grid, scores=mse,
                                         score="standardized-mse", holdout="random")
        board = GroupScores(len(grid), Y.shape[1])
        floor = constant_floor(Y.var(axis=0))
        for fold in range(len(folds.folds)):
            held = folds.held_out(fold)
            prof = _Profiles.build(X, Y, np.flatnonzero(~held))
            for code in folds.folds[fold]:
                rows = np.flatnonzero(folds.codes == code)
                moments = GroupMoments(len(grid), Y.shape[1])
                Xq, Yq = X[rows], Y[rows]
                for chunk, pred in self._predict_path(prof, Xq, grid, counter=counter):
                    moments.add(Yq[chunk], pred)
                board.add(int(code), moments.scores(floor))
        scores = board.overall()
        return scores, selection_record(folds.method, n_groups=folds.n_groups, folds=folds,
                                        grid=grid, scores=scores, score="within-group-z-mse")

    def _holdout_mse(
        self, prof: _Profiles, Xv: np.ndarray, Yv: np.ndarray, grid: np.ndarray,
        counter: list[int],
    ) -> np.ndarray:
        """Validation MSE of each alpha, each gene in units of its training variance."""
        inv_var = 1.0 / prof.scale_y**2
        sse = np.zeros(len(grid))
        for chunk, pred in self._predict_path(prof, Xv, grid, counter=counter):
            sse += ((pred - Yv[chunk]) ** 2 @ inv_var).sum(axis=1)
        return sse / (len(Xv) * len(inv_var))

    # ---------------------------------------------------------------- prediction
    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets, float32 (one lasso per row of ``X``)."""
        X = self._validate_predict(X)
        prof = self._fitted_profiles()
        out = np.empty((X.shape[0], self.targets_.shape[1]), dtype=np.float32)
        for chunk, pred in self._predict_path(prof, np.asarray(X, np.float64), self.alphas_,
                                              keep_last=True):
            out[chunk] = pred[0]
        return self._output(out)

    def weights(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """(training-sample indices (n_queries x m), weights) of each query's combination.

        The interpretable part of SampleLASSO: which training samples a profile is built
        from (weights on the per-sample standardized profiles).
        """
        X = self._validate_predict(X)
        prof = self._fitted_profiles()
        idx, w = [], []
        for _, _, S, W in self._solve_batches(prof, np.asarray(X, np.float64), self.alphas_):
            idx.append(S)
            w.append(W[-1])
        return np.vstack(idx), np.vstack(w)

    def _predict_path(
        self, prof: _Profiles, Xq: np.ndarray, path: np.ndarray, *, keep_last: bool = False,
        counter: list[int] | None = None,
    ) -> Iterator[tuple[slice, np.ndarray]]:
        """Per batch of queries: predictions (n_path x rows x T) in original units.

        ``keep_last``: only the last penalty's predictions (1 x rows x T).
        """
        n_rows, t = prof.Y.shape
        mean_y, scale_y = prof.mean_y.astype(np.float32), prof.scale_y.astype(np.float32)
        for rows, b, S, W in self._solve_batches(prof, Xq, path, counter):
            if keep_last:
                W = W[-1:]
            h, r, _ = W.shape
            V = W / prof.sd[S][None]  # weights on raw target rows (see _Profiles)
            c1 = 1.0 - V.sum(axis=2)  # (h, r)
            c2 = b[None, :] - np.einsum("hrm,rm->hr", V, prof.mu[S])
            # the weights are sparse: one sparse (path x rows, n) by dense (n, T) product
            nz = V != 0
            at = np.broadcast_to(np.arange(h * r).reshape(h, r, 1), V.shape)[nz]
            cols = np.broadcast_to(prof.rows[S][None], V.shape)[nz]
            mat = csr_matrix((V[nz].astype(np.float32), (at, cols)), shape=(h * r, n_rows))
            z = np.asarray(mat @ prof.Y, dtype=np.float32).reshape(h, r, t)
            z += c1[..., None].astype(np.float32) * mean_y
            z += c2[..., None].astype(np.float32) * scale_y
            yield rows, z

    def _solve_batches(
        self, prof: _Profiles, Xq: np.ndarray, path: np.ndarray,
        counter: list[int] | None = None,
    ) -> Iterator[tuple[slice, np.ndarray, np.ndarray, np.ndarray]]:
        """Per batch: (rows, intercepts, neighbour indices (rows x m), weights
        (n_path x rows x m)). ``counter[0]`` is increased by the FISTA iterations run."""
        n, p = prof.A.shape
        m = n if self.n_neighbors is None else min(int(self.n_neighbors), n)
        shared = None
        dtype = np.dtype(self.precision)
        if m == n:  # every query uses every training sample: one Gram matrix
            with blas_threads(2.0 * n * n * p):
                shared = (prof.A.astype(np.float64) @ prof.A.T.astype(np.float64)) / p
            shared_l = _largest_eigenvalue(shared)
            shared = shared.astype(dtype)
        not_converged = 0
        step = int(self.batch_size)
        for start in range(0, Xq.shape[0], step):
            rows = slice(start, min(start + step, Xq.shape[0]))
            zq = (Xq[rows] - prof.mean_x) / prof.scale_x
            b = zq.mean(axis=1) if self.fit_intercept else np.zeros(len(zq))
            zc = (zq - b[:, None]).astype(np.float32)
            with blas_threads(2.0 * zc.size * n):
                sim = (zc @ prof.A.T).astype(np.float64) / p  # (rows, n): A_i'z / p
            if shared is not None:
                S = np.broadcast_to(np.arange(n), (len(zc), n))
                G, L, c = shared, np.full(len(zc), shared_l), sim
            else:
                S = np.argpartition(-sim, m - 1, axis=1)[:, :m]
                c = np.take_along_axis(sim, S, axis=1)
                G = _neighbour_grams(prof.A, S, dtype)
                # Gershgorin: a guaranteed upper bound of each query's largest eigenvalue
                L = np.abs(G).sum(axis=2, dtype=np.float64).max(axis=1) * (1 + 1e-6)
            cyy = np.einsum("ij,ij->i", zc, zc, dtype=np.float64) / p
            W, bad, iters = _lasso_path(G, c, cyy, np.maximum(L, 1e-12), path,
                                        self.positive, int(self.max_iter), float(self.tol))
            not_converged += bad
            if counter is not None:
                counter[0] += iters
            yield rows, b, S, W
        if not_converged:
            warnings.warn(
                f"sample-lasso: {not_converged} query fits did not converge within "
                f"max_iter={self.max_iter}; raise max_iter or tol",
                ConvergenceWarning, stacklevel=3,
            )


def _largest_eigenvalue(G: np.ndarray) -> float:
    from scipy.linalg import eigh

    from geneinfer.models.gram import one_blas_thread

    with one_blas_thread():
        top = eigh(G, eigvals_only=True, subset_by_index=[G.shape[0] - 1, G.shape[0] - 1])
    return float(top[0]) * (1 + 1e-9)


def _neighbour_grams(A: np.ndarray, S: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``A_S A_S' / p`` for every query's neighbour set (rows x m x m), in ``dtype``."""
    sub = A[S].astype(dtype, copy=False)  # (rows, m, p)
    with blas_threads(2.0 * sub.shape[0] * sub.shape[1] ** 2 * sub.shape[2]):
        G = np.matmul(sub, np.swapaxes(sub, 1, 2))
    G /= A.shape[1]
    return G


def _gram_times(W: np.ndarray, G: np.ndarray) -> np.ndarray:
    """``W_i G_i`` for each row (shared ``G``: one product), float64.

    ``G`` is in the product dtype (float32 by default); one batched product per FISTA
    iteration reads all of a batch's per-query Gram matrices, so their size sets the pace.
    """
    Wg = W.astype(G.dtype, copy=False)
    if G.ndim == 2:
        return (Wg @ G).astype(np.float64, copy=False)
    return np.matmul(Wg[:, None, :], G)[:, 0, :].astype(np.float64, copy=False)


def _lasso_path(
    G: np.ndarray, c: np.ndarray, cyy: np.ndarray, L: np.ndarray, path: np.ndarray,
    positive: bool, max_iter: int, tol: float,
) -> tuple[np.ndarray, int, int]:
    """Weights (n_path x rows x m) along ``path`` (descending), warm-started; the number of
    fits that did not converge and the FISTA iterations run."""
    W = np.zeros_like(c)
    out = np.empty((len(path), *c.shape))
    bad = iters = 0
    for k, alpha in enumerate(path):
        W, not_done, n_iter = _fista(G, c, cyy, L, W, float(alpha), positive, max_iter, tol)
        out[k] = W
        bad += not_done
        iters += n_iter
    return out, bad, iters


def _fista(
    G: np.ndarray, c: np.ndarray, cyy: np.ndarray, L: np.ndarray, start: np.ndarray,
    alpha: float, positive: bool, max_iter: int, tol: float,
) -> tuple[np.ndarray, int, int]:
    """Minimise ``0.5 w'G_i w - c_i'w + alpha |w|_1`` (``w >= 0`` if ``positive``) per row.

    FISTA with adaptive restart (O'Donoghue & Candes); rows whose duality gap is below
    ``tol * cyy_i`` leave the active set (checked every 10 iterations); per-query Gram
    matrices of rows that left are dropped then, not gathered at every iteration. Returns
    the weights, the number of rows not converged and the iterations run.
    """
    out = start.copy()
    active = np.arange(len(c))
    B, Z = start.copy(), start.copy()
    t = np.ones(len(c))
    inv_l = (1.0 / L)[:, None]
    thr = alpha * inv_l
    cc, yy = c.copy(), cyy.copy()
    n_iter = 0
    for it in range(1, max_iter + 1):
        if active.size == 0:
            break
        n_iter = it
        step = Z - (_gram_times(Z, G) - cc) * inv_l
        Bn = np.maximum(step - thr, 0.0) if positive else step - np.clip(step, -thr, thr)
        diff = Bn - B
        restart = np.einsum("ij,ij->i", Z - Bn, diff) > 0  # momentum pointing uphill
        t = np.where(restart, 1.0, t)
        tn = 0.5 * (1 + np.sqrt(1 + 4 * t**2))
        Z = Bn + ((t - 1) / tn)[:, None] * diff
        B, t = Bn, tn
        if it % 10 == 0 or it == max_iter:
            gap = _gap(B, _gram_times(B, G), cc, yy, alpha, positive)
            done = gap <= tol * np.maximum(yy, 1e-300)
            if done.any():
                out[active[done]] = B[done]
                keep = ~done
                active, B, Z, t = active[keep], B[keep], Z[keep], t[keep]
                cc, yy, inv_l, thr = cc[keep], yy[keep], inv_l[keep], thr[keep]
                if G.ndim == 3:
                    G = G[keep]
    out[active] = B
    return out, int(active.size), n_iter


def _gap(
    w: np.ndarray, gw: np.ndarray, c: np.ndarray, cyy: np.ndarray, alpha: float, positive: bool
) -> np.ndarray:
    """Duality gap of each row's lasso (scikit-learn's formula; ``gw = G w``)."""
    wc = np.einsum("ij,ij->i", w, c)
    rr = np.maximum(cyy - 2 * wc + np.einsum("ij,ij->i", w, gw), 0.0)
    corr = c - gw  # X'R / p
    dual = corr.max(axis=1) if positive else np.abs(corr).max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        const = np.where(dual > alpha, alpha / dual, 1.0)
    return 0.5 * rr * (1 + const**2) + alpha * np.abs(w).sum(axis=1) - const * (cyy - wc)
