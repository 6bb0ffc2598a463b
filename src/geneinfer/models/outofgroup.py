"""Out-of-group predictions of several candidate models, kept as per-unit sums.

Used by the model combinations (:class:`geneinfer.models.ensemble.PerGeneSelector`,
:class:`geneinfer.models.stack.StackedModel`): every row is predicted by candidates that
never saw its group (each fold of :func:`geneinfer.models.selection.plan_folds` is fitted
on the other groups), or, without groups, by candidates fitted on the other folds of a
seeded K-fold split of the rows. The predictions themselves are not kept (at the D-GEX
shapes they would be ``n x T x M`` values); per *unit* (a held-out group, or a row fold
without groups) and gene, the sums of ``y``, ``y^2``, ``p_m``, ``p_m p_l`` and
``p_m y`` are, which is all that within-unit centred least squares and correlations need.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import KFold

from geneinfer.errors import ConfigError, GeneinferError
from geneinfer.models.base import GeneModel, arrays_under
from geneinfer.models.selection import (
    GROUP_K_FOLDS,
    MIN_GROUP_ROWS,
    GroupFolds,
    plan_folds,
    zscore_mse_from_moments,
)


class TooFewSamplesError(GeneinferError, ValueError):
    """Too few training rows to split (also a ``ValueError``, as scikit-learn expects)."""


#: rows predicted at once per held-out unit (bounds the memory of M candidates' predictions)
_PREDICT_ROWS = 512


# ---------------------------------------------------------------------------- candidates
def resolve_candidates(
    candidates: Sequence[Any], params: dict[str, dict[str, Any]] | None
) -> list[tuple[str, Any]]:
    """``(label, unfitted estimator)`` pairs from registry names and/or (label, model)."""
    from geneinfer.models.registry import make_model

    params = params or {}
    out: list[tuple[str, Any]] = []
    for cand in candidates:
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


def fit_candidate(est: Any, X: np.ndarray, Y: np.ndarray, groups: np.ndarray | None) -> Any:
    """``est.fit(X, Y, groups=groups)``, without ``groups`` for models that take none."""
    if groups is not None and "groups" in inspect.signature(est.fit).parameters:
        return est.fit(X, Y, groups=groups)
    return est.fit(X, Y)


def candidates_state(
    estimators: dict[str, Any],
) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Pickle-free state of fitted candidates: arrays prefixed ``cand{k}.`` and specs."""
    arrays: dict[str, np.ndarray] = {}
    specs = []
    for k, (label, est) in enumerate(estimators.items()):
        kind = getattr(est, "name", "")
        if not isinstance(est, GeneModel) or not kind:
            raise TypeError(f"candidate {label!r} ({type(est).__name__}) cannot be saved "
                            "without pickling; use geneinfer models as candidates")
        est_arrays, est_meta = est.fitted_state()
        arrays.update({f"cand{k}.{key}": val for key, val in est_arrays.items()})
        specs.append({"label": label, "name": kind, "params": _jsonable_params(est),
                      "meta": est_meta})
    return arrays, specs


def load_candidates(
    arrays: dict[str, np.ndarray], specs: list[dict[str, Any]]
) -> dict[str, Any]:
    """Fitted candidates from :func:`candidates_state`'s output."""
    from geneinfer.models.registry import make_model

    out = {}
    for k, spec in enumerate(specs):
        est = make_model(spec["name"], **spec["params"])
        prefix = f"cand{k}."
        est.load_fitted_state(arrays_under(arrays, prefix), spec["meta"])
        out[spec["label"]] = est
    return out


def _jsonable_params(est: Any) -> dict[str, Any]:
    out = {}
    for key, value in est.get_params(deep=False).items():
        if isinstance(value, tuple):
            value = list(value)
        out[key] = value
    return out


def check_xy(X: Any, Y: Any) -> tuple[np.ndarray, np.ndarray]:
    """float32 2-D ``X`` and ``Y`` with the same rows."""
    X = np.asarray(X, dtype=np.float32)
    Y = np.asarray(Y, dtype=np.float32)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise GeneinferError(
            f"X and Y must be 2-D with the same samples, got {X.shape} and {Y.shape}"
        )
    return X, Y


# ---------------------------------------------------------------------------- folds
@dataclass
class OuterFolds:
    """Held-out row masks and the unit (group, or row fold) of every row."""

    method: str  # "leave-one-group-out", "group-k-fold" or "k-fold"
    held: list[np.ndarray]  # boolean row masks
    units: np.ndarray  # (n,) unit code of each row
    n_units: int
    groups: np.ndarray | None  # group codes for the candidates' own selection
    n_groups: int

    def describe(self) -> dict[str, Any]:
        return {"method": self.method, "n_groups": self.n_groups, "n_folds": len(self.held),
                "n_units": self.n_units}


def outer_folds(groups: Any, n: int, random_state: int | None) -> OuterFolds:
    """Folds of whole groups (the rule of :func:`plan_folds`), else a seeded K-fold of rows."""
    plan: GroupFolds | None = plan_folds(groups, n)
    if plan is not None:
        return OuterFolds(plan.method, [plan.held_out(k) for k in range(len(plan.folds))],
                          plan.codes, plan.n_groups, plan.codes, plan.n_groups)
    if n < 2 * MIN_GROUP_ROWS:
        raise TooFewSamplesError(
            f"out-of-fold predictions need at least {2 * MIN_GROUP_ROWS} samples, got "
            f"n_samples = {n}"
        )
    k = min(GROUP_K_FOLDS, n // MIN_GROUP_ROWS)
    units = np.empty(n, dtype=np.int64)
    held = []
    for i, (_, test) in enumerate(KFold(k, shuffle=True, random_state=random_state).split(
            np.arange(n))):
        units[test] = i
        mask = np.zeros(n, dtype=bool)
        mask[test] = True
        held.append(mask)
    n_groups = 1 if groups is None else int(np.unique(np.asarray(groups)).size)
    return OuterFolds("k-fold", held, units, k, None, n_groups)


# ---------------------------------------------------------------------------- sums
class OutOfGroupSums:
    """Per unit and gene: sums of truth and M candidates' out-of-group predictions.

    Rows whose truth is NaN are left out for that gene. ``G``/``h``/``yy`` below are
    centred within each unit, so unit offsets (study effects) do not count.
    """

    def __init__(self, n_units: int, n_genes: int, n_candidates: int) -> None:
        u, t, m = n_units, n_genes, n_candidates
        self.n = np.zeros((u, t))
        self.sy = np.zeros((u, t))
        self.syy = np.zeros((u, t))
        self.sp = np.zeros((u, t, m))
        self.spy = np.zeros((u, t, m))
        self.spp = np.zeros((u, t, m, m))

    def add(self, unit: int, Y: np.ndarray, P: np.ndarray) -> None:
        """Truth (r x T) and predictions (M x r x T) of rows of one unit."""
        ok = ~np.isnan(Y)
        w = ok.astype(np.float64)
        y = np.where(ok, Y, 0.0).astype(np.float64)
        p = np.asarray(P, np.float64) * w[None]
        self.n[unit] += w.sum(axis=0)
        self.sy[unit] += y.sum(axis=0)
        self.syy[unit] += np.einsum("rt,rt->t", y, y)
        self.sp[unit] += p.sum(axis=1).T
        for a in range(p.shape[0]):  # one pass per pair: einsum over (m, l, r, t) is slow
            self.spy[unit, :, a] += np.einsum("rt,rt->t", p[a], y)
            for b in range(a, p.shape[0]):
                prod = np.einsum("rt,rt->t", p[a], p[b])
                self.spp[unit, :, a, b] += prod
                if b != a:
                    self.spp[unit, :, b, a] += prod

    def centred(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per unit: ``G`` (U,T,M,M), ``h`` (U,T,M), ``yy`` (U,T) centred, and counts (U,T)."""
        n = np.maximum(self.n, 1.0)
        mp = self.sp / n[..., None]
        my = self.sy / n
        G = self.spp - self.n[..., None, None] * mp[..., :, None] * mp[..., None, :]
        h = self.spy - self.n[..., None] * mp * my[..., None]
        yy = np.maximum(self.syy - self.n * my * my, 0.0)
        return G, h, yy, self.n

    def candidate_scores(self, floor: np.ndarray) -> np.ndarray:
        """(U, T, M) within-unit ``2 (1 - r)`` of each candidate (NaN: unit not scored)."""
        G, h, yy, n = self.centred()
        var_p = np.diagonal(G, axis1=2, axis2=3)
        scores = zscore_mse_from_moments(h, var_p, yy[..., None],
                                         floor_y=(floor[None, :] * n)[..., None])
        scores[n < MIN_GROUP_ROWS] = np.nan
        return scores


def collect(
    cands: list[tuple[str, Any]], X: np.ndarray, Y: np.ndarray, folds: OuterFolds
) -> OutOfGroupSums:
    """Fit every candidate on each fold's training rows; sum its held-out predictions."""
    sums = OutOfGroupSums(folds.n_units, Y.shape[1], len(cands))
    for held in folds.held:
        train = ~held
        groups = None if folds.groups is None else folds.groups[train]
        fitted = [fit_candidate(clone(est), X[train], Y[train], groups) for _, est in cands]
        rows = np.flatnonzero(held)
        for unit in np.unique(folds.units[rows]):
            unit_rows = rows[folds.units[rows] == unit]
            for start in range(0, len(unit_rows), _PREDICT_ROWS):
                part = unit_rows[start:start + _PREDICT_ROWS]
                P = np.stack([np.asarray(est.predict(X[part]), np.float32) for est in fitted])
                sums.add(int(unit), Y[part], P)
    return sums
