"""Near-duplicate sample removal as in D-GEX (Chen et al. 2016).

GEO holds many re-deposited copies of the same arrays. D-GEX clustered the samples with
k-means and, within each cluster, removed samples lying within a small Euclidean distance of
another. Clustering only makes the search cheap: near-duplicates (distance < 1 in a
~20,000-dimensional log2 space, where distinct samples are tens of units apart) fall in the
same cluster. ``n_clusters=1`` compares all pairs.

The rule within a cluster is greedy in input order: a sample is dropped when it lies at
distance ``< threshold`` of an *earlier kept* sample of the same cluster, so of a group of
copies the first one is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.decomposition import PCA
from sklearn.metrics.pairwise import euclidean_distances, nan_euclidean_distances
from tqdm.auto import tqdm

from geneinfer.errors import GeneinferError

_BLOCK = 1024


@dataclass
class DedupReport:
    """What :func:`remove_duplicates` did.

    Attributes
    ----------
    n_samples, n_kept, n_dropped, n_clusters
        Counts.
    labels
        Cluster of each sample (``n_samples``).
    duplicate_of
        For each dropped sample the index of the kept sample it duplicates, else -1.
    threshold
        The distance threshold used.
    """

    n_samples: int
    n_kept: int
    n_dropped: int
    n_clusters: int
    labels: np.ndarray
    duplicate_of: np.ndarray
    threshold: float

    def summary(self) -> str:
        return (
            f"removed {self.n_dropped} of {self.n_samples} samples as near-duplicates "
            f"(Euclidean distance < {self.threshold:g} within {self.n_clusters} k-means clusters)"
        )


#: Up to this many samples all pairs are compared (cheaper than k-means in 20,000 dimensions).
ALL_PAIRS_MAX = 2000


def default_n_clusters(n_samples: int) -> int:
    """1 (all pairs) up to :data:`ALL_PAIRS_MAX` samples, else ``ceil(sqrt(n))``: clusters of
    ~sqrt(n) samples balance the k-means and the pair search cost."""
    if n_samples <= ALL_PAIRS_MAX:
        return 1
    return math.ceil(math.sqrt(n_samples))


def cluster_samples(
    X: np.ndarray, n_clusters: int, *, seed: int = 0, n_components: int = 50
) -> np.ndarray:
    """k-means labels of the rows of ``X``.

    k-means runs on the first ``n_components`` principal components (PCA fitted on at most
    5,000 samples): an orthogonal projection never increases distances, so near-duplicates
    stay near each other, and clustering 20,000-dimensional profiles becomes cheap. NaN is
    replaced by the gene mean for clustering only.
    """
    n = X.shape[0]
    if n_clusters <= 1 or n <= 1:
        return np.zeros(n, dtype=np.int64)
    Xf = np.asarray(X, dtype=np.float32)
    if np.isnan(Xf).any():
        col_mean = np.nan_to_num(np.nanmean(Xf, axis=0))
        Xf = np.where(np.isnan(Xf), col_mean[None, :], Xf)
    rng = np.random.default_rng(seed)
    n_comp = min(n_components, n - 1, Xf.shape[1])
    if n_comp >= 2:
        fit_rows = rng.choice(n, size=min(n, 5000), replace=False)
        # two power iterations suffice for cluster structure (sklearn's default 7 costs 3x)
        pca = PCA(n_components=n_comp, svd_solver="randomized", iterated_power=2, random_state=seed)
        pca.fit(Xf[fit_rows])
        Xf = pca.transform(Xf).astype(np.float32)
    k = min(n_clusters, n)
    if n > 10_000:
        km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096)
    else:
        km = KMeans(n_clusters=k, random_state=seed, n_init=1)
    return km.fit_predict(Xf).astype(np.int64)


def _exact_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance; with NaN, over jointly observed genes scaled up as sklearn does."""
    d = a.astype(np.float64) - b.astype(np.float64)
    ok = ~np.isnan(d)
    n_ok = int(ok.sum())
    if n_ok == 0:
        return math.inf
    return math.sqrt(float(np.sum(d[ok] ** 2)) * d.size / n_ok)


def _close_pairs(Xc: np.ndarray, threshold: float, has_nan: bool) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, of rows of ``Xc`` at exact distance < threshold."""
    m = Xc.shape[0]
    # float64 once per cluster: faster than sklearn's chunked float32 upcast, and
    # nan_euclidean_distances in float32 could miss pairs near the threshold.
    Xc = Xc.astype(np.float64)
    dist = nan_euclidean_distances if has_nan else euclidean_distances
    # The dot-product formula loses precision; find candidates with slack, then confirm
    # each with a direct difference so the result matches an all-pairs loop exactly.
    slack = threshold * 1e-3 + 1e-6
    pairs: list[tuple[int, int]] = []
    for start in range(1, m, _BLOCK):
        stop = min(m, start + _BLOCK)
        D = dist(Xc[start:stop], Xc[:stop])
        ii, jj = np.nonzero(D < threshold + slack)
        rows = ii + start
        for i, j in zip(rows[jj < rows], jj[jj < rows]):
            if _exact_distance(Xc[i], Xc[j]) < threshold:
                pairs.append((int(j), int(i)))
    return pairs


def remove_duplicates(
    X: np.ndarray,
    *,
    threshold: float = 1.0,
    n_clusters: int | None = None,
    seed: int = 0,
    progress: bool | None = None,
) -> tuple[np.ndarray, DedupReport]:
    """Find near-duplicate samples (rows) to drop, D-GEX style.

    Parameters
    ----------
    X
        Samples x genes matrix (log2). NaN entries are allowed: distances then use the
        jointly observed genes, scaled to the full gene count (as
        :func:`sklearn.metrics.pairwise.nan_euclidean_distances`).
    threshold
        Samples closer than this (Euclidean) to an earlier kept sample of their cluster are
        dropped. D-GEX used 1 on log2 data.
    n_clusters
        Number of k-means clusters; 1 = all pairs. Default: all pairs up to 2,000 samples,
        else ``ceil(sqrt(n_samples))``.
    seed
        k-means random state.
    progress
        Show a progress bar over clusters (default: when there are > 5,000 samples).

    Returns
    -------
    keep_mask
        Boolean array, True for samples to keep.
    report
        A :class:`DedupReport`.
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise GeneinferError(
            f"remove_duplicates: expected a 2-D samples x genes matrix, got {X.ndim}-D"
        )
    if not threshold > 0:
        raise GeneinferError(f"duplicate threshold must be positive, got {threshold}")
    n = X.shape[0]
    k = default_n_clusters(n) if n_clusters is None else int(n_clusters)
    if k < 1:
        raise GeneinferError(f"n_clusters must be at least 1, got {n_clusters}")
    labels = cluster_samples(X, k, seed=seed)
    keep = np.ones(n, dtype=bool)
    duplicate_of = np.full(n, -1, dtype=np.int64)
    has_nan = bool(np.isnan(X).any())
    clusters = np.unique(labels)
    show = n > 5000 if progress is None else progress
    for c in tqdm(clusters, desc="duplicate search", unit="cluster", disable=not show):
        members = np.flatnonzero(labels == c)
        if len(members) < 2:
            continue
        earlier: dict[int, list[int]] = {}
        for a, b in _close_pairs(X[members], threshold, has_nan):
            earlier.setdefault(b, []).append(a)
        # Greedy in input order: members are ascending, so earlier kept ones are decided.
        for b in sorted(earlier):
            kept_match = [a for a in sorted(earlier[b]) if keep[members[a]]]
            if kept_match:
                keep[members[b]] = False
                duplicate_of[members[b]] = members[kept_match[0]]
    n_dropped = int((~keep).sum())
    report = DedupReport(
        n_samples=n,
        n_kept=n - n_dropped,
        n_dropped=n_dropped,
        n_clusters=len(clusters),
        labels=labels,
        duplicate_of=duplicate_of,
        threshold=float(threshold),
    )
    return keep, report
