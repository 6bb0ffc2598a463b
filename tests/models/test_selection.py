"""The study-aware selection rule: folds of whole groups, the within-group score, group sums."""

from __future__ import annotations

import numpy as np
import pytest
from classical_data import landmark_target_split

from geneinfer.errors import GeneinferError
from geneinfer.models import gram_cv
from geneinfer.models.gram import GramStats
from geneinfer.models.gram_cv import GroupedGramStats
from geneinfer.models.selection import (
    GroupFolds,
    GroupMoments,
    GroupScores,
    plan_folds,
    zscore_mse,
    zscore_mse_from_moments,
)


def test_one_group_or_none_keeps_the_single_group_rule():
    assert plan_folds(None, 10) is None
    assert plan_folds(["a"] * 10, 10) is None
    # a second group of two rows cannot be scored: still one scorable group
    assert plan_folds(["a"] * 8 + ["b"] * 2, 10) is None
    with pytest.raises(GeneinferError, match="one label per training row"):
        plan_folds(["a"] * 9, 10)


def test_up_to_ten_groups_leave_one_out_and_tiny_groups_always_train():
    labels = ["s1"] * 5 + ["s2"] * 4 + ["tiny"] * 2 + ["s3"] * 3
    folds = plan_folds(labels, len(labels))
    assert folds.method == "leave-one-group-out"
    assert folds.n_groups == 4 and folds.n_scored == 3
    held = [set(np.asarray(labels)[folds.held_out(k)]) for k in range(len(folds.folds))]
    assert held == [{"s1"}, {"s2"}, {"s3"}]  # "tiny" is never held out


def test_more_than_ten_groups_give_five_balanced_group_folds():
    rng = np.random.default_rng(0)
    sizes = rng.integers(3, 60, size=23)
    labels = np.repeat(np.arange(23), sizes)
    folds = plan_folds(labels, len(labels))
    assert folds.method == "group-k-fold" and len(folds.folds) == 5
    assert sorted(np.concatenate(folds.folds).tolist()) == list(range(23))  # each once
    rows = [int(folds.held_out(k).sum()) for k in range(5)]
    assert max(rows) - min(rows) <= sizes.max()  # greedy balance: within one group
    again = plan_folds(labels, len(labels))  # deterministic
    assert all(np.array_equal(a, b) for a, b in zip(folds.folds, again.folds))


def test_within_group_z_mse_is_two_minus_two_r():
    rng = np.random.default_rng(1)
    y = rng.normal(5, 2, (40, 6))
    p = 0.5 * y + rng.normal(0, 1, y.shape) + 3.0
    r = np.array([np.corrcoef(y[:, j], p[:, j])[0, 1] for j in range(6)])
    np.testing.assert_allclose(zscore_mse(y, p), 2 * (1 - r), rtol=1e-12)
    # literally the MSE of within-group z-scores (population standard deviations)
    zy = (y - y.mean(0)) / y.std(0)
    zp = (p - p.mean(0)) / p.std(0)
    np.testing.assert_allclose(zscore_mse(y, p), ((zy - zp) ** 2).mean(0), rtol=1e-12)
    # study offsets and scales do not count
    np.testing.assert_allclose(zscore_mse(3 * y + 7, p - 100), zscore_mse(y, p), rtol=1e-12)
    y[:, 2] = 4.0  # constant truth: not scored
    p[:, 3] = 1.0  # constant prediction: r = 0
    got = zscore_mse(y, p)
    assert np.isnan(got[2]) and got[3] == 2.0


def test_group_moments_in_chunks_equal_the_direct_score():
    rng = np.random.default_rng(2)
    y = rng.normal(8, 1, (50, 4))
    p = np.stack([y + rng.normal(0, s, y.shape) for s in (0.5, 2.0)])
    acc = GroupMoments(2, 4)
    for rows in (slice(0, 7), slice(7, 31), slice(31, 50)):
        acc.add(y[rows], p[:, rows])
    np.testing.assert_allclose(acc.scores(), zscore_mse(y, p), rtol=1e-9)


def test_each_group_weighs_one_whatever_its_size():
    board = GroupScores(2, 3)
    board.add(0, np.array([[0.2, 0.4, np.nan], [1.0, 1.0, 1.0]]))  # gene 2 constant here
    board.add(1, np.array([[1.0, 1.0, 1.0], [0.1, 0.1, 0.1]]))
    np.testing.assert_allclose(board.overall(), [(0.3 + 1.0) / 2, (1.0 + 0.1) / 2])
    np.testing.assert_allclose(board.per_gene()[0], [0.6, 0.7, 1.0])
    assert board.best() == 1
    np.testing.assert_array_equal(board.best_per_gene(), [1, 1, 1])
    assert np.isnan(zscore_mse_from_moments(1.0, 1.0, 0.0))


@pytest.fixture(scope="module")
def real(shared):
    return landmark_target_split(shared, n_landmarks=40, n_targets=60)


def test_gram_stats_subtract_to_the_remaining_rows(real):
    X, Y = real
    total = GramStats(precision="float64").update(X, Y)
    part = GramStats(precision="float64", shift_x=total.shift_x, shift_y=total.shift_y)
    part.update(X[10:30], Y[10:30])
    rest = total.copy()
    rest -= part
    ref = GramStats(precision="float64").update(np.vstack([X[:10], X[30:]]),
                                                np.vstack([Y[:10], Y[30:]])).centered()
    got = rest.centered()
    assert got.n == ref.n
    np.testing.assert_allclose(got.cxx, ref.cxx, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got.cxy, ref.cxy, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got.cyy, ref.cyy, rtol=1e-9)
    assert total.n == len(X)  # the copy was changed, not the total


@pytest.mark.parametrize("order", ["contiguous", "interleaved"])
def test_grouped_sums_equal_each_groups_own_statistics(real, order, monkeypatch):
    """Runs of one group (one product each) and interleaved rows (gathered) alike."""
    X, Y = real
    codes = np.repeat([0, 1, 2], [20, 17, 20])
    if order == "contiguous":  # these small blocks: one product per run, not gathered
        monkeypatch.setattr(gram_cv, "MIN_RUN_ROWS", 1)
    if order == "interleaved":
        perm = np.random.default_rng(3).permutation(len(X))
        X, Y, codes = X[perm], Y[perm], codes[perm]
    genes = np.array([1, 5, 9, 30])
    folds = GroupFolds("leave-one-group-out", codes, 3, np.bincount(codes),
                       tuple(np.array([g]) for g in range(3)))
    stats = GroupedGramStats(folds, genes, precision="float64")
    for start in range(0, len(X), 25):  # blocks that cut through groups
        rows = slice(start, start + 25)
        stats.update(X[rows], Y[rows], codes[rows], where="test")
    full = stats.total.centered()
    np.testing.assert_allclose(full.cxy, GramStats(precision="float64").update(X, Y)
                               .centered().cxy, rtol=1e-9, atol=1e-9)
    for g in range(3):
        got = stats.group_gram(g)
        ref = GramStats(precision="float64").update(X[codes == g], Y[codes == g][:, genes])
        ref = ref.centered()
        np.testing.assert_allclose(got.cxx, ref.cxx, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(got.cxy, ref.cxy, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(got.cyy, ref.cyy, rtol=1e-9)
        train = stats.train_gram(np.array([g]))
        ref = GramStats(precision="float64").update(X[codes != g], Y[codes != g][:, genes])
        np.testing.assert_allclose(train.cxy, ref.centered().cxy, rtol=1e-8, atol=1e-8)


def test_ridge_scorer_partial_fractions_equal_the_direct_sums_with_tied_eigenvalues():
    """All alphas from a few products; tied eigenvalues (no fraction there) included."""
    from geneinfer.models.gram import CenteredGram, Eigenbasis
    from geneinfer.models.gram_cv import RidgeFoldScorer

    rng = np.random.default_rng(4)
    p, s = 8, 5
    V, _ = np.linalg.qr(rng.normal(size=(p, p)))
    d = np.array([0.0, 0.3, 1.0, 1.0, 1.0 + 1e-9, 2.5, 7.0, 40.0])  # a near triple
    Q = rng.normal(size=(p, s))
    basis = Eigenbasis(d, V, Q, d > 0)
    A = rng.normal(size=(30, p))
    group = CenteredGram(30, np.zeros(p), np.zeros(s), A.T @ A, A.T @ rng.normal(size=(30, s)),
                         np.ones(s))
    alphas = np.array([0.01, 0.5, 3.0, 100.0])
    cov, var = RidgeFoldScorer(basis, alphas).moments(group)
    keep = d > 0
    for i, a in enumerate(alphas):
        b = V[:, keep] @ (Q[keep] / (d[keep] + a)[:, None])  # (p, S) coefficients
        np.testing.assert_allclose(cov[i], np.einsum("ps,ps->s", b, group.cxy), rtol=1e-9)
        np.testing.assert_allclose(var[i], np.einsum("ps,ps->s", b, group.cxx @ b),
                                   rtol=1e-7)


def test_unscored_groups_share_one_part_and_sums_survive_standardising_and_a_checkpoint(real):
    """Out of core only a sample of groups is scored: the others' rows are pooled (memory
    grows with the scored groups only); standardising the sums in place equals summing the
    standardised rows, and the state round trip restores every sum."""
    X, Y = real
    codes = np.repeat([0, 1, 2, 3, 4], [12, 11, 12, 11, 11])
    folds = plan_folds(codes, len(codes), max_scored=2, seed=0)
    assert folds is not None and folds.n_scored == 2 and folds.n_groups == 5
    scored = np.concatenate(folds.folds)
    genes = np.array([0, 4, 7])
    stats = GroupedGramStats(folds, genes, precision="float64")
    for start in range(0, len(X), 20):
        rows = slice(start, start + 20)
        stats.update(X[rows], Y[rows], codes[rows], where="test")
    assert len(stats.parts) == 3  # two scored groups and the pool
    pooled = ~np.isin(codes, scored)
    np.testing.assert_allclose(stats.parts[-1].n, pooled.sum())
    with pytest.raises(ValueError, match="not held out"):
        stats.group_gram(int(np.flatnonzero(~np.isin(np.arange(5), scored))[0]))
    mx, sx = X.mean(axis=0) + 0.3, X.std(axis=0) + 0.5
    my, sy = Y.mean(axis=0) - 0.2, Y.std(axis=0) + 0.1
    restored = GroupedGramStats(folds, genes, precision="float64").load_state(stats.state())
    restored.standardize_(mx, sx, my, sy)
    Z, W = (X - mx) / sx, (Y - my) / sy
    for g in scored:
        ref = GramStats(precision="float64").update(Z[codes == g], W[codes == g][:, genes])
        got = restored.group_gram(int(g))
        np.testing.assert_allclose(got.cxx, ref.centered().cxx, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(got.cxy, ref.centered().cxy, rtol=1e-9, atol=1e-9)
        train = restored.train_gram(np.array([g]))
        ref = GramStats(precision="float64").update(Z[codes != g], W[codes != g][:, genes])
        np.testing.assert_allclose(train.cxy, ref.centered().cxy, rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(train.mean_x, ref.centered().mean_x, rtol=1e-9, atol=1e-9)
    total = GramStats(precision="float64").update(Z, W).centered()
    np.testing.assert_allclose(restored.total.centered().cxy, total.cxy, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(restored.total.centered().mean_y, total.mean_y, atol=1e-9)
