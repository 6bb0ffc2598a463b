"""Per-gene model selection: for every target gene, the candidate with the lowest validation error.

No single method wins on every gene (D-GEX beat linear regression on ~99% of genes, KNN-GE on
fewer); :class:`PerGeneSelector` fits several candidates, measures each gene's validation
MAE per candidate, and predicts every gene with its own winner.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.utils.validation import check_is_fitted

from geneinfer.errors import ConfigError, GeneinferError
from geneinfer.models.base import GeneModel
from geneinfer.models.registry import make_model


def _jsonable_params(est: Any) -> dict[str, Any]:
    out = {}
    for key, value in est.get_params(deep=False).items():
        if isinstance(value, tuple):
            value = list(value)
        out[key] = value
    return out


class PerGeneSelector(GeneModel):
    """Fit several models; predict each target gene with the one best on validation for it.

    Parameters
    ----------
    candidates : sequence
        Registry names (``"ridge"``, ``"knn-ge"``, ``"dgex"``, ``"ridge-mlp"``, ...) and/or
        ``(label, estimator)`` pairs of unfitted :class:`GeneModel` estimators. Default: the
        three methods compared by D-GEX (linear, KNN-GE, D-GEX), with ridge for OLS.
    candidate_params : dict, optional
        Hyper-parameters per registry name, e.g. ``{"dgex": {"hidden": [3000]}}``.
    validation_fraction : float
        Share of samples held out to score candidates when ``X_val`` is not given.
    refit : bool
        After choosing (internal split only), refit the chosen candidates on all samples.
    random_state : int
        Seed of the validation split.

    Attributes
    ----------
    labels_ : list of str
        Candidate labels, in order.
    val_error_ : ndarray (n_candidates, n_targets)
        Validation MAE of every candidate on every gene.
    choice_ : ndarray (n_targets,)
        Index into ``labels_`` of each gene's chosen candidate.
    estimators_ : dict
        Fitted estimators of the candidates chosen for at least one gene.
    """

    name = "per-gene-best"

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
        params = self.candidate_params or {}
        out: list[tuple[str, Any]] = []
        for cand in self.candidates:
            if isinstance(cand, str):
                out.append((cand, make_model(cand, **params.get(cand, {}))))
            elif isinstance(cand, (tuple, list)) and len(cand) == 2:
                out.append((str(cand[0]), clone(cand[1])))
            else:
                raise ConfigError(f"candidate {cand!r} is neither a model name nor (label, model)")
        labels = [label for label, _ in out]
        if len(out) < 1 or len(set(labels)) != len(labels):
            raise ConfigError(f"candidates need at least one model and unique labels: {labels}")
        return out

    def fit(self, X, Y, *, X_val=None, Y_val=None):
        """Score every candidate per gene on validation data, keep each gene's best."""
        X = np.asarray(X, dtype=np.float32)
        Y = np.asarray(Y, dtype=np.float32)
        if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
            raise GeneinferError(
                f"X and Y must be 2-D with the same samples, got {X.shape} and {Y.shape}"
            )
        internal = X_val is None
        if internal:
            if Y_val is not None:
                raise ConfigError("give both X_val and Y_val, or neither")
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
        cands = self._resolve()
        fitted, errors = [], []
        for _, est in cands:
            est.fit(X_fit, Y_fit)
            errors.append(np.nanmean(np.abs(est.predict(X_val) - Y_val), axis=0))
            fitted.append(est)
        self.labels_ = [label for label, _ in cands]
        self.val_error_ = np.vstack(errors).astype(np.float32)
        # genes with no validation value anywhere go to the first candidate
        self.choice_ = np.argmin(np.nan_to_num(self.val_error_, nan=np.inf), axis=0).astype(
            np.int64
        )
        self.estimators_ = {}
        for i in np.unique(self.choice_):
            est = fitted[i]
            if self.refit and internal:
                est = clone(est).fit(X, Y)
            self.estimators_[self.labels_[i]] = est
        self.n_features_in_, self.n_targets_ = X.shape[1], Y.shape[1]
        return self

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
        arrays = {"choice_": self.choice_, "val_error_": self.val_error_}
        specs = []
        for k, (label, est) in enumerate(self.estimators_.items()):
            kind = getattr(est, "name", "")
            if not isinstance(est, GeneModel) or not kind:
                raise TypeError(f"candidate {label!r} ({type(est).__name__}) cannot be saved "
                                "without pickling; use geneinfer models as candidates")
            est_arrays, est_meta = est.fitted_state()
            arrays.update({f"cand{k}.{key}": val for key, val in est_arrays.items()})
            specs.append({"label": label, "name": kind, "params": _jsonable_params(est),
                          "meta": est_meta})
        meta = {"labels_": self.labels_, "candidates_": specs,
                "n_features_in_": int(self.n_features_in_), "n_targets_": int(self.n_targets_)}
        return arrays, meta

    def load_fitted_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.choice_ = np.asarray(arrays["choice_"], dtype=np.int64)
        self.val_error_ = np.asarray(arrays["val_error_"], dtype=np.float32)
        self.labels_ = list(meta["labels_"])
        self.n_features_in_, self.n_targets_ = int(meta["n_features_in_"]), int(meta["n_targets_"])
        self.estimators_ = {}
        for k, spec in enumerate(meta["candidates_"]):
            est = make_model(spec["name"], **spec["params"])
            prefix = f"cand{k}."
            est.load_fitted_state(
                {key[len(prefix):]: v for key, v in arrays.items() if key.startswith(prefix)},
                spec["meta"],
            )
            self.estimators_[spec["label"]] = est
