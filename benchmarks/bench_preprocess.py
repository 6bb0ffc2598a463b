"""Speed of the D-GEX preprocessing steps at realistic shapes, against baselines run here.

Data: profiles generated from the real bladderbatch HG-U133A arrays (random mixtures of
real samples plus noise, 22,283 probes), with injected near-duplicates.

* quantile normalization (fit + transform) vs a straightforward per-sample loop
* duplicate removal with k-means clusters vs all pairs (n_clusters=1), same result checked
* Standardizer vs sklearn.preprocessing.StandardScaler

Usage: python benchmarks/bench_preprocess.py [--samples 4000] [--threads 2]
"""

from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from geneinfer.preprocess import QuantileNormalizer, Standardizer, remove_duplicates

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def load_bladder() -> np.ndarray:
    path = SHARED / "gpl96" / "bladderbatch.gct.gz"
    with gzip.open(path, "rt") as fh:
        fh.readline()
        n_meta = int(fh.readline().split()[3])
    table = pd.read_csv(path, sep="\t", skiprows=2, low_memory=False)
    return table.iloc[n_meta:, 3:].astype(np.float32).to_numpy().T


def generate(real: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    mix = rng.dirichlet(np.full(len(real), 0.3), size=n).astype(np.float32)
    return mix @ real + rng.normal(0, 0.1, size=(n, real.shape[1])).astype(np.float32)


def naive_quantile(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    ref = np.mean([np.sort(row) for row in train], axis=0)
    grid = np.arange(len(ref))
    out = []
    for row in test:
        ranks = rankdata(row)
        out.append(np.interp((ranks - 1) / (len(row) - 1) * (len(ref) - 1), grid, ref))
    return np.array(out)


def timed(fn):
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--dedup-samples", type=int, default=4000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    real = load_bladder()
    X = generate(real, args.samples, rng)
    n_train = int(0.8 * len(X))
    print(f"data: {X.shape[0]} x {X.shape[1]} generated from bladderbatch; {args.threads} threads")
    with threadpool_limits(args.threads):
        qn = QuantileNormalizer()
        ours, t_ours = timed(lambda: qn.fit(X[:n_train]).transform(X[n_train:]))
        base, t_base = timed(lambda: naive_quantile(X[:n_train], X[n_train:]))
        err = float(np.max(np.abs(ours - base)))
        print(
            f"quantile fit+transform: {t_ours:.2f} s vs per-sample loop {t_base:.2f} s "
            f"(ratio {t_base / t_ours:.2f}x; max difference {err:.2e})"
        )

        std, t_std = timed(lambda: Standardizer().fit(X[:n_train]).transform(X[n_train:]))
        skl, t_skl = timed(lambda: StandardScaler().fit(X[:n_train]).transform(X[n_train:]))
        print(
            f"standardize fit+transform: {t_std:.2f} s vs sklearn StandardScaler {t_skl:.2f} s "
            f"(ratio {t_skl / t_std:.2f}x; max difference {np.max(np.abs(std - skl)):.2e})"
        )

        D = X[: args.dedup_samples]
        copies = rng.choice(len(D), size=len(D) // 20, replace=False)
        D = np.vstack([D, D[copies] + rng.normal(0, 0.003, size=(len(copies), D.shape[1]))])
        (keep_c, rep), t_c = timed(lambda: remove_duplicates(D, threshold=1.0))
        (keep_a, _), t_a = timed(lambda: remove_duplicates(D, threshold=1.0, n_clusters=1))
        same = bool(np.array_equal(keep_c, keep_a))
        print(
            f"dedup {len(D)} samples: {t_c:.2f} s with {rep.n_clusters} k-means clusters vs "
            f"all pairs {t_a:.2f} s (ratio {t_a / t_c:.2f}x); dropped {rep.n_dropped} "
            f"(injected {len(copies)}); same result as all pairs: {same}"
        )


if __name__ == "__main__":
    main()
