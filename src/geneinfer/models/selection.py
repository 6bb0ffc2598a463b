"""Study-aware choice of hyper-parameters: folds of whole groups and the within-group score.

A model that chooses anything from data (a penalty, a number of neighbours or components, an
epoch count, a per-gene winner) is told which study each training row comes from through
``fit(X, Y, *, groups=...)``. Choosing on rows drawn at random from the same studies rewards
fitting each study's own structure; choosing on whole held-out studies measures what a new
study gets.

Rule (:func:`plan_folds`)
-------------------------
* Groups with fewer than :data:`MIN_GROUP_ROWS` (3) rows are never held out (a correlation
  over two rows says nothing); they always stay in the training folds.
* With at least two groups of 3 or more rows ("scorable" groups):

  - up to :data:`LOGO_MAX_GROUPS` (10) of them: **leave-one-group-out**, one fold per
    scorable group;
  - more: **group K-fold** with :data:`GROUP_K_FOLDS` (5) folds of whole groups, balanced by
    rows (largest group first into the fold with the fewest rows, the rule of
    scikit-learn's ``GroupKFold``; deterministic).
* Otherwise (``groups=None``, one group, or fewer than two scorable groups) the model keeps
  its single-group rule (GCV for ridge and PCR, a random hold-out for the others) and
  :func:`plan_folds` returns ``None``.

Score (:func:`zscore_mse`, :func:`zscore_mse_from_moments`)
-----------------------------------------------------------
For a held-out group ``g`` and a gene ``j``, truth and prediction are z-scored *within the
group* (population standard deviations) and their mean squared difference is taken; this
equals ``2 (1 - r_gj)`` with ``r_gj`` the Pearson correlation of truth and prediction over
the group's rows, so study offsets and scales do not count. Genes whose truth is constant in
the group are left out for that group; a prediction constant in the group scores 2
(``r = 0``). A group's score is the mean over its genes; the cross-validation score is the
mean over held-out groups, each group weighing 1 (:class:`GroupScores`). Lower is better.

Every fitted model records the rule it used in ``selection_`` (see :func:`selection_record`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from geneinfer.errors import ConfigError, GeneinferError

#: groups with fewer rows are never held out or scored
MIN_GROUP_ROWS = 3
#: leave-one-group-out up to this many scorable groups, group K-fold above
LOGO_MAX_GROUPS = 10
#: number of folds of group K-fold
GROUP_K_FOLDS = 5
#: a gene's truth counts as constant in a group when its variance there is below this
#: fraction of its variance over all training rows (rounding noise of the centred sums)
CONSTANT_FRACTION = 1e-10


# ---------------------------------------------------------------------------- groups
def group_codes(groups: Any, n_rows: int) -> tuple[np.ndarray, int]:
    """Integer codes ``0..G-1`` (one per row) and ``G`` for one label per training row.

    Labels may be any hashable scalars (study ids, GEO series names, integers).
    """
    labels = np.asarray(groups)
    if labels.ndim != 1 or labels.shape[0] != n_rows:
        raise GeneinferError(
            f"groups must hold one label per training row: got shape {labels.shape} for "
            f"{n_rows} rows"
        )
    if labels.dtype.kind == "O":  # mixed types: compare as text
        labels = labels.astype(str)
    if labels.dtype.kind == "f" and np.isnan(labels).any():
        raise GeneinferError("groups contain NaN labels; give every row a group")
    _, codes = np.unique(labels, return_inverse=True)
    codes = codes.reshape(-1).astype(np.int64)
    return codes, int(codes.max()) + 1 if n_rows else 0


@dataclass(frozen=True)
class GroupFolds:
    """Folds of whole groups for study-aware selection (see the module docstring).

    Attributes
    ----------
    method
        ``"leave-one-group-out"`` or ``"group-k-fold"``.
    codes
        Group code of every row (``0..n_groups-1``).
    n_groups
        Distinct groups given (including those too small to score).
    sizes
        Rows per group code.
    folds
        Group codes held out by each fold (scorable groups only).
    """

    method: str
    codes: np.ndarray
    n_groups: int
    sizes: np.ndarray
    folds: tuple[np.ndarray, ...]

    def held_out(self, fold: int) -> np.ndarray:
        """Boolean mask of the rows held out by fold ``fold``."""
        return np.isin(self.codes, self.folds[fold])

    @property
    def n_scored(self) -> int:
        """Number of groups that are held out and scored."""
        return int(sum(len(f) for f in self.folds))

    def describe(self) -> dict[str, Any]:
        """JSON-able summary for ``selection_``."""
        return {"method": self.method, "n_groups": self.n_groups,
                "n_groups_scored": self.n_scored, "n_folds": len(self.folds)}


def plan_folds(groups: Any, n_rows: int, *, max_scored: int | None = None,
               seed: int = 0) -> GroupFolds | None:
    """The folds the rule of the module docstring gives, or ``None`` for the single-group rule.

    ``max_scored`` caps the groups held out and scored (out of core, where each scored group
    keeps its own sums): above it, a seeded sample of ``max_scored`` scorable groups is
    held out, and the other groups always train.
    """
    if groups is None:
        return None
    codes, n_groups = group_codes(groups, n_rows)
    sizes = np.bincount(codes, minlength=n_groups)
    scorable = np.flatnonzero(sizes >= MIN_GROUP_ROWS)
    if max_scored is not None and scorable.size > max_scored:
        rng = np.random.default_rng([seed, 11])
        scorable = np.sort(rng.choice(scorable, max(int(max_scored), 0), replace=False))
    if scorable.size < 2:
        return None
    if scorable.size <= LOGO_MAX_GROUPS:
        folds = tuple(np.array([g]) for g in scorable)
        return GroupFolds("leave-one-group-out", codes, n_groups, sizes, folds)
    # largest first into the fold with the fewest rows (ties: lowest code, then fold)
    order = scorable[np.lexsort((scorable, -sizes[scorable]))]
    load = np.zeros(GROUP_K_FOLDS, dtype=np.int64)
    members: list[list[int]] = [[] for _ in range(GROUP_K_FOLDS)]
    for g in order:
        k = int(np.argmin(load))
        members[k].append(int(g))
        load[k] += sizes[g]
    folds = tuple(np.sort(np.array(m, dtype=np.int64)) for m in members if m)
    return GroupFolds("group-k-fold", codes, n_groups, sizes, folds)


def n_distinct(groups: Any, n_rows: int) -> int:
    """Number of distinct labels in ``groups`` (1 for ``None``)."""
    return 1 if groups is None else group_codes(groups, n_rows)[1]


# ---------------------------------------------------------------------------- scores
def zscore_mse_from_moments(
    cov: np.ndarray, var_p: np.ndarray, var_y: np.ndarray, *, floor_y: np.ndarray | float = 0.0
) -> np.ndarray:
    """``2 (1 - r)`` from within-group (co)variances of truth ``y`` and prediction ``p``.

    Any common scale (sums or means over the group's rows) works: ``r`` is scale-free.
    NaN where ``var_y <= floor_y`` (truth constant in the group: not scored); ``r = 0`` where
    the prediction is constant.
    """
    cov, var_p, var_y = np.broadcast_arrays(*(np.asarray(a, np.float64) for a in
                                              (cov, var_p, var_y)))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = cov / np.sqrt(var_p * var_y)
    r = np.where((var_p > 0) & np.isfinite(r), np.clip(r, -1.0, 1.0), 0.0)
    return np.where(var_y > floor_y, 2.0 * (1.0 - r), np.nan)


def zscore_mse(
    Y: np.ndarray, P: np.ndarray, *, floor_y: np.ndarray | float = 0.0
) -> np.ndarray:
    """Per-gene ``2 (1 - r)`` of one group's truth ``Y`` (n x T) and predictions ``P``.

    ``P`` is (n x T) or (H x n x T) for H candidates (result: (T,) or (H, T)).
    """
    Yc = np.asarray(Y, np.float64)
    Yc = Yc - Yc.mean(axis=0)
    Pc = np.asarray(P, np.float64)
    Pc = Pc - Pc.mean(axis=-2, keepdims=True)
    n = Yc.shape[0]
    cov = np.einsum("...ij,ij->...j", Pc, Yc) / n
    var_p = np.einsum("...ij,...ij->...j", Pc, Pc) / n
    var_y = np.einsum("ij,ij->j", Yc, Yc) / n
    return zscore_mse_from_moments(cov, var_p, var_y, floor_y=floor_y)


class GroupMoments:
    """Sums for :func:`zscore_mse` of one group whose predictions arrive in row chunks.

    Rows are shifted by the first chunk's truth means before summing (float64), so the
    variances of raw log2 values (~8, spread ~1) keep their digits.

    Parameters
    ----------
    n_candidates, n_genes
        Shape of the score: H candidates (e.g. a grid of ``k``) by T genes.
    """

    def __init__(self, n_candidates: int, n_genes: int) -> None:
        shape = (n_candidates, n_genes)
        self.n = 0
        self.shift: np.ndarray | None = None
        self.sp, self.spp, self.spy = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        self.sy, self.syy = np.zeros(n_genes), np.zeros(n_genes)

    def add(self, Y: np.ndarray, P: np.ndarray) -> None:
        """Truth ``Y`` (r x T) and predictions ``P`` (H x r x T) of the same rows."""
        Y = np.asarray(Y, np.float64)
        if self.shift is None:
            self.shift = Y.mean(axis=0)
        yc = Y - self.shift
        pc = np.asarray(P, np.float64) - self.shift
        self.n += Y.shape[0]
        self.sy += yc.sum(axis=0)
        self.syy += np.einsum("ij,ij->j", yc, yc)
        self.sp += pc.sum(axis=1)
        self.spp += np.einsum("hij,hij->hj", pc, pc)
        self.spy += np.einsum("hij,ij->hj", pc, yc)

    def scores(self, floor_y: np.ndarray | float = 0.0) -> np.ndarray:
        """(H, T) ``2 (1 - r)``; ``floor_y`` is a per-row variance floor of the truth."""
        n = max(self.n, 1)
        my, mp = self.sy / n, self.sp / n
        var_y = self.syy / n - my * my
        var_p = np.maximum(self.spp / n - mp * mp, 0.0)
        cov = self.spy / n - mp * my
        return zscore_mse_from_moments(cov, var_p, var_y[None, :], floor_y=floor_y)


def nan_mean(values: np.ndarray, axis: int) -> np.ndarray:
    """Mean of the finite values along ``axis`` (NaN where there are none, no warning)."""
    values = np.asarray(values, np.float64)
    ok = np.isfinite(values)
    count = ok.sum(axis=axis)
    total = np.where(ok, values, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def constant_floor(var_all: np.ndarray) -> np.ndarray:
    """Per-gene variance below which a gene counts as constant within a group."""
    return CONSTANT_FRACTION * np.asarray(var_all, np.float64)


class GroupScores:
    """Scores of ``H`` candidates on ``T`` genes, added one held-out group at a time.

    ``overall()`` is the mean over groups of each group's mean over its scored genes (every
    group weighs 1); ``per_gene()`` the mean over groups for each gene.
    """

    def __init__(self, n_candidates: int, n_genes: int) -> None:
        self.group_means: list[np.ndarray] = []
        self.groups: list[int] = []
        self.gene_sum = np.zeros((n_candidates, n_genes))
        self.gene_count = np.zeros((n_candidates, n_genes))

    def add(self, group: int, scores: np.ndarray) -> None:
        """Scores (H x T, NaN = gene not scored) of the candidates on held-out group ``group``."""
        scores = np.asarray(scores, np.float64).reshape(self.gene_sum.shape)
        ok = np.isfinite(scores)
        if not ok.any():  # every gene constant in this group: it carries no information
            return
        self.groups.append(int(group))
        self.group_means.append(nan_mean(scores, axis=1))
        self.gene_sum += np.where(ok, scores, 0.0)
        self.gene_count += ok

    def overall(self) -> np.ndarray:
        """(H,) cross-validation score of each candidate."""
        if not self.group_means:
            raise GeneinferError("no held-out group could be scored (every gene constant)")
        return np.mean(np.vstack(self.group_means), axis=0)

    def per_gene(self) -> np.ndarray:
        """(H, T) mean score over groups (NaN where a gene was never scored)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.gene_sum / self.gene_count

    def best(self) -> int:
        """Index of the candidate with the lowest overall score (first of ties)."""
        return int(np.argmin(np.nan_to_num(self.overall(), nan=np.inf)))

    def best_per_gene(self, default: int = 0) -> np.ndarray:
        """(T,) index of each gene's best candidate (``default`` where never scored)."""
        per = self.per_gene()
        never = ~np.isfinite(per).any(axis=0)
        best = np.argmin(np.nan_to_num(per, nan=np.inf), axis=0)
        best[never] = default
        return best.astype(np.int64)


# ---------------------------------------------------------------------------- records
def selection_record(
    method: str,
    *,
    n_groups: int,
    folds: GroupFolds | None = None,
    grid: Any = None,
    scores: Any = None,
    score: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The JSON-able ``selection_`` of a fitted model.

    ``method`` is ``"gcv"``, ``"holdout"``, ``"leave-one-group-out"`` or ``"group-k-fold"``;
    ``grid`` the candidates, ``scores`` their scores (lower is better) and ``score`` what
    was measured (``"gcv"``, ``"mse"``, ``"standardized-mse"`` or ``"within-group-z-mse"``).
    """
    out: dict[str, Any] = {"method": method, "n_groups": int(n_groups)}
    if folds is not None:
        out.update(folds.describe())
    if score is not None:
        out["score"] = score
    if grid is not None:
        out["grid"] = _jsonable(grid)
    if scores is not None:
        out["scores"] = _jsonable(scores)
    out.update({k: _jsonable(v) for k, v in extra.items()})
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def check_validation_pair(X_val: Any, Y_val: Any) -> bool:
    """Whether a validation set was given (both or neither must be)."""
    if (X_val is None) != (Y_val is None):
        raise ConfigError("give both X_val and Y_val, or neither")
    return X_val is not None


def score_gene_subset(
    n_targets: int, n_genes: int | None, random_state: int | None
) -> np.ndarray:
    """Sorted seeded random subset of ``n_genes`` target columns (all when fewer or ``None``).

    A hyper-parameter shared by all genes is chosen from the mean score over genes; a random
    1,000 of them estimate that mean to within a few thousandths, at a tenth of the cost.
    """
    if n_genes is None or n_genes >= n_targets:
        return np.arange(n_targets)
    if n_genes < 1:
        raise ConfigError(f"cv_genes must be a positive integer or None, got {n_genes!r}")
    rng = np.random.default_rng(random_state)
    return np.sort(rng.choice(n_targets, int(n_genes), replace=False))
