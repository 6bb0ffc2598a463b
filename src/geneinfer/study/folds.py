"""Folds of a study: which pooled samples train, and which data sets test, each unit."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geneinfer.errors import ConfigError
from geneinfer.evaluate.splits import external_test, leave_one_group_out, random_split


@dataclass
class Fold:
    """One unit of evaluation: the pooled training samples a model is trained on (training
    holds out its own validation samples, as ``geneinfer train`` does) and the test sets.

    Attributes
    ----------
    train
        Indices into the pooled training samples.
    test_pool
        Test sets drawn from the pool: name -> indices (a left-out data set, or a random
        share).
    test_external
        Names of external test data sets (another platform), never used for training.
    """

    name: str
    split: str
    train: np.ndarray
    test_pool: dict[str, np.ndarray] = field(default_factory=dict)
    test_external: list[str] = field(default_factory=list)

    @property
    def test_sets(self) -> list[str]:
        return [*self.test_pool, *self.test_external]


def build_folds(datasets: np.ndarray, splits: Mapping[str, Any], *, seed: int,
                where: str = "study config") -> list[Fold]:
    """Folds for the configured splits; ``datasets`` = data set name per pooled sample.

    Uses :mod:`geneinfer.evaluate.splits`; an empty set raises :class:`ConfigError` naming
    the ``[splits]`` setting to change.
    """
    n = len(datasets)
    folds: list[Fold] = []
    try:
        if splits["random"]:
            test = splits["random"]["test"]
            sp = random_split(n, fractions=(1.0 - test, 0.0, test), seed=seed)
            folds.append(Fold("random", "random", sp.train, {"random-test": sp.test}))
        if splits["leave_one_dataset_out"]:
            for sp in leave_one_group_out(datasets, valid_fraction=0.0, seed=seed):
                folds.append(Fold(f"lodo-{sp.name}", "lodo", sp.train, {str(sp.name): sp.test}))
        if splits["external"]:
            sp = external_test(n, 1, valid_fraction=0.0, seed=seed)
            folds.append(Fold("external", "external", sp.train, {}, list(splits["external"])))
    except ConfigError as exc:
        raise ConfigError(f"{where}: [splits]: {exc}") from None
    return folds


def valid_fraction(splits: Mapping[str, Any]) -> float:
    """Share of a fold's training samples that training holds out for validation."""
    if splits["random"]:
        fr = splits["random"]
        return float(fr["valid"]) / (float(fr["train"]) + float(fr["valid"]))
    return float(splits["valid_fraction"])
