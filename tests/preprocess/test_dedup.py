"""D-GEX duplicate removal against an all-pairs reference on real HG-U133A data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geneinfer.errors import GeneinferError
from geneinfer.preprocess import remove_duplicates


def reference_dedup(X: np.ndarray, labels: np.ndarray, threshold: float) -> np.ndarray:
    """Plain loops: in input order, keep a sample unless an earlier kept sample of its
    cluster is closer than ``threshold`` (NaN-aware distance as sklearn's nan_euclidean)."""
    keep = np.zeros(len(X), dtype=bool)
    seen: dict[int, list[int]] = {}  # cluster -> earlier samples, in order
    for i in range(len(X)):
        keep[i] = True
        earlier = seen.setdefault(int(labels[i]), [])
        for j in earlier:
            if not keep[j]:
                continue
            diff = X[i] - X[j]
            ok = ~np.isnan(diff)
            dist = math.sqrt(float(np.sum(diff[ok] ** 2)) * diff.size / ok.sum())
            if dist < threshold:
                keep[i] = False
                break
        earlier.append(i)
    return keep


@pytest.fixture(scope="module")
def with_duplicates(bladder) -> tuple[np.ndarray, dict[int, int]]:
    """bladderbatch plus re-deposited copies: (matrix, {copy row: original row})."""
    rng = np.random.default_rng(7)
    n, g = bladder.shape
    near = {0: 0.3, 5: 0.6, 20: 0.9, 33: 0.3}  # original -> target distance (< 1: duplicate)
    far = {12: 1.5, 40: 3.0}  # close, but not duplicates
    rows, origin = [bladder], {}
    for k, (orig, dist) in enumerate({**near, **far}.items()):
        noise = rng.normal(size=g)
        rows.append(bladder[orig] + noise / np.linalg.norm(noise) * dist)
        if orig in near:
            origin[n + k] = orig
    copy_of_copy = rows[2] + 0.2 / math.sqrt(g)  # a copy of the second copy
    rows.append(copy_of_copy)
    origin[n + len(near) + len(far)] = 5
    return np.vstack(rows), origin


def test_drops_injected_duplicates(with_duplicates):
    X, origin = with_duplicates
    keep, report = remove_duplicates(X, threshold=1.0)
    assert set(np.flatnonzero(~keep)) == set(origin)
    assert report.n_dropped == len(origin) == 5 and report.n_kept == len(X) - 5
    for copy, orig in origin.items():
        assert report.duplicate_of[copy] == orig
    assert (report.duplicate_of[keep] == -1).all()
    assert "removed 5 of" in report.summary()


@pytest.mark.parametrize("threshold", [1.0, 80.0, 95.0])
@pytest.mark.parametrize("n_clusters", [None, 1, 4])
def test_agrees_with_all_pairs_reference(with_duplicates, threshold, n_clusters):
    # 80 and 95 are the 5th / 20th percentiles of real bladderbatch distances: long chains
    X, _ = with_duplicates
    keep, report = remove_duplicates(X, threshold=threshold, n_clusters=n_clusters, seed=3)
    expected = reference_dedup(X, report.labels, threshold)
    np.testing.assert_array_equal(keep, expected)
    if threshold > 1:
        assert report.n_dropped > 10  # the greedy chain logic was exercised


@pytest.mark.parametrize("threshold", [1.0, 90.0])
def test_agrees_with_reference_with_missing_values(with_duplicates, threshold):
    X = with_duplicates[0].astype(np.float32)
    rng = np.random.default_rng(0)
    X[rng.random(X.shape) < 0.01] = np.nan
    keep, report = remove_duplicates(X, threshold=threshold, n_clusters=3)
    np.testing.assert_array_equal(keep, reference_dedup(X.astype(float), report.labels, threshold))
    assert report.n_dropped >= 5


def test_first_copy_is_kept(bladder):
    X = np.vstack([bladder[3] + 1e-3, bladder[:10]])
    keep, report = remove_duplicates(X, n_clusters=1)
    assert keep[0] and not keep[4] and report.duplicate_of[4] == 0


def test_bad_arguments(bladder):
    with pytest.raises(GeneinferError, match="threshold"):
        remove_duplicates(bladder[:5], threshold=0)
    with pytest.raises(GeneinferError, match="n_clusters"):
        remove_duplicates(bladder[:5], n_clusters=0)
    with pytest.raises(GeneinferError, match="2-D"):
        remove_duplicates(bladder[0])


def test_large_input_uses_projected_clustering(bladder):
    """Beyond 2,000 samples k-means runs on PCA scores; still exact within clusters."""
    rng = np.random.default_rng(11)
    genes = bladder[:, :1500]
    mix = rng.dirichlet(np.full(len(genes), 0.3), size=2400)  # realistic profiles: mixtures
    X = mix @ genes + rng.normal(0, 0.05, size=(2400, genes.shape[1]))
    copies = rng.choice(2400, size=30, replace=False)
    X = np.vstack([X, X[copies] + rng.normal(0, 0.01, size=(30, genes.shape[1]))])
    keep, report = remove_duplicates(X, threshold=1.0)  # default: ceil(sqrt(n)) clusters
    assert report.n_clusters == 50
    np.testing.assert_array_equal(keep, reference_dedup(X, report.labels, 1.0))
    assert set(np.flatnonzero(~keep)) == set(range(2400, 2430))
