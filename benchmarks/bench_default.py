"""What the default model costs against ridge: training and prediction throughput.

The default (``geneinfer train`` without ``--model``: a per-gene stack over ridge, PCR, KNN-GE
and SampleLASSO) wins the leave-one-dataset-out study; this prints what that costs. Both
models are trained through :func:`geneinfer.train.workflow.train_model` (the path of
``geneinfer train``) on the microarray studies of ``../shared/data`` (L1000 panel, the file
as the group), then predict N profiles (training landmark means plus noise; in
memory, ``InferenceModel.predict_log2``, batches of 2,048 as ``geneinfer predict`` uses).
Prints seconds and profiles/s of each, the ratio to ridge and the time extrapolated to
1.3 million L1000 profiles on this machine.

    python benchmarks/bench_default.py [--n 20000]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from geneinfer.train.workflow import DEFAULT_MODEL, train_model

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GENEINFER_SHARED", ROOT.parent / "shared" / "data"))
STUDIES = ("bladderbatch.gct.gz", "nakayama.gct.gz", "borovecki.gct.gz")
BATCH = 2048
L1000_PROFILES = 1_300_000


def _profiles(model, n: int, seed: int = 0) -> np.ndarray:
    """``n`` landmark profiles: the training means of the landmarks plus unit Gaussian
    noise (log2 scale; the predictors' cost does not depend on the values)."""
    rng = np.random.default_rng(seed)
    means = np.asarray(model.landmark_means, dtype=np.float32)
    noise = rng.standard_normal((n, len(means)), dtype=np.float32)
    return means[None, :] + noise


def _predict_rate(model, X: np.ndarray) -> float:
    model.predict_log2(X[:BATCH])  # warm-up (BLAS threads, torch)
    t0 = time.perf_counter()
    for start in range(0, len(X), BATCH):
        model.predict_log2(X[start:start + BATCH])
    return len(X) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="profiles to predict")
    args = ap.parse_args()
    files = [str(SHARED / "gpl96" / f) for f in STUDIES]
    rows = []
    for name in ("ridge", DEFAULT_MODEL):
        t0 = time.perf_counter()
        model = train_model(files, model=name, panel="l1000", data_dir=SHARED, progress=False)
        fit_s = time.perf_counter() - t0
        X = _profiles(model, args.n)
        rate = _predict_rate(model, X)
        rows.append((name, model.info["n_train_samples"], fit_s, rate))
    base_fit, base_rate = rows[0][2], rows[0][3]
    print(f"{'model':<8} {'train n':>8} {'train s':>8} {'x ridge':>8} {'profiles/s':>11} "
          f"{'x ridge':>8} {'1.3M profiles':>14}")
    for name, n_train, fit_s, rate in rows:
        print(f"{name:<8} {n_train:>8} {fit_s:>8.1f} {fit_s / base_fit:>8.2f} {rate:>11,.0f} "
              f"{base_rate / rate:>8.2f} {L1000_PROFILES / rate / 60:>11.1f} min")


if __name__ == "__main__":
    main()
