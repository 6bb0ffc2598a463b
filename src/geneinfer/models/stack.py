"""Stacked model: per gene, a non-negative blend of candidate models, shrunk toward ridge.

No single method wins on every gene. :class:`StackedModel` fits, for every target gene, a
convex combination of the candidates' predictions (weights ``w >= 0``, ``sum w = 1``):

1. **Out-of-group predictions.** Each group (study) is predicted by candidates fitted on
   the other groups (folds of :func:`geneinfer.models.selection.plan_folds`: leave-one-
   group-out, or group K-fold above 10 groups); without groups, each row by candidates
   fitted on the other folds of a seeded 5-fold split. Candidates get the training part's
   groups, so their own hyper-parameters are chosen over studies too. Only per-unit sums
   are kept (:class:`geneinfer.models.outofgroup.OutOfGroupSums`).
2. **Weights.** Per gene, with ``G = P'P``, ``h = P'y`` summed over units after centring
   truth and predictions within each unit (so study offsets do not count)::

       minimise  ||y - P w||^2 + tau s ||w - e_ridge||^2   subject to  w >= 0, sum w = 1

   ``s = trace(G) / M`` puts ``tau`` on the scale of the candidates' predictions; large
   ``tau`` gives ridge alone. Every support of ``w`` is tried (exact for the few candidates
   a stack has; at most :data:`MAX_CANDIDATES`).
3. **tau** (``"auto"``): each unit is left out in turn, the weights are fitted on the other
   units' sums and scored on the left-out unit by the within-unit z-scored MSE
   ``2 (1 - r)``; the ``taus`` value with the best mean over units wins (scored on
   ``cv_genes`` random genes).
4. Candidates with a non-zero weight for any gene are **refit on all rows**.

Given ``X_val``/``Y_val``, the candidates are fitted on ``X`` once and the weights on their
predictions of the validation set instead (five random row folds of it score ``tau``).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.utils.validation import check_array, check_is_fitted

from geneinfer.errors import ConfigError, GeneinferError
from geneinfer.models.classical import ClassicalModel
from geneinfer.models.outofgroup import (
    OutOfGroupSums,
    candidates_state,
    collect,
    fit_candidate,
    load_candidates,
    outer_folds,
    resolve_candidates,
)
from geneinfer.models.selection import (
    GROUP_K_FOLDS,
    MIN_GROUP_ROWS,
    GroupScores,
    check_validation_pair,
    constant_floor,
    n_distinct,
    nan_mean,
    score_gene_subset,
    selection_record,
    zscore_mse_from_moments,
)

#: the closed-form and sample models: on the shared studies (~200 profiles) adding D-GEX
#: (``candidates=["ridge", "pcr", "knn-ge", "sample-lasso", "dgex"]``) changed nothing but the
#: training time (5x); with tens of thousands of profiles it is worth adding
DEFAULT_CANDIDATES: tuple[str, ...] = ("ridge", "pcr", "knn-ge", "sample-lasso")
#: relative shrinkage strengths tried by ``tau="auto"``
DEFAULT_TAUS: tuple[float, ...] = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
#: the weight fit tries every support: 2^M - 1 small solves per gene
MAX_CANDIDATES = 10


class StackedModel(ClassicalModel):
    """Per-gene non-negative weights over candidate models, fitted out of group.

    See the module docstring for the procedure.

    Parameters
    ----------
    candidates : sequence
        Registry names and/or ``(label, estimator)`` pairs of unfitted geneinfer models.
        Default: ridge, PCR, KNN-GE and SampleLASSO (:data:`DEFAULT_CANDIDATES`).
    candidate_params : dict, optional
        Hyper-parameters per registry name, e.g. ``{"dgex": {"hidden": [3000]}}``.
    anchor : str
        Label of the candidate the weights shrink toward (default ``"ridge"``).
    tau : float or "auto"
        Shrinkage strength relative to ``trace(G)/M``; ``"auto"`` chooses from ``taus``.
    taus : sequence of float
        Candidates for ``"auto"``.
    cv_genes : int or None
        Genes (seeded random subset) that score ``tau``; ``None``: all.
    random_state : int
        Seed of the row folds (without groups) and of the gene subset.

    Attributes
    ----------
    labels_ : list of str
        Candidate labels, in order.
    weights_ : ndarray (n_candidates, n_targets)
        Each gene's weights (non-negative, summing to 1).
    tau_ : float
    candidate_scores_ : ndarray (n_candidates,)
        Out-of-group within-unit z-scored MSE of each candidate alone (mean over units).
    estimators_ : dict
        Candidates refitted on all rows (those with a non-zero weight).
    selection_ : dict
        Fold rule, number of groups, the ``taus`` and their scores.
    """

    name = "stack"
    cheap_refit = False

    def __init__(
        self,
        *,
        candidates: Sequence[Any] = DEFAULT_CANDIDATES,
        candidate_params: dict[str, dict[str, Any]] | None = None,
        anchor: str = "ridge",
        tau: float | str = "auto",
        taus: Sequence[float] = DEFAULT_TAUS,
        cv_genes: int | None = 1000,
        random_state: int | None = 0,
    ) -> None:
        self.candidates = candidates
        self.candidate_params = candidate_params
        self.anchor = anchor
        self.tau = tau
        self.taus = taus
        self.cv_genes = cv_genes
        self.random_state = random_state

    def _check(self, labels: list[str]) -> int:
        if len(labels) > MAX_CANDIDATES:
            raise ConfigError(f"a stack takes at most {MAX_CANDIDATES} candidates, "
                              f"got {len(labels)}")
        if self.anchor not in labels:
            raise ConfigError(f"anchor {self.anchor!r} is not among the candidates {labels}")
        if self.tau != "auto" and not (isinstance(self.tau, (int, float)) and self.tau >= 0):
            raise ConfigError(f"tau must be a non-negative number or 'auto', got {self.tau!r}")
        return labels.index(self.anchor)

    def fit(
        self, X: Any, Y: Any, *, groups: Any = None, X_val: Any = None, Y_val: Any = None
    ) -> StackedModel:
        """Out-of-group predictions, per-gene weights, then the candidates on all rows.

        With ``X_val``/``Y_val`` the candidates are fitted on ``X`` once and the weights
        on their predictions of the validation set (five random row folds of it are the
        units that score ``tau``); the candidates are not refit.
        """
        X, Y = self._validate_fit(X, Y)
        cands = resolve_candidates(self.candidates, self.candidate_params)
        labels = [label for label, _ in cands]
        anchor = self._check(labels)
        fitted = None
        if check_validation_pair(X_val, Y_val):
            Xv, Yv = self._validate_val(X_val, Y_val, X.shape[1], Y.shape[1])
            fitted = [fit_candidate(clone(est), X, Y, groups) for _, est in cands]
            sums, info = _validation_sums(fitted, Xv, Yv, self.random_state)
            info["n_groups"] = n_distinct(groups, X.shape[0])
        else:
            folds = outer_folds(groups, X.shape[0], self.random_state)
            sums = collect(cands, X, Y, folds)
            info = {"method": folds.method, "n_groups": folds.n_groups,
                    "n_folds": len(folds.held),
                    "units": "groups" if folds.groups is not None else "row folds"}
        floor = constant_floor(np.var(Y, axis=0))
        self.tau_, self.selection_ = self._choose_tau(sums, anchor, floor, info)
        G, h, _, _ = sums.centred()
        self.weights_ = _blend_weights(G.sum(0), h.sum(0), anchor, self.tau_).T
        self.labels_ = labels
        self.candidate_scores_ = nan_mean(nan_mean(sums.candidate_scores(floor), axis=1),
                                          axis=0)
        self.estimators_ = {}
        for i, (label, est) in enumerate(cands):
            if np.any(self.weights_[i] > 0):
                self.estimators_[label] = (fitted[i] if fitted is not None
                                           else fit_candidate(est, X, Y, groups))
        return self

    def _validate_val(
        self, X_val: Any, Y_val: Any, p: int, t: int
    ) -> tuple[np.ndarray, np.ndarray]:
        X_val = check_array(X_val, dtype=(np.float32, np.float64), input_name="X_val")
        Y_val = np.asarray(Y_val, dtype=np.float64).reshape(len(X_val), -1)
        if X_val.shape[1] != p or Y_val.shape[1] != t:
            raise GeneinferError(
                f"X_val/Y_val have {X_val.shape[1]}/{Y_val.shape[1]} genes; expected {p}/{t} "
                "like X/Y"
            )
        return X_val, Y_val

    def _choose_tau(
        self, sums: OutOfGroupSums, anchor: int, floor: np.ndarray, info: dict[str, Any]
    ) -> tuple[float, dict[str, Any]]:
        """tau by leaving each unit out of the weight fit (see the module docstring)."""
        info = dict(info)
        method, n_groups = info.pop("method"), info.pop("n_groups")
        if self.tau != "auto":
            return float(self.tau), selection_record(method, n_groups=n_groups, tau="given",
                                                     **info)
        taus = np.asarray(self.taus, dtype=np.float64)
        if taus.ndim != 1 or taus.size == 0 or np.any(~np.isfinite(taus)) or np.any(taus < 0):
            raise ConfigError(f"taus must be non-negative numbers, got {self.taus!r}")
        genes = score_gene_subset(sums.n.shape[1], self.cv_genes, self.random_state)
        G, h, yy, n = (a[:, genes] for a in sums.centred())
        G_all, h_all = G.sum(0), h.sum(0)
        board = GroupScores(len(taus), len(genes))
        for u in range(G.shape[0]):
            if not np.any(n[u] >= MIN_GROUP_ROWS):
                continue
            scores = np.full((len(taus), len(genes)), np.nan)
            for k, tau in enumerate(taus):
                w = _blend_weights(G_all - G[u], h_all - h[u], anchor, tau)
                var_p = np.einsum("tm,tml,tl->t", w, G[u], w)
                cov = np.einsum("tm,tm->t", w, h[u])
                scores[k] = zscore_mse_from_moments(cov, var_p, yy[u],
                                                    floor_y=floor[genes] * n[u])
            scores[:, n[u] < MIN_GROUP_ROWS] = np.nan
            board.add(u, scores)
        return float(taus[board.best()]), selection_record(
            method, n_groups=n_groups, grid=taus, scores=board.overall(),
            score="within-group-z-mse", genes_scored=len(genes), **info)

    def predict(self, X: Any) -> np.ndarray:
        """Each gene's weighted sum of the candidates' predictions, float32."""
        check_is_fitted(self, "estimators_")
        X = self._validate_predict(X)
        out = np.zeros((X.shape[0], self.weights_.shape[1]), dtype=np.float32)
        for label, est in self.estimators_.items():
            w = self.weights_[self.labels_.index(label)].astype(np.float32)
            pred = np.asarray(est.predict(X), np.float32).reshape(X.shape[0], -1)
            out += pred * w
        return self._output(out)

    # ---- pickle-free state ----------------------------------------------------------
    def fitted_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        check_is_fitted(self, "estimators_")
        arrays, specs = candidates_state(self.estimators_)
        arrays.update({"weights_": self.weights_, "candidate_scores_": self.candidate_scores_})
        meta = {"labels_": self.labels_, "candidates_": specs, "tau_": self.tau_,
                "selection_": self.selection_, "n_features_in_": int(self.n_features_in_),
                "n_targets_": int(self.n_targets_), "single_target_": bool(self.single_target_)}
        names = getattr(self, "feature_names_in_", None)
        if names is not None:
            meta["feature_names_in_"] = [str(n) for n in names]
        return arrays, meta

    def load_fitted_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.weights_ = np.asarray(arrays["weights_"], dtype=np.float64)
        self.candidate_scores_ = np.asarray(arrays["candidate_scores_"], dtype=np.float64)
        for key in ("labels_", "tau_", "selection_", "n_features_in_", "n_targets_",
                    "single_target_"):
            setattr(self, key, meta[key])
        self.labels_ = list(self.labels_)
        if "feature_names_in_" in meta:
            self.feature_names_in_ = np.asarray(meta["feature_names_in_"], dtype=object)
        self.estimators_ = load_candidates(
            {k: v for k, v in arrays.items() if k.startswith("cand")}, meta["candidates_"])


def _validation_sums(
    fitted: list[Any], Xv: np.ndarray, Yv: np.ndarray, random_state: int | None
) -> tuple[OutOfGroupSums, dict[str, Any]]:
    """Sums of the fitted candidates' predictions of a validation set, in row-fold units."""
    n_units = max(1, min(GROUP_K_FOLDS, len(Xv) // MIN_GROUP_ROWS))
    units = np.random.default_rng(random_state).permutation(len(Xv)) % n_units
    sums = OutOfGroupSums(n_units, Yv.shape[1], len(fitted))
    P = np.stack([np.asarray(est.predict(Xv), np.float64).reshape(len(Xv), -1)
                  for est in fitted])
    for u in range(n_units):
        sums.add(u, Yv[units == u], P[:, units == u])
    return sums, {"method": "holdout", "holdout": "given", "units": "row folds",
                  "n_folds": n_units}


def _blend_weights(G: np.ndarray, h: np.ndarray, anchor: int, tau: float) -> np.ndarray:
    """(T, M) weights minimising ``w'Gw - 2h'w + tau s ||w - e_anchor||^2`` on the simplex."""
    m = G.shape[-1]
    scale = np.trace(G, axis1=1, axis2=2) / m
    scale = np.where(scale > 0, scale, 1.0)
    A = G + (tau * scale)[:, None, None] * np.eye(m)
    b = h.copy()
    b[:, anchor] += tau * scale
    return simplex_qp(A, b)


def simplex_qp(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``argmin_w w'A w - 2 b'w`` subject to ``w >= 0``, ``sum w = 1``, for each row.

    ``A`` is (T, M, M) symmetric positive semi-definite, ``b`` (T, M). The minimum lies in
    the relative interior of some face of the simplex, where it is the minimum with the
    face's support and ``sum w = 1`` alone (one KKT solve); so every support is solved
    (batched over the T problems) and the feasible solution with the lowest objective kept.
    A ridge of 1e-10 times the mean diagonal keeps the solves defined when candidates
    predict alike.
    """
    t, m = b.shape
    scale = np.trace(A, axis1=1, axis2=2) / m
    A = A + (1e-10 * np.where(scale > 0, scale, 1.0))[:, None, None] * np.eye(m)
    best_w = np.zeros((t, m))
    best_f = np.full(t, np.inf)
    for size in range(1, m + 1):
        for support in combinations(range(m), size):
            idx = np.array(support)
            kkt = np.zeros((t, size + 1, size + 1))
            kkt[:, :size, :size] = A[:, idx[:, None], idx[None, :]]
            kkt[:, :size, size] = 1.0
            kkt[:, size, :size] = 1.0
            rhs = np.zeros((t, size + 1))
            rhs[:, :size] = b[:, idx]
            rhs[:, size] = 1.0
            ws = np.linalg.solve(kkt, rhs[..., None])[..., 0][:, :size]
            feasible = (ws >= -1e-12).all(axis=1)
            w = np.zeros((t, m))
            w[:, idx] = np.maximum(ws, 0.0)
            with np.errstate(divide="ignore", invalid="ignore"):  # infeasible rows only
                w /= w.sum(axis=1, keepdims=True)
            f = np.einsum("tm,tml,tl->t", w, A, w) - 2.0 * np.einsum("tm,tm->t", w, b)
            better = feasible & (f < best_f)
            best_w[better], best_f[better] = w[better], f[better]
    return best_w
