"""Cost of study-aware ridge (alpha by cross-validation over groups) against GCV ridge.

Data: generated with the D-GEX shapes (88,807 profiles x 943 landmarks -> 9,520 targets,
float32) in 20 groups ("studies") of contiguous rows. Every profile shares 60 latent
factors with every other; each group adds its own offsets (per gene) and 10 factors of its
own with group-specific loadings on landmarks and targets. Fitting a group's own factors
pays inside that group (so GCV, which scores rows of the same groups, picks a small alpha)
but not on another group, so the alpha chosen over groups is larger.

Time: one process loads the arrays from ``.npy`` files and alternates the two fits
(GCV, over groups, GCV, ... ``--rounds`` of each), so that a busy machine slows both
alike; printed are each rule's fastest and median seconds and the median of the ratios of
each grouped fit to the mean of the GCV fits either side of it. Memory: each rule once more
in a fresh process that resets its peak mark (``/proc/self/clear_refs``) after loading;
printed are the peak resident memory (``VmHWM``) and the part of it above the loaded data.
All figures are measured in this run.

Usage::

    flock /tmp/geneinfer-heavy.lock python benchmarks/bench_selection.py         # full
    python benchmarks/bench_selection.py --small                                 # quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

FULL = {"n": 88807, "p": 943, "t": 9520, "groups": 20}
SMALL = {"n": 12000, "p": 943, "t": 2000, "groups": 20}


# ------------------------------------------------------------------------------ data
def generate(folder: Path, n: int, p: int, t: int, n_groups: int, *, seed: int = 0) -> None:
    """Write X.npy, Y.npy (float32) and groups.npy, one group at a time (little memory)."""
    rng = np.random.default_rng(seed)
    rank, own = 60, 10
    load_x = rng.normal(0, 1, (rank, p)).astype(np.float32) / np.sqrt(rank)
    load_y = rng.normal(0, 1, (rank, t)).astype(np.float32) / np.sqrt(rank)
    mean_x = rng.normal(8, 1.5, p).astype(np.float32)
    mean_y = rng.normal(8, 1.5, t).astype(np.float32)
    X = np.lib.format.open_memmap(folder / "X.npy", mode="w+", dtype=np.float32, shape=(n, p))
    Y = np.lib.format.open_memmap(folder / "Y.npy", mode="w+", dtype=np.float32, shape=(n, t))
    bounds = np.linspace(0, n, n_groups + 1).astype(int)
    groups = np.repeat(np.arange(n_groups), np.diff(bounds))
    for g in range(n_groups):
        gx = rng.normal(0, 1, (own, p)).astype(np.float32) / np.sqrt(own)
        gy = rng.normal(0, 1, (own, t)).astype(np.float32) / np.sqrt(own)
        off_x = rng.normal(0, 0.5, p).astype(np.float32)
        off_y = rng.normal(0, 0.5, t).astype(np.float32)
        for start in range(bounds[g], bounds[g + 1], 8192):
            m = min(8192, bounds[g + 1] - start)
            z = rng.standard_normal((m, rank), dtype=np.float32)
            zg = rng.standard_normal((m, own), dtype=np.float32)
            X[start : start + m] = (z @ load_x + zg @ gx + mean_x + off_x
                                    + 0.5 * rng.standard_normal((m, p), dtype=np.float32))
            Y[start : start + m] = (z @ load_y + zg @ gy + mean_y + off_y
                                    + 0.5 * rng.standard_normal((m, t), dtype=np.float32))
    X.flush()
    Y.flush()
    del X, Y
    np.save(folder / "groups.npy", groups)


# ------------------------------------------------------------------------------ workers
def _rss_gb(field: str) -> float:
    line = next(ln for ln in open("/proc/self/status") if ln.startswith(field))
    return int(line.split()[1]) / 2**20


def _load(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.load(folder / "X.npy"), np.load(folder / "Y.npy"), np.load(folder / "groups.npy")


def _fit(X: np.ndarray, Y: np.ndarray, groups: np.ndarray | None):
    from geneinfer.models.linear import Ridge

    t0 = time.perf_counter()
    model = Ridge().fit(X, Y, groups=groups)
    return model, time.perf_counter() - t0


def worker(task: str, folder: Path, rounds: int) -> dict:
    """``"timing"``: alternating fits; ``"gcv"``/``"groups"``: one fit's peak memory."""
    X, Y, groups = _load(folder)
    if task == "timing":
        times: dict[str, list[float]] = {"gcv": [], "groups": []}
        alphas = {}
        for _ in range(rounds):
            for rule in ("gcv", "groups"):
                model, sec = _fit(X, Y, groups if rule == "groups" else None)
                times[rule].append(sec)
                alphas[rule] = {"alpha": float(model.alpha_),
                                "alpha_index": int(np.argmin(np.abs(model.alphas_
                                                                    - model.alpha_))),
                                "method": model.selection_["method"],
                                "scores": model.selection_["scores"]}
        model, sec = _fit(X, Y, None)  # a GCV fit after the last grouped one
        times["gcv"].append(sec)
        return {"times": times, "models": alphas}
    # forget the loading: the peak from here on is the fit's (plus the data)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    data_gb = _rss_gb("VmRSS")
    _fit(X, Y, groups if task == "groups" else None)
    peak = _rss_gb("VmHWM")
    return {"peak_rss_gb": peak, "data_gb": data_gb, "fit_extra_gb": peak - data_gb}


def run_worker(task: str, folder: Path, rounds: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", task, "--data", str(folder),
           "--rounds", str(rounds)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed",
                "returncode": proc.returncode}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="quick run on smaller shapes")
    ap.add_argument("--data", type=Path, default=None, help="folder for the generated arrays")
    ap.add_argument("--keep-data", action="store_true")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of the two fits")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.data, args.rounds)))
        return
    cfg = SMALL if args.small else FULL
    folder = args.data or Path(f"/tmp/geneinfer-bench-selection-{os.getpid()}")
    folder.mkdir(parents=True, exist_ok=True)
    n, p, t, g = cfg["n"], cfg["p"], cfg["t"], cfg["groups"]
    print(f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} cpus={os.cpu_count()}")
    try:
        if not (folder / "groups.npy").exists():
            t0 = time.perf_counter()
            generate(folder, n, p, t, g)
            print(f"generated {n} x {p} -> {t} float32 in {g} groups "
                  f"({4 * n * (p + t) / 2**30:.2f} GB) in {time.perf_counter() - t0:.0f} s")
        results = {task: run_worker(task, folder, args.rounds)
                   for task in ("timing", "gcv", "groups")}
        for task, res in results.items():
            print(f"  {task}: {res}", flush=True)
        report(results, cfg)
    finally:
        if not args.keep_data and args.data is None:
            shutil.rmtree(folder, ignore_errors=True)


def report(r: dict, cfg: dict) -> None:
    print(f"\n=== ridge at {cfg['n']} x {cfg['p']} -> {cfg['t']}, {cfg['groups']} groups ===")
    timing = r["timing"]
    if "times" not in timing:
        print(f"timing failed: {timing}")
        return
    times = timing["times"]
    for rule, name in (("gcv", "Ridge().fit(X, Y)           (GCV)"),
                       ("groups", "Ridge().fit(X, Y, groups=g) (over groups)")):
        sec = np.asarray(times[rule])
        mem = r[rule]
        model = timing["models"][rule]
        peak = (f"peak {mem['peak_rss_gb']:5.2f} GB (data {mem['data_gb']:.2f} GB, "
                f"fit +{mem['fit_extra_gb']:.2f} GB)" if "peak_rss_gb" in mem else str(mem))
        print(f"{name:44s} best {sec.min():6.2f} s, median {np.median(sec):6.2f} s  {peak}  "
              f"alpha {model['alpha']:.4g} (grid index {model['alpha_index']}, "
              f"{model['method']})")
    gcv = np.asarray(times["gcv"])
    ratios = [g / (0.5 * (gcv[i] + gcv[i + 1])) for i, g in enumerate(times["groups"])]
    print(f"study-aware / GCV time: best {min(times['groups']) / gcv.min():.2f}, median of "
          f"neighbouring pairs {np.median(ratios):.2f} ({', '.join(f'{x:.2f}' for x in ratios)})"
          " (target <= 1.5)")


if __name__ == "__main__":
    main()
