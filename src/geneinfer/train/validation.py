"""Which studies a training profile comes from, and how a model is validated.

Every training profile belongs to a *group*, its study: the input file by default, or a
sample-metadata column (``--groups series_id``). Groups decide two things:

* **Selection.** Models choose their hyper-parameters by cross-validation over whole groups
  (:mod:`geneinfer.models.selection`); they get the labels through ``fit(..., groups=)``.
* **Reliability.** The per-gene r and MAE stored in a model (and used by ``--min-r``) are
  measured on profiles of studies the fitted model did not see, so they predict what a gene
  gets on a new study (:func:`validation_rule`):

  ========================  ==========================================================
  ``file``                  a validation file was given: scored there
  ``out-of-group``          2+ groups, a model cheap to refit (closed-form, lookup): refit
                            once per fold of whole groups, every scorable group predicted
                            by a model that never saw it; the model itself is then fitted
                            on every profile
  ``group-holdout``         2+ groups, an iterative model (networks, SVR, sample LASSO,
                            combinations): whole groups holding about ``valid_fraction`` of
                            the profiles are held out, used for early stopping and scored
  ``holdout``               one group: a seeded random ``valid_fraction`` of the profiles
                            (scores then describe the same study, and overstate what a new
                            one gets); cheap models are then refit on every profile
  ========================  ==========================================================
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from geneinfer.errors import ConfigError, GeneinferError
from geneinfer.expression import ExpressionData
from geneinfer.models.selection import MIN_GROUP_ROWS, GroupFolds, plan_folds

logger = logging.getLogger(__name__)

#: the sample-metadata column naming each profile's input file (set when files are read)
FILE_GROUP_COLUMN = "dataset"
#: ``--groups none``: every profile in one group (hyper-parameters chosen within the data)
NO_GROUPS = "none"
#: group sizes kept in a model's info (a compendium can have thousands of series)
MAX_LISTED_GROUPS = 200


@dataclass(frozen=True)
class TrainingGroups:
    """The group (study) label of every training profile and the folds they make."""

    labels: np.ndarray
    column: str
    folds: GroupFolds | None

    @property
    def n_groups(self) -> int:
        return len(np.unique(self.labels))

    @property
    def study_aware(self) -> bool:
        """Two or more groups with enough profiles to hold out and score."""
        return self.folds is not None

    def describe(self) -> dict[str, Any]:
        """JSON-able summary for a model's info: column, counts and the largest groups."""
        names, sizes = np.unique(self.labels, return_counts=True)
        order = np.argsort(-sizes, kind="stable")[:MAX_LISTED_GROUPS]
        out: dict[str, Any] = {
            "column": self.column, "n_groups": len(names),
            "sizes": {str(names[i]): int(sizes[i]) for i in order},
        }
        if self.folds is not None:
            out.update(n_groups_scored=self.folds.n_scored, folds=self.folds.method,
                       n_folds=len(self.folds.folds))
        return out


def training_groups(data: ExpressionData, column: str | None = None) -> TrainingGroups:
    """Group labels of ``data``'s profiles from sample-metadata ``column`` (default: the
    input file each profile was read from; ``"none"``: one group for all).

    Raises
    ------
    ConfigError
        The column is not in the sample metadata, or some profiles have no value in it.
    """
    name = column or FILE_GROUP_COLUMN
    if name == NO_GROUPS:
        labels = np.full(data.n_samples, "all", dtype=object).astype(str)
        return TrainingGroups(labels, NO_GROUPS, None)
    if name not in data.samples.columns:
        have = ", ".join(map(str, data.samples.columns[:20])) or "none"
        raise ConfigError(f"--groups {name}: no such sample-metadata column in the training "
                          f"data (columns: {have})")
    values = data.samples[name]
    missing = values.isna() | values.astype(str).str.strip().isin(["", "nan", "NA"])
    if missing.any():
        shown = ", ".join(map(str, data.sample_ids[missing.to_numpy()][:5]))
        raise ConfigError(
            f"--groups {name}: {int(missing.sum())} training profiles have no value "
            f"(e.g. {shown}); every profile needs a group"
        )
    labels = values.astype(str).to_numpy()
    return TrainingGroups(labels, name, plan_folds(labels, len(labels)))


def validation_rule(groups: TrainingGroups, *, has_file: bool, cheap_refit: bool) -> str:
    """``file``, ``out-of-group``, ``group-holdout`` or ``holdout`` (module docstring)."""
    if has_file:
        return "file"
    if groups.study_aware:
        return "out-of-group" if cheap_refit else "group-holdout"
    return "holdout"


def hold_out_groups(groups: TrainingGroups, *, fraction: float, seed: int,
                    min_train: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, valid)`` row indices: whole scorable groups, drawn in a seeded order until
    they hold ``fraction`` of the rows (at least one group), leaving at least ``min_train``
    rows and one scorable group to train on."""
    names, codes, sizes = np.unique(groups.labels, return_inverse=True, return_counts=True)
    scorable = np.flatnonzero(sizes >= MIN_GROUP_ROWS)
    order = np.random.default_rng(seed).permutation(scorable)
    n = len(codes)
    held: list[int] = []
    for g in order[:-1]:  # one scorable group always trains
        if held and sizes[held].sum() >= fraction * n:
            break
        if n - sizes[[*held, g]].sum() < min_train:
            continue
        held.append(int(g))
    if not held:
        raise GeneinferError(
            f"cannot hold out a whole group and keep {min_train} training profiles "
            f"(groups of {groups.column}: {dict(zip(names.tolist(), sizes.tolist()))})"
        )
    valid = np.isin(codes, held)
    return np.flatnonzero(~valid), np.flatnonzero(valid)
