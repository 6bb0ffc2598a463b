"""Train / validation / test splits.

* :func:`random_split` – D-GEX's random 80 / 10 / 10 split of one compendium.
* :func:`leave_one_group_out` – each study (or platform, tissue) in turn is the test set;
  validation samples are carved from the *training* groups, never from the test group, so
  model selection sees nothing of the held-out study.
* :func:`external_test` – train / validation from one dataset, a fixed test set from another
  (D-GEX: GEO arrays -> GTEx / 1000 Genomes RNA-seq).

Each returns :class:`Split` tuples of sorted integer index arrays. A split that would leave a
set empty raises :class:`~geneinfer.errors.ConfigError` naming the split and the fix.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal, NamedTuple

import numpy as np

from geneinfer.errors import ConfigError


class Split(NamedTuple):
    """One split: ``name`` and sorted index arrays ``train``, ``valid``, ``test``.

    For :func:`external_test`, ``test`` indexes the external dataset, the others the
    training dataset.
    """

    name: str
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3:
        raise ConfigError(
            f"split fractions must be 3 numbers (train, validation, test), got {list(fractions)}"
        )
    f = tuple(float(x) for x in fractions)
    if any(not (x >= 0) for x in f) or abs(sum(f) - 1.0) > 1e-6 or f[0] == 0:
        raise ConfigError(
            f"split fractions {list(fractions)} must be non-negative, sum to 1 and give training "
            "a share, e.g. 0.8, 0.1, 0.1"
        )
    return f  # type: ignore[return-value]


def _require(name: str, what: str, idx: np.ndarray, fraction: float, n: int, fix: str) -> None:
    if fraction > 0 and len(idx) == 0:
        raise ConfigError(
            f"split {name!r}: the {what} set is empty ({fraction:g} of {n} samples); {fix}"
        )


def random_split(n: int, *, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> Split:
    """Random train / validation / test split of ``n`` samples (D-GEX: 80 / 10 / 10).

    Set sizes are ``round(n * f)`` for validation and test, the rest for training. A zero
    fraction gives an intentionally empty set.
    """
    f = _check_fractions(fractions)
    if n < 1:
        raise ConfigError(f"split 'random': no samples to split (n={n})")
    perm = np.random.default_rng(seed).permutation(n)
    n_valid, n_test = round(n * f[1]), round(n * f[2])
    valid, test, train = (
        perm[:n_valid],
        perm[n_valid : n_valid + n_test],
        perm[n_valid + n_test :],
    )
    fix = "use more samples or larger fractions"
    _require("random", "validation", valid, f[1], n, fix)
    _require("random", "test", test, f[2], n, fix)
    _require("random", "training", train, f[0], n, "lower the validation/test fractions")
    return Split("random", np.sort(train), np.sort(valid), np.sort(test))


def _carve_valid(
    pool: np.ndarray,
    pool_groups: np.ndarray,
    fraction: float,
    by: Literal["sample", "group"],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Split training-pool indices into (train, valid)."""
    if fraction == 0:
        return pool, pool[:0]
    if by == "group":
        names = np.unique(pool_groups)
        n_valid_groups = max(1, round(len(names) * fraction)) if len(names) > 1 else 0
        chosen = rng.choice(names, size=n_valid_groups, replace=False)
        is_valid = np.isin(pool_groups, chosen)
    else:
        n_valid = round(len(pool) * fraction)
        is_valid = np.zeros(len(pool), dtype=bool)
        is_valid[rng.choice(len(pool), size=n_valid, replace=False)] = True
    return np.sort(pool[~is_valid]), np.sort(pool[is_valid])


def leave_one_group_out(
    groups: Sequence[object] | np.ndarray,
    *,
    valid_fraction: float = 0.1,
    valid_by: Literal["sample", "group"] = "sample",
    seed: int = 0,
) -> Iterator[Split]:
    """Yield one :class:`Split` per group, named after it, with that group as the test set.

    Parameters
    ----------
    groups
        Group (study) label of each sample.
    valid_fraction
        Share of the training pool (all other groups) used for validation.
    valid_by
        ``"sample"``: random samples of the training groups; ``"group"``: whole training
        groups (a cross-study validation; needs at least 3 groups).
    seed
        Seed for the validation draw (each split uses its own stream derived from it).
    """
    g = np.asarray(groups).astype(str)
    names = list(dict.fromkeys(g.tolist()))  # first-appearance order
    if len(names) < 2:
        raise ConfigError(
            f"split 'leave-one-group-out': needs at least 2 groups, got {len(names)} "
            f"({', '.join(names) or 'none'}); add studies or use a random split"
        )
    if not (0 <= valid_fraction < 1):
        raise ConfigError(f"validation fraction must be in [0, 1), got {valid_fraction}")
    if valid_by not in ("sample", "group"):
        raise ConfigError(f"valid_by must be 'sample' or 'group', got {valid_by!r}")
    for k, name in enumerate(names):
        test = np.flatnonzero(g == name)
        pool = np.flatnonzero(g != name)
        rng = np.random.default_rng([seed, k])
        train, valid = _carve_valid(pool, g[pool], valid_fraction, valid_by, rng)
        split = f"leave out {name}"
        fix = (
            "add studies, use valid_by='sample' or raise the validation fraction"
            if valid_by == "group"
            else "raise the validation fraction or add samples"
        )
        _require(split, "validation", valid, valid_fraction, len(pool), fix)
        _require(split, "training", train, 1.0, len(pool), "lower the validation fraction")
        yield Split(name, train, valid, test)


def external_test(
    n_train: int,
    n_test: int,
    *,
    valid_fraction: float = 0.1,
    seed: int = 0,
    name: str = "external",
) -> Split:
    """Train / validation from one dataset of ``n_train`` samples, all ``n_test`` samples of
    another dataset as the fixed test set (``test`` indexes that dataset)."""
    if n_test < 1:
        raise ConfigError(f"split {name!r}: the external test set is empty; give a test dataset")
    if not (0 <= valid_fraction < 1):
        raise ConfigError(f"validation fraction must be in [0, 1), got {valid_fraction}")
    if n_train < 1:
        raise ConfigError(f"split {name!r}: no training samples")
    rng = np.random.default_rng(seed)
    pool = np.arange(n_train)
    train, valid = _carve_valid(pool, pool.astype(str), valid_fraction, "sample", rng)
    _require(
        name,
        "validation",
        valid,
        valid_fraction,
        n_train,
        "raise the validation fraction or add training samples",
    )
    _require(name, "training", train, 1.0, n_train, "lower the validation fraction")
    return Split(name, train, valid, np.arange(n_test))
