"""Speed and memory of the classical models at the D-GEX shapes, against baselines in the same run.

Data: generated with the D-GEX shapes (88,807 profiles x 943 landmarks -> 9,520 targets,
float32) from a low-rank + noise model that looks like log2 expression (per-gene means ~8,
correlated genes through 60 latent factors, noise). Every measurement runs in its own
subprocess (so peak memory, ``ru_maxrss``, is that of the one fit) that loads the arrays
from ``.npy`` files written once.

Printed, all measured in this run:

* matmul rate (GFLOP/s) of float32 ``X'Y``: the roofline rate;
* OLS fit time vs scikit-learn ``LinearRegression`` and vs the roofline
  (FLOPs of the fit's matrix products / measured rate), float32 vs float64 accuracy;
* ridge with every alpha + GCV choice vs the OLS roofline; peak memory of each;
* scikit-learn ``RidgeCV`` (13 alphas) only at a reduced size (at full size it needs
  > 24 GB), with our ridge at that size for the ratio;
* lasso / KNN-GE / PCR / sample-KNN / SVR fit times at a reduced size;
* prediction throughput (profiles/s) of each model.

Usage::

    flock /tmp/geneinfer-heavy.lock python benchmarks/bench_linear.py          # full
    python benchmarks/bench_linear.py --small                                  # quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

FULL = {"n": 88807, "p": 943, "t": 9520, "reduced_n": 20000, "reduced_t": 1000, "cv_n": 20000,
        "cv_t": 2000}
SMALL = {"n": 12000, "p": 943, "t": 2000, "reduced_n": 4000, "reduced_t": 300, "cv_n": 4000,
         "cv_t": 500}
N_PREDICT = 5000


# ------------------------------------------------------------------------------ data
def generate(folder: Path, n: int, p: int, t: int, *, seed: int = 0, rank: int = 60) -> None:
    """Write X.npy (n x p) and Y.npy (n x t), float32, block by block (little memory)."""
    rng = np.random.default_rng(seed)
    load_x = rng.normal(0, 1, (rank, p)).astype(np.float32) / np.sqrt(rank)
    load_y = rng.normal(0, 1, (rank, t)).astype(np.float32) / np.sqrt(rank)
    mean_x = rng.normal(8, 1.5, p).astype(np.float32)
    mean_y = rng.normal(8, 1.5, t).astype(np.float32)
    X = np.lib.format.open_memmap(folder / "X.npy", mode="w+", dtype=np.float32, shape=(n, p))
    Y = np.lib.format.open_memmap(folder / "Y.npy", mode="w+", dtype=np.float32, shape=(n, t))
    step = 8192
    for start in range(0, n, step):
        m = min(step, n - start)
        z = rng.standard_normal((m, rank), dtype=np.float32)
        X[start : start + m] = z @ load_x + mean_x + 0.5 * rng.standard_normal(
            (m, p), dtype=np.float32)
        Y[start : start + m] = z @ load_y + mean_y + 0.5 * rng.standard_normal(
            (m, t), dtype=np.float32)
    X.flush()
    Y.flush()
    del X, Y


def load(folder: Path, n: int | None = None, t: int | None = None):
    X = np.load(folder / "X.npy", mmap_mode="r")
    Y = np.load(folder / "Y.npy", mmap_mode="r")
    n = n or X.shape[0]
    t = t or Y.shape[1]
    return np.ascontiguousarray(X[:n]), np.ascontiguousarray(Y[:n, :t])


# ------------------------------------------------------------------------------ workers
def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _throughput(model, X) -> float:
    Xp = X[:N_PREDICT]
    model.predict(Xp[:100])
    _, sec = _timed(lambda: model.predict(Xp))
    return len(Xp) / sec


def worker(task: str, folder: Path, cfg: dict) -> dict:
    """One measurement; returns figures (peak memory is added by the caller's wrapper)."""
    from geneinfer.models.knn import KNNGE, SampleKNN
    from geneinfer.models.linear import Lasso, LinearRegression, Ridge
    from geneinfer.models.pcr import PCARegression
    from geneinfer.models.svr import SVRRegression

    warnings.simplefilter("ignore")
    res: dict = {}
    if task == "matmul":
        X, Y = load(folder)
        X[:2000].T @ Y[:2000]  # warm up
        best = min(_timed(lambda: X.T @ Y)[1] for _ in range(2))
        res["seconds"] = best
        res["gflops"] = 2.0 * X.shape[0] * X.shape[1] * Y.shape[1] / best / 1e9
    elif task in ("ols", "ols64", "ols_256mb_blocks", "ridge", "ridge_per_gene"):
        X, Y = load(folder)
        model = {
            "ols": LinearRegression(),
            "ols_256mb_blocks": LinearRegression(block_rows=2**26 // Y.shape[1]),
            "ols64": LinearRegression(precision="float64"),
            "ridge": Ridge(),
            "ridge_per_gene": Ridge(alpha_per_gene=True),
        }[task]
        # best of two fits, as the matmul rate is the best of two products
        res["seconds"] = min(_timed(lambda: model.fit(X, Y))[1] for _ in range(2))
        res["profiles_per_s"] = _throughput(model, X)
        if task.startswith("ridge"):
            res["alpha"] = float(np.median(model.alpha_))
            res["alpha_index"] = int(np.argmin(np.abs(model.alphas_ - res["alpha"])))
        # accuracy: the float32 path against float64 on new profiles (stored for compare)
        np.save(folder / f"pred_{task}.npy", model.predict(_fresh(X))[:, :2000])
    elif task == "sklearn_ols":
        from sklearn.linear_model import LinearRegression as SkLR

        X, Y = load(folder)
        model = SkLR()
        _, res["seconds"] = _timed(lambda: model.fit(X, Y))
        res["profiles_per_s"] = _throughput(model, X)
        np.save(folder / "pred_sklearn_ols.npy", model.predict(_fresh(X))[:, :2000])
    elif task in ("cv_ours", "cv_sklearn"):
        from sklearn.linear_model import RidgeCV

        from geneinfer.models.linear import DEFAULT_RELATIVE_ALPHAS

        X, Y = load(folder, cfg["cv_n"], cfg["cv_t"])
        # the same absolute grid for both: our default (relative to mean eigenvalue of X_c'X_c)
        alphas = DEFAULT_RELATIVE_ALPHAS * X.var(0, dtype=np.float64).sum() * len(X) / X.shape[1]
        model = Ridge(alphas=alphas) if task == "cv_ours" else RidgeCV(alphas=alphas)
        _, res["seconds"] = _timed(lambda: model.fit(X, Y))
        res["alpha"] = float(model.alpha_)
    else:  # reduced-size models
        X, Y = load(folder, cfg["reduced_n"], cfg["reduced_t"])
        model = {
            "lasso": Lasso(),
            "knn_ge": KNNGE(),
            "pcr": PCARegression(),
            "sample_knn": SampleKNN(),
            "svr": SVRRegression(max_genes=10, n_jobs=2),
        }[task]
        # kernel SVR is O(n^2) per gene: 2,000 samples
        Xfit, Yfit = (X[:2000], Y[:2000]) if task == "svr" else (X, Y)
        _, res["seconds"] = _timed(lambda: model.fit(Xfit, Yfit))
        res["profiles_per_s"] = _throughput(model, X)
        res["n"], res["t"] = int(Xfit.shape[0]), int(Y.shape[1])
        for attr in ("k_", "n_components_"):
            if hasattr(model, attr):
                res[attr] = int(getattr(model, attr))
        if task == "lasso":
            res["alpha_index"] = int(np.argmin(model.validation_mse_.sum(1)))
            res["n_iter"] = int(model.n_iter_)
    return res


def _fresh(X):
    """New profiles (not training rows): rows of X with their noise redrawn."""
    rng = np.random.default_rng(7)
    base = X[:2000].astype(np.float32)
    return base + rng.normal(0, 0.3, base.shape).astype(np.float32)


def run_worker(task: str, folder: Path, small: bool) -> dict:
    cmd = [sys.executable, __file__, "--worker", task, "--data", str(folder)]
    if small:
        cmd.append("--small")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed",
                "returncode": proc.returncode}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ report
def fit_flops(n: int, p: int, t: int) -> float:
    """Matrix-product FLOPs of the Gram fit: X'Y, X'X, V'(X'Y), V Q (eigh of p x p ~ 9 p^3)."""
    return 2.0 * n * p * t + 2.0 * n * p * p + 4.0 * p * p * t + 9.0 * p**3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="quick run on smaller shapes")
    ap.add_argument("--data", type=Path, default=None, help="folder for the generated arrays")
    ap.add_argument("--keep-data", action="store_true")
    ap.add_argument("--skip-sklearn", action="store_true", help="skip the slow sklearn fits")
    ap.add_argument("--only", nargs="*", default=None, help="run only these measurements")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    cfg = SMALL if args.small else FULL

    if args.worker:
        res = worker(args.worker, args.data, cfg)
        # VmHWM, not ru_maxrss: the latter survives exec and would report the parent's
        # peak (which maps the generated files)
        hwm = next(ln for ln in open("/proc/self/status") if ln.startswith("VmHWM"))
        res["peak_rss_gb"] = int(hwm.split()[1]) / 2**20
        print(json.dumps(res))
        return

    folder = args.data or Path(f"/tmp/geneinfer-bench-linear-{os.getpid()}")
    folder.mkdir(parents=True, exist_ok=True)
    n, p, t = cfg["n"], cfg["p"], cfg["t"]
    data_gb = 4 * n * (p + t) / 2**30
    print(f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')} cpus={os.cpu_count()}")
    try:
        if not (folder / "Y.npy").exists():
            _, sec = _timed(lambda: generate(folder, n, p, t))
            print(f"generated {n} x {p} -> {t} float32 ({data_gb:.2f} GB) in {sec:.0f} s")
        r = {}
        tasks = ["matmul", "ols", "ols_256mb_blocks", "ols64", "ridge", "ridge_per_gene"]
        if not args.skip_sklearn:
            tasks += ["sklearn_ols", "cv_sklearn"]
        tasks += ["cv_ours", "lasso", "knn_ge", "pcr", "sample_knn", "svr"]
        if args.only:
            tasks = [task for task in tasks if task in args.only or task == "matmul"]
        for task in tasks:
            r[task] = run_worker(task, folder, args.small)
            print(f"  {task}: {r[task]}", flush=True)
        report(r, cfg, data_gb, folder)
    finally:
        if not args.keep_data and args.data is None:
            shutil.rmtree(folder, ignore_errors=True)


def report(r: dict, cfg: dict, data_gb: float, folder: Path) -> None:
    n, p, t = cfg["n"], cfg["p"], cfg["t"]
    rate = r["matmul"]["gflops"]
    roof = fit_flops(n, p, t) / (rate * 1e9)
    print(f"\n=== D-GEX shapes: {n} x {p} -> {t} (data {data_gb:.2f} GB in memory) ===")
    print(f"matmul rate (float32 X'Y):   {rate:7.1f} GFLOP/s")
    print(f"OLS roofline (fit FLOPs / rate): {roof:6.2f} s")

    def line(name: str, key: str, base: float | None = None) -> None:
        res = r.get(key, {})
        if "seconds" not in res:
            print(f"{name:34s} {res}")
            return
        ratio = f"{res['seconds'] / base:5.2f}x roofline" if base else ""
        print(f"{name:34s} {res['seconds']:7.2f} s  {ratio:16s} peak {res['peak_rss_gb']:5.2f} GB"
              + (f"  {res['profiles_per_s']:9.0f} profiles/s" if "profiles_per_s" in res else ""))

    line("geneinfer OLS (float32 Gram)", "ols", roof)
    line("  same, 256 MB blocks (previous)", "ols_256mb_blocks", roof)
    line("geneinfer OLS (float64 Gram)", "ols64", roof)
    line("scikit-learn LinearRegression", "sklearn_ols", roof)
    line("geneinfer Ridge 13 alphas + GCV", "ridge", roof)
    line("geneinfer Ridge, alpha per gene", "ridge_per_gene", roof)
    if "seconds" in r.get("sklearn_ols", {}):
        speedup = r["sklearn_ols"]["seconds"] / r["ols"]["seconds"]
        print(f"OLS speed-up over scikit-learn: {speedup:.1f}x")
    for key in ("ols", "ridge", "ridge_per_gene"):
        if "alpha" in r.get(key, {}):
            print(f"  {key} chose alpha {r[key]['alpha']:.4g} (grid index {r[key]['alpha_index']})")
    # accuracy of the float32 path
    try:
        p32 = np.load(folder / "pred_ols.npy")
        p64 = np.load(folder / "pred_ols64.npy")
        msg = f"OLS float32 vs float64 predictions: max |diff| {np.abs(p32 - p64).max():.2e}"
        if (folder / "pred_sklearn_ols.npy").exists():
            psk = np.load(folder / "pred_sklearn_ols.npy")
            msg += f"; float32 vs scikit-learn {np.abs(p32 - psk).max():.2e}"
            msg += f"; float64 vs scikit-learn {np.abs(p64 - psk).max():.2e}"
        print(msg + " (log2 units; target sd ~1)")
    except FileNotFoundError:
        pass

    print(f"\n--- RidgeCV at reduced size {cfg['cv_n']} x {p} -> {cfg['cv_t']} "
          "(full size exceeds 24 GB) ---")
    line("geneinfer Ridge (13 alphas + GCV)", "cv_ours")
    line("scikit-learn RidgeCV (13 alphas, LOO)", "cv_sklearn")
    if "seconds" in r.get("cv_sklearn", {}) and "seconds" in r.get("cv_ours", {}):
        print(f"  speed-up {r['cv_sklearn']['seconds'] / r['cv_ours']['seconds']:.1f}x; alphas "
              f"{r['cv_ours']['alpha']:.4g} (GCV) vs {r['cv_sklearn']['alpha']:.4g} (LOO)")

    print(f"\n--- other models at reduced size {cfg['reduced_n']} x {p} -> {cfg['reduced_t']} ---")
    for key, name in (("lasso", "Lasso (10 alphas, val split)"), ("knn_ge", "KNN-GE (k auto)"),
                      ("pcr", "PCR (components by GCV)"), ("sample_knn", "sample KNN (k auto)"),
                      ("svr", "SVR rbf, 10 genes, 2,000 samples")):
        line(name, key)
        extra = {k: v for k, v in r.get(key, {}).items() if k in ("k_", "n_components_",
                                                                    "alpha_index", "n_iter")}
        if extra:
            print(f"      {extra}")


if __name__ == "__main__":
    main()
