"""Train / validation / test splits."""

from __future__ import annotations

import numpy as np
import pytest

from geneinfer.errors import ConfigError
from geneinfer.evaluate import external_test, leave_one_group_out, random_split


def _disjoint_cover(split, n):
    parts = np.concatenate([split.train, split.valid, split.test])
    assert len(parts) == n and set(parts.tolist()) == set(range(n))


def test_random_split_dgex_proportions():
    s = random_split(1000, seed=3)
    assert (len(s.train), len(s.valid), len(s.test)) == (800, 100, 100)
    _disjoint_cover(s, 1000)
    again = random_split(1000, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(s[1:], again[1:]))
    other = random_split(1000, seed=4)
    assert not np.array_equal(s.test, other.test)
    s2 = random_split(57, fractions=(0.7, 0.0, 0.3), seed=0)
    assert len(s2.valid) == 0 and len(s2.test) == 17 and len(s2.train) == 40


def test_random_split_errors():
    with pytest.raises(ConfigError, match=r"split 'random'.*validation set is empty"):
        random_split(4, seed=0)
    with pytest.raises(ConfigError, match="sum to 1"):
        random_split(100, fractions=(0.8, 0.3, 0.1))
    with pytest.raises(ConfigError, match="3 numbers"):
        random_split(100, fractions=(0.8, 0.2))


def test_leave_one_group_out_never_validates_on_the_test_group():
    groups = np.repeat(["GSE1", "GSE2", "GSE3", "GSE4"], [30, 12, 50, 8])
    rng = np.random.default_rng(0)
    groups = groups[rng.permutation(len(groups))]
    splits = list(leave_one_group_out(groups, valid_fraction=0.2, seed=1))
    assert [s.name for s in splits] == list(dict.fromkeys(groups.tolist()))
    for s in splits:
        _disjoint_cover(s, len(groups))
        assert set(groups[s.test]) == {s.name}
        assert s.name not in set(groups[s.valid]) and s.name not in set(groups[s.train])
        assert len(s.valid) == round(0.2 * (len(groups) - len(s.test)))


def test_leave_one_group_out_whole_validation_groups():
    groups = np.repeat(["a", "b", "c", "d", "e"], 10)
    for s in leave_one_group_out(groups, valid_fraction=0.25, valid_by="group"):
        valid_groups = set(groups[s.valid])
        assert len(valid_groups) == 1 and s.name not in valid_groups
        assert not valid_groups & set(groups[s.train])  # whole groups only
        _disjoint_cover(s, len(groups))


def test_leave_one_group_out_errors():
    with pytest.raises(ConfigError, match="at least 2 groups"):
        list(leave_one_group_out(["x"] * 10))
    with pytest.raises(ConfigError, match=r"split 'leave out a'.*validation set is empty"):
        list(leave_one_group_out(["a", "a", "b", "b"], valid_by="group"))
    with pytest.raises(ConfigError, match="validation fraction"):
        list(leave_one_group_out(["a", "b"], valid_fraction=1.0))


def test_external_test():
    s = external_test(200, 85, valid_fraction=0.1, seed=0, name="geo->geuvadis")
    assert s.name == "geo->geuvadis" and np.array_equal(s.test, np.arange(85))
    assert len(s.valid) == 20 and len(s.train) == 180
    assert not set(s.train) & set(s.valid)
    with pytest.raises(ConfigError, match="external test set is empty"):
        external_test(200, 0)
    with pytest.raises(ConfigError, match="validation set is empty"):
        external_test(3, 5, valid_fraction=0.1)
