"""Per-gene model selection: for every target gene, the candidate with the lowest validation error.

No single method wins on every gene (D-GEX beat linear regression on ~99% of genes, KNN-GE on
fewer); :class:`PerGeneSelector` fits several candidates, measures each gene's error per
candidate, and predicts every gene with its own winner. With groups (studies) the errors are
those of out-of-group predictions (:mod:`geneinfer.models.outofgroup`), so a candidate wins a
gene for what it does on studies it never saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.utils.validation import check_is_fitted

from geneinfer.errors import GeneinferError
from geneinfer.models.base import GeneModel
from geneinfer.models.outofgroup import (
    candidates_state,
    check_xy,
    collect,
    fit_candidate,
    load_candidates,
    outer_folds,
    resolve_candidates,
)
from geneinfer.models.selection import (
    check_validation_pair,
    constant_floor,
    n_distinct,
    nan_mean,
    plan_folds,
    selection_record,
)


class PerGeneSelector(GeneModel):
    """Fit several models; predict each target gene with the one best on validation for it.

    How each gene's errors are measured, by precedence:

    * ``X_val``/``Y_val`` given: validation MAE of candidates fitted on ``X``;
    * ``groups`` with two or more studies of 3+ rows: out-of-group predictions (each group
      predicted by candidates fitted on the other groups, with those groups passed on:
      leave-one-group-out, or group K-fold above 10 groups) scored per gene by the
      within-group z-scored MSE ``2 (1 - r)`` averaged over groups
      (:mod:`geneinfer.models.selection`); the chosen candidates are refit on all rows;
    * otherwise: validation MAE on a random ``validation_fraction`` of the samples.

    Parameters
    ----------
    candidates : sequence
        Registry names (``"ridge"``, ``"knn-ge"``, ``"dgex"``, ``"ridge-mlp"``, ...) and/or
        ``(label, estimator)`` pairs of unfitted :class:`GeneModel` estimators. Default: the
        three methods compared by D-GEX (linear, KNN-GE, D-GEX), with ridge for OLS.
    candidate_params : dict, optional
        Hyper-parameters per registry name, e.g. ``{"dgex": {"hidden": [3000]}}``.
    validation_fraction : float
        Share of samples held out to score candidates (no validation set, no groups).
    refit : bool
        After choosing on an internal split, refit the chosen candidates on all samples
        (always done after out-of-group scoring).
    random_state : int
        Seed of the validation split.

    Attributes
    ----------
    labels_ : list of str
        Candidate labels, in order.
    val_error_ : ndarray (n_candidates, n_targets)
        Validation MAE (or, with groups, out-of-group z-scored MSE) of every candidate on
        every gene.
    choice_ : ndarray (n_targets,)
        Index into ``labels_`` of each gene's chosen candidate.
    estimators_ : dict
        Fitted estimators of the candidates chosen for at least one gene.
    selection_ : dict
        Rule used (``"holdout"``, ``"leave-one-group-out"``, ``"group-k-fold"``), number of
        groups and folds, and each candidate's mean error.
    """

    name = "per-gene-best"
    cheap_refit = False

    def __init__(
        self,
        *,
        candidates: Sequence[Any] = ("ridge", "knn-ge", "dgex"),
        candidate_params: dict[str, dict[str, Any]] | None = None,
        validation_fraction: float = 0.2,
        refit: bool = True,
        random_state: int = 0,
    ) -> None:
        self.candidates = candidates
        self.candidate_params = candidate_params
        self.validation_fraction = validation_fraction
        self.refit = refit
        self.random_state = random_state

    def _resolve(self) -> list[tuple[str, Any]]:
        return resolve_candidates(self.candidates, self.candidate_params)

    def fit(self, X, Y, *, groups=None, X_val=None, Y_val=None):
        """Score every candidate per gene (see the class docstring), keep each gene's best."""
        X, Y = check_xy(X, Y)
        given = check_validation_pair(X_val, Y_val)
        cands = self._resolve()
        self.labels_ = [label for label, _ in cands]
        self.n_features_in_, self.n_targets_ = X.shape[1], Y.shape[1]
        if not given and plan_folds(groups, X.shape[0]) is not None:
            self._fit_out_of_group(cands, X, Y, groups)
            return self
        self._fit_holdout(cands, X, Y, X_val, Y_val)
        self.selection_ = {**self.selection_, "n_groups": n_distinct(groups, X.shape[0])}
        return self

    def _fit_holdout(self, cands, X, Y, X_val, Y_val) -> None:
        """Validation MAE on the given set or a random split."""
        internal = X_val is None
        if internal:
            n_val = round(float(self.validation_fraction) * X.shape[0])
            if not 1 <= n_val <= X.shape[0] - 2:
                raise GeneinferError(
                    f"{X.shape[0]} samples cannot be split with validation_fraction="
                    f"{self.validation_fraction}"
                )
            perm = np.random.default_rng(self.random_state).permutation(X.shape[0])
            tr, va = np.sort(perm[n_val:]), np.sort(perm[:n_val])
            X_fit, Y_fit, X_val, Y_val = X[tr], Y[tr], X[va], Y[va]
        else:
            X_fit, Y_fit = X, Y
            X_val, Y_val = np.asarray(X_val, np.float32), np.asarray(Y_val, np.float32)
        fitted, errors = [], []
        for _, est in cands:
            est.fit(X_fit, Y_fit)
            errors.append(np.nanmean(np.abs(est.predict(X_val) - Y_val), axis=0))
            fitted.append(est)
        self._choose(np.vstack(errors))
        self.selection_ = selection_record(
            "holdout", n_groups=1, grid=self.labels_, scores=np.nanmean(self.val_error_, axis=1),
            score="mae", holdout="random" if internal else "given")
        self.estimators_ = {}
        for i in np.unique(self.choice_):
            est = fitted[i]
            if self.refit and internal:
                est = clone(est).fit(X, Y)
            self.estimators_[self.labels_[i]] = est

    def _fit_out_of_group(self, cands, X, Y, groups) -> None:
        """Out-of-group within-group z-scored MSE per gene; chosen candidates on all rows."""
        folds = outer_folds(groups, X.shape[0], self.random_state)
        sums = collect(cands, X, Y, folds)
        floor = constant_floor(np.nanvar(Y, axis=0))
        scores = nan_mean(sums.candidate_scores(floor), axis=0).T  # (M, T)
        self._choose(scores)
        self.selection_ = selection_record(
            folds.method, n_groups=folds.n_groups, grid=self.labels_,
            scores=nan_mean(scores, axis=1), score="within-group-z-mse",
            n_folds=len(folds.held))
        self.estimators_ = {self.labels_[i]: fit_candidate(clone(cands[i][1]), X, Y, groups)
                            for i in np.unique(self.choice_)}

    def _choose(self, errors: np.ndarray) -> None:
        self.val_error_ = errors.astype(np.float32)
        # genes with no validation value anywhere go to the first candidate
        self.choice_ = np.argmin(np.nan_to_num(self.val_error_, nan=np.inf), axis=0).astype(
            np.int64
        )

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "estimators_")
        X = np.asarray(X, dtype=np.float32)
        out = np.empty((X.shape[0], self.n_targets_), dtype=np.float32)
        for label, est in self.estimators_.items():
            genes = self.choice_ == self.labels_.index(label)
            out[:, genes] = est.predict(X)[:, genes]
        return out

    def chosen_counts(self) -> dict[str, int]:
        """How many genes each candidate predicts."""
        check_is_fitted(self, "choice_")
        return {lab: int((self.choice_ == i).sum()) for i, lab in enumerate(self.labels_)}

    # ---- pickle-free state ----------------------------------------------------------
    def fitted_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        check_is_fitted(self, "estimators_")
        arrays, specs = candidates_state(self.estimators_)
        arrays.update({"choice_": self.choice_, "val_error_": self.val_error_})
        meta = {"labels_": self.labels_, "candidates_": specs,
                "n_features_in_": int(self.n_features_in_), "n_targets_": int(self.n_targets_),
                "selection_": getattr(self, "selection_", None)}
        return arrays, meta

    def load_fitted_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.choice_ = np.asarray(arrays["choice_"], dtype=np.int64)
        self.val_error_ = np.asarray(arrays["val_error_"], dtype=np.float32)
        self.labels_ = list(meta["labels_"])
        self.n_features_in_, self.n_targets_ = int(meta["n_features_in_"]), int(meta["n_targets_"])
        if meta.get("selection_") is not None:
            self.selection_ = meta["selection_"]
        self.estimators_ = load_candidates(
            {k: v for k, v in arrays.items() if k.startswith("cand")}, meta["candidates_"])

