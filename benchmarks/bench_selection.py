"""Cost of study-aware ridge (alpha by cross-validation over groups) against GCV ridge.

Data: generated with the D-GEX shapes (88,807 profiles x 943 landmarks -> 9,520 targets,
float32) in 20 groups ("studies") of contiguous rows. Every profile shares 60 latent
factors with every other; each group adds its own offsets (per gene) and 10 factors of its
own with group-specific loadings on landmarks and targets. Fitting a group's own factors
pays inside that group (so GCV, which scores rows of the same groups, picks a small alpha)
but not on another group, so the alpha chosen over groups is larger.

Each measurement runs in a fresh subprocess that loads the arrays from ``.npy`` files,
resets its peak-memory mark (``/proc/self/clear_refs``) and then fits twice. The two
rules alternate for ``--rounds`` rounds (a busy machine slows both alike); printed are
the fastest fit's seconds, the peak resident memory of the process (``VmHWM``), the part
of it above the loaded data, the alpha each rule chose and the ratio of the two times,
all measured in this run.

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


def worker(task: str, folder: Path) -> dict:
    """One measurement in this (fresh) process."""
    from geneinfer.models.linear import Ridge

    X = np.load(folder / "X.npy")
    Y = np.load(folder / "Y.npy")
    groups = np.load(folder / "groups.npy")
    # forget the loading: the peak from here on is the fit's (plus the data)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    data_gb = _rss_gb("VmRSS")
    kwargs = {"groups": groups} if task == "groups" else {}
    seconds = []
    model = Ridge()
    for _ in range(2):
        t0 = time.perf_counter()
        model.fit(X, Y, **kwargs)
        seconds.append(time.perf_counter() - t0)
    peak = _rss_gb("VmHWM")
    return {"seconds": min(seconds), "all_seconds": seconds, "peak_rss_gb": peak,
            "data_gb": data_gb, "fit_extra_gb": peak - data_gb,
            "alpha": float(model.alpha_),
            "alpha_index": int(np.argmin(np.abs(model.alphas_ - model.alpha_))),
            "method": model.selection_["method"],
            "n_folds": model.selection_.get("n_folds"),
            "scores": model.selection_["scores"]}


def run_worker(task: str, folder: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", task, "--data", str(folder)]
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
        print(json.dumps(worker(args.worker, args.data)))
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
        results: dict[str, dict] = {}
        for _ in range(args.rounds):
            for task in ("gcv", "groups"):
                res = run_worker(task, folder)
                print(f"  {task}: {res}", flush=True)
                best = results.get(task)
                if best is None or res.get("seconds", np.inf) < best.get("seconds", np.inf):
                    results[task] = res
        report(results, cfg)
    finally:
        if not args.keep_data and args.data is None:
            shutil.rmtree(folder, ignore_errors=True)


def report(r: dict, cfg: dict) -> None:
    print(f"\n=== ridge at {cfg['n']} x {cfg['p']} -> {cfg['t']}, {cfg['groups']} groups ===")
    for key, name in (("gcv", "Ridge().fit(X, Y)          (GCV)"),
                      ("groups", "Ridge().fit(X, Y, groups=g) (over groups)")):
        res = r[key]
        if "seconds" not in res:
            print(f"{name:44s} {res}")
            continue
        print(f"{name:44s} {res['seconds']:7.2f} s  peak {res['peak_rss_gb']:5.2f} GB "
              f"(data {res['data_gb']:.2f} GB, fit +{res['fit_extra_gb']:.2f} GB)  "
              f"alpha {res['alpha']:.4g} (grid index {res['alpha_index']}, {res['method']})")
    if "seconds" in r["gcv"] and "seconds" in r["groups"]:
        print(f"study-aware / GCV time ratio: {r['groups']['seconds'] / r['gcv']['seconds']:.2f}"
              " (target <= 1.5)")


if __name__ == "__main__":
    main()
