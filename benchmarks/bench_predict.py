"""Benchmark streaming prediction at L1000 scale against its roofline.

Generated L1000-shaped input (N x 978 GCTX, values resampled from the real L1000 profiles in
``../shared/data`` when present) -> 22,268-gene GCTX output, with

* OLS: a linear map (978 x 22,268 matmul, numpy/OpenBLAS);
* D-GEX 1x3000: a torch MLP 978 -> 3000 (tanh) -> 22,268, random weights.

For each model and size it reports profiles/s and the peak RSS of the predicting process
(each run in a fresh subprocess), and compares the wall time with two limits measured in the
same run: compute (the model's predict on in-memory batches, and the matmul GFLOP/s) and
disk (a plain sequential write of the same number of bytes to the same folder). Target:
wall time <= 1.5 x the slower limit; peak RSS < 2 GB and flat from the smaller to the larger N.
Then 2 worker processes vs 1 (speed-up, identical output), and the time extrapolated to
1.3M profiles.

The 200k x 22,268 float32 output is 17.8 GB: the script checks free space and falls back to
``--small`` sizes when short. Run heavy parts one at a time::

    flock /tmp/geneinfer-heavy.lock python benchmarks/bench_predict.py [--small]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GENEINFER_SHARED", ROOT.parent / "shared" / "data"))
N_LANDMARKS, N_TARGETS, HIDDEN = 978, 22268, 3000


# ---------------------------------------------------------------------- models (picklable)
class LinearMap:
    """OLS-style prediction ``X @ W + b`` with fixed random weights (built lazily)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._w: tuple | None = None

    def __getstate__(self) -> dict:
        return {"seed": self.seed, "_w": None}

    def flops(self, n: int) -> float:
        return 2.0 * n * N_LANDMARKS * N_TARGETS

    def __call__(self, X: np.ndarray) -> np.ndarray:
        if self._w is None:
            rng = np.random.default_rng(self.seed)
            W = (rng.standard_normal((N_LANDMARKS, N_TARGETS), dtype=np.float32) * 0.03)
            self._w = (W, np.full(N_TARGETS, 6.0, np.float32))
        W, b = self._w
        Y = X @ W
        Y += b
        return Y


class TorchMLP:
    """D-GEX 1x3000: Linear(978, 3000) -> tanh -> Linear(3000, 22268), random weights."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._net = None

    def __getstate__(self) -> dict:
        return {"seed": self.seed, "_net": None}

    def flops(self, n: int) -> float:
        return 2.0 * n * (N_LANDMARKS * HIDDEN + HIDDEN * N_TARGETS)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        import torch

        if self._net is None:
            torch.manual_seed(self.seed)
            self._net = torch.nn.Sequential(
                torch.nn.Linear(N_LANDMARKS, HIDDEN), torch.nn.Tanh(),
                torch.nn.Linear(HIDDEN, N_TARGETS),
            ).eval()
        with torch.inference_mode():
            return self._net(torch.from_numpy(np.ascontiguousarray(X))).numpy()


MODELS = {"ols": LinearMap, "mlp": TorchMLP}


def make_predictor(kind: str):
    from geneinfer.predict import Predictor

    ids = [str(1000 + i) for i in range(N_LANDMARKS)]
    targets = [str(100000 + i) for i in range(N_TARGETS)]
    fn = MODELS[kind]()
    return Predictor(fn, ids, targets, landmark_means=np.full(N_LANDMARKS, 8.0, np.float32))


# ---------------------------------------------------------------------- input generation
def real_profiles() -> np.ndarray | None:
    path = SHARED / "l1000" / "test_l1000.gct"
    if not path.is_file():
        return None
    import pandas as pd

    table = pd.read_csv(path, sep="\t", skiprows=2, header=0, low_memory=False)
    return np.ascontiguousarray(table.iloc[35:, 12:].astype(np.float32).to_numpy().T)


def write_input(path: Path, n: int) -> None:
    """N x 978 GCTX in the CMap layout, written in chunks (memory stays small)."""
    import h5py

    base = real_profiles()
    rng = np.random.default_rng(0)
    if base is None:
        base = (8 + 2 * rng.standard_normal((400, N_LANDMARKS))).astype(np.float32)
    with h5py.File(path, "w") as f:
        m = f.create_dataset("0/DATA/0/matrix", shape=(n, N_LANDMARKS), dtype="<f4",
                             chunks=(1024, N_LANDMARKS))
        for s in range(0, n, 50_000):
            e = min(n, s + 50_000)
            rows = rng.integers(0, len(base), e - s)
            noise = 0.3 * rng.standard_normal((e - s, N_LANDMARKS), dtype=np.float32)
            m[s:e] = base[rows] + noise
        f.create_dataset("0/META/ROW/id", data=np.array(
            [str(1000 + i) for i in range(N_LANDMARKS)], dtype="S"))
        f.create_dataset("0/META/COL/id", data=np.array([f"S{i:07d}" for i in range(n)], "S"))
        f.create_dataset("0/META/COL/cell_id", data=np.array([b"A375", b"MCF7"] * (n // 2)
                                                             + [b"PC3"] * (n % 2)))


# ---------------------------------------------------------------------- child runs
def child(args: dict) -> None:
    """Run one prediction (in a fresh process, so its peak RSS is its own)."""
    from geneinfer.predict import predict_file

    pred = make_predictor(args["model"])
    t = time.perf_counter()
    res = predict_file(pred, args["input"], args["output"], block_size=args["block_size"],
                       workers=args["workers"], threads=args.get("threads"), progress=False)
    print(json.dumps({"seconds": time.perf_counter() - t, "n": res.n_samples}))


def run_child(args: dict) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps(args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"child failed: {args}")
    result = json.loads(out.strip().splitlines()[-1])
    # ru_maxrss (KiB) of the child; worker grandchildren are measured by RUSAGE_CHILDREN
    result["rss_gb"] = usage.ru_maxrss * 1024 / 1e9
    return result


def compute_rate(kind: str, batch: int = 2048, reps: int = 8) -> tuple[float, float]:
    """(profiles/s, GFLOP/s) of the model on in-memory batches (compute limit).

    The best of three rounds: a roofline is the rate the hardware can reach, and single
    rounds on a shared 2-core machine varied by up to 40%.
    """
    fn = make_predictor(kind).predict_fn
    X = (8 + np.random.default_rng(1).standard_normal((batch, N_LANDMARKS))).astype(np.float32)
    fn(X)  # warm-up (weights, thread pools)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            fn(X)
        best = min(best, (time.perf_counter() - t) / reps)
    return batch / best, fn.flops(batch) / best / 1e9


def disk_rate(folder: Path, n_bytes: int) -> float:
    """Bytes/s of a plain sequential write of ``n_bytes`` (same page-cache rules as predict)."""
    buf = np.random.default_rng(2).standard_normal(2048 * N_TARGETS // 2).astype(np.float32)
    view = memoryview(np.concatenate([buf, buf])).cast("B")
    path = folder / "plain_write.bin"
    t = time.perf_counter()
    with open(path, "wb", buffering=0) as fh:
        left = n_bytes
        while left > 0:
            left -= fh.write(view[: min(left, len(view))])
    dt = time.perf_counter() - t
    path.unlink()
    return n_bytes / dt


def read_matrix(path: Path) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as f:
        return f["0/DATA/0/matrix"][:]


# ---------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000])
    ap.add_argument("--small", action="store_true", help="sizes 20k and 50k")
    ap.add_argument("--models", nargs="+", default=["ols", "mlp"], choices=list(MODELS))
    ap.add_argument("--block-size", type=int, default=10_000)
    ap.add_argument("--sharded-size", type=int, default=50_000)
    ap.add_argument("--scratch", default="/tmp")
    ap.add_argument("--skip-sharded", action="store_true")
    args = ap.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    sizes = [20_000, 50_000] if args.small else sorted(args.sizes)
    need = (max(sizes) * N_TARGETS * 4 + max(sizes) * N_LANDMARKS * 4) * 1.1
    free = shutil.disk_usage(args.scratch).free
    if need > free:
        print(f"only {free / 1e9:.1f} GB free in {args.scratch}, {need / 1e9:.1f} GB needed; "
              "using --small sizes")
        sizes = [20_000, 50_000]
    threads = min(2, os.cpu_count() or 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    scratch = Path(tempfile.mkdtemp(prefix="geneinfer-bench-", dir=args.scratch))
    print(f"scratch {scratch}; {os.cpu_count()} CPUs; threads {threads}; "
          f"output {N_TARGETS} genes; block {args.block_size}")
    try:
        inputs = {}
        for n in sizes:
            inputs[n] = scratch / f"in_{n}.gctx"
            t = time.perf_counter()
            write_input(inputs[n], n)
            print(f"generated {n} x {N_LANDMARKS} input in {time.perf_counter() - t:.0f} s")
        rows = []
        for kind in args.models:
            prof_s, gflops = compute_rate(kind)
            for n in sizes:
                out = scratch / f"out_{kind}_{n}.gctx"
                r = run_child({"model": kind, "input": str(inputs[n]), "output": str(out),
                               "block_size": args.block_size, "workers": 1})
                n_bytes = out.stat().st_size
                out.unlink()  # free the space before measuring the plain write
                disk = disk_rate(scratch, n_bytes)
                t_compute, t_disk = n / prof_s, n_bytes / disk
                limit = max(t_compute, t_disk)
                rows.append((kind, n, r, prof_s, gflops, disk, t_compute, t_disk))
                print(f"{kind:3s} n={n:>7d}: {r['seconds']:7.1f} s = {n / r['seconds']:7.0f} "
                      f"profiles/s | peak RSS {r['rss_gb']:.2f} GB | compute limit "
                      f"{t_compute:6.1f} s ({prof_s:.0f} profiles/s, {gflops:.0f} GFLOP/s) | "
                      f"disk limit {t_disk:6.1f} s ({disk / 1e6:.0f} MB/s, "
                      f"{n_bytes / 1e9:.1f} GB) | wall / slower limit "
                      f"{r['seconds'] / limit:.2f} (target <= 1.5)")
            big = next(x for x in rows if x[0] == kind and x[1] == max(sizes))
            rate = big[1] / big[2]["seconds"]
            rss = [x[2]["rss_gb"] for x in rows if x[0] == kind]
            print(f"{kind:3s}: peak RSS {' / '.join(f'{v:.2f}' for v in rss)} GB at "
                  f"{' / '.join(str(s) for s in sizes)} profiles; 1.3M profiles would take "
                  f"{1.3e6 / rate / 60:.1f} min ({1.3e6 * N_TARGETS * 4 / 1e9:.0f} GB output)")
        if not args.skip_sharded:
            sharded(scratch, inputs, args, sizes)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def sharded(scratch: Path, inputs: dict, args: argparse.Namespace, sizes: list[int]) -> None:
    n = min(args.sharded_size, max(sizes))
    inp = inputs.get(n) or next(v for k, v in inputs.items() if k >= n)
    n = next(k for k, v in inputs.items() if v == inp)
    results = {}
    for label, workers, threads in (("1 process x 2 threads", 1, None),
                                    ("1 process x 1 thread", 1, 1),
                                    ("2 processes x 1 thread", 2, 1)):
        out = scratch / f"shard_{workers}_{threads}.gctx"
        r = run_child({"model": "ols", "input": str(inp), "output": str(out),
                       "block_size": args.block_size, "workers": workers, "threads": threads})
        results[label] = (r, out)
        print(f"ols n={n} {label:24s}: {r['seconds']:6.1f} s ({n / r['seconds']:.0f} profiles/s)")
    base, one, two = (results[k] for k in results)
    a, b, c = read_matrix(base[1]), read_matrix(one[1]), read_matrix(two[1])
    print(f"2 processes vs 1 process (2 threads): speed-up "
          f"{base[0]['seconds'] / two[0]['seconds']:.2f}x; vs 1 process x 1 thread: "
          f"{one[0]['seconds'] / two[0]['seconds']:.2f}x")
    print(f"output identical to 1 process with equal threads per process: "
          f"{np.array_equal(b, c)}; max |diff| vs 1 process x 2 threads: "
          f"{np.abs(a - c).max():.2e} (BLAS summation order)")


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
