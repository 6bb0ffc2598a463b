"""Benchmark geneinfer.io against bare h5py / numpy / pandas on generated data of real shapes.

* GCTX: 100,000 samples x 978 landmarks (L1000 level-3 shape), float32. Ours: ``write_gctx``
  (chunked, gzip + shuffle), ``read_gctx`` (whole file, with ids and metadata) and
  ``iter_sample_blocks`` (10,000-sample blocks). Baselines: h5py writing the same matrix with
  the same chunks and filters; h5py reading the matrix and the two id datasets.
* GCT: 20,000 samples x 12,000 genes (GCT stores genes x samples: 12,000 rows of 20,000
  values). Ours: ``write_gct`` / ``read_gct``. Baselines: ``np.savetxt`` of the same text,
  and ``pd.read_csv(path, sep="\\t", skiprows=2, index_col=0)``.

Values are generated like L1000 level-3 data (log2 ~ N(8, 2), 4 decimals). Every measurement
runs in a fresh subprocess, which reports its wall seconds for the operation and its peak RSS
(``ru_maxrss``, includes the interpreter and, for writes, the generated matrix). Ratios are
ours / baseline from the same run.

    flock /tmp/geneinfer-heavy.lock python benchmarks/bench_io.py          # full (~GBs)
    python benchmarks/bench_io.py --small --repeat 3                       # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FULL = {"gctx": (100_000, 978), "gct": (20_000, 12_000)}
SMALL = {"gctx": (10_000, 978), "gct": (1_000, 2_000)}


# ---------------------------------------------------------------------- child tasks
def _generate(n_samples: int, n_genes: int):
    from geneinfer.expression import ExpressionData

    rng = np.random.default_rng(0)
    values = np.empty((n_samples, n_genes), dtype=np.float32)
    step = 5000
    for s in range(0, n_samples, step):  # in blocks: keeps the float64 temporaries small
        block = rng.normal(8.0, 2.0, size=(min(step, n_samples - s), n_genes))
        values[s : s + step] = np.round(block, 4)
    genes = [f"{200000 + j}_at" for j in range(n_genes)]
    samples = [f"PLATE{i // 384:04d}:{i % 384:03d}" for i in range(n_samples)]
    return ExpressionData(values=values, gene_ids=genes, sample_ids=samples)


def _task(name: str, path: Path, n_samples: int, n_genes: int) -> float:
    """Run one measured operation; returns its wall seconds."""
    import h5py
    import pandas as pd

    from geneinfer.io import iter_sample_blocks, read_gct, read_gctx, write_gct, write_gctx
    from geneinfer.io.gctx import default_chunk_samples

    if name.endswith("write"):
        data = _generate(n_samples, n_genes)
    t0 = time.perf_counter()
    if name == "gctx_ours_write":
        write_gctx(data, path)
    elif name == "gctx_h5py_write":
        chunk = (min(default_chunk_samples(n_genes), n_samples), n_genes)
        with h5py.File(path, "w") as f:
            f.create_dataset(
                "0/DATA/0/matrix",
                data=data.values,
                chunks=chunk,
                compression="gzip",
                compression_opts=4,
                shuffle=True,
            )
            f.create_dataset("0/META/ROW/id", data=np.array(data.gene_ids, dtype="S"))
            f.create_dataset("0/META/COL/id", data=np.array(data.sample_ids, dtype="S"))
    elif name == "gctx_ours_read":
        got = read_gctx(path)
        assert got.shape == (n_samples, n_genes)
    elif name == "gctx_ours_blocks":
        total = sum(b.n_samples for b in iter_sample_blocks(path, block_size=10_000))
        assert total == n_samples
    elif name == "gctx_h5py_read":
        with h5py.File(path, "r") as f:
            m = f["0/DATA/0/matrix"][()]
            rows = [v.decode() for v in f["0/META/ROW/id"][()]]
            cols = [v.decode() for v in f["0/META/COL/id"][()]]
        assert m.shape == (len(cols), len(rows))
    elif name == "gct_ours_write":
        write_gct(data, path)
    elif name == "gct_numpy_write":
        with open(path, "w") as fh:
            fh.write(f"#1.3\n{n_genes}\t{n_samples}\t0\t0\n")
            fh.write("\t".join(["id", *data.sample_ids]) + "\n")
            np.savetxt(fh, data.values.T, fmt="%.7g", delimiter="\t")  # no row ids: a floor
    elif name == "gct_ours_read":
        got = read_gct(path)
        assert got.shape == (n_samples, n_genes)
    elif name == "gct_pandas_read":
        frame = pd.read_csv(path, sep="\t", skiprows=2, index_col=0)
        assert frame.shape == (n_genes, n_samples)
    else:
        raise SystemExit(f"unknown task {name}")
    return time.perf_counter() - t0


def _child(args: argparse.Namespace) -> None:
    seconds = _task(args.child, Path(args.path), args.n_samples, args.n_genes)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb}))


# ---------------------------------------------------------------------- parent
def _run(task: str, path: Path, shape: tuple[int, int]) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2", MKL_NUM_THREADS="2")
    cmd = [
        sys.executable,
        __file__,
        "--child",
        task,
        "--path",
        str(path),
        "--n-samples",
        str(shape[0]),
        "--n-genes",
        str(shape[1]),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _pair(tasks: list[tuple[str, Path]], shape: tuple[int, int], repeat: int) -> list[dict]:
    """Run the tasks alternately ``repeat`` times; best time and largest peak of each.

    Alternating ours / baseline spreads the noise of a shared machine over both sides.
    """
    runs: list[list[dict]] = [[] for _ in tasks]
    for _ in range(repeat):
        for k, (task, path) in enumerate(tasks):
            runs[k].append(_run(task, path, shape))
    return [
        {"seconds": min(r["seconds"] for r in rs), "peak_mb": max(r["peak_mb"] for r in rs)}
        for rs in runs
    ]


def _row(label: str, ours: dict, base: dict | None, base_label: str) -> str:
    line = f"  {label:<22} ours {ours['seconds']:7.2f} s {ours['peak_mb']:7.0f} MB"
    if base is None:
        return line
    return (
        f"{line} | {base_label:<14} {base['seconds']:7.2f} s {base['peak_mb']:7.0f} MB"
        f" | ratio time {ours['seconds'] / base['seconds']:5.2f}"
        f" mem {ours['peak_mb'] / base['peak_mb']:5.2f}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="small shapes for a quick check")
    p.add_argument("--dir", help="folder for the generated files (default: a temp folder)")
    p.add_argument("--repeat", type=int, default=1, help="alternate runs, report the best")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    p.add_argument("--n-samples", type=int, help=argparse.SUPPRESS)
    p.add_argument("--n-genes", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args)
        return
    shapes = SMALL if args.small else FULL
    rep = args.repeat
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        d = Path(tmp)
        gs = shapes["gctx"]
        print(f"GCTX {gs[0]:,} samples x {gs[1]:,} genes (float32), best of {rep}")
        w_ours, w_base = _pair(
            [("gctx_ours_write", d / "ours.gctx"), ("gctx_h5py_write", d / "h5py.gctx")], gs, rep
        )
        size = (d / "ours.gctx").stat().st_size / 2**20
        print(_row("write", w_ours, w_base, "h5py write"), f"| file {size:.0f} MB")
        r_ours, b_ours, r_base = _pair(
            [
                ("gctx_ours_read", d / "ours.gctx"),
                ("gctx_ours_blocks", d / "ours.gctx"),
                ("gctx_h5py_read", d / "ours.gctx"),
            ],
            gs,
            rep,
        )
        print(_row("read (whole)", r_ours, r_base, "h5py read"))
        print(_row("read (10k blocks)", b_ours, r_base, "h5py read"))
        for f in d.iterdir():
            f.unlink()
        ts = shapes["gct"]
        print(f"GCT {ts[0]:,} samples x {ts[1]:,} genes ({ts[1]:,} rows x {ts[0]:,} columns)")
        w_ours, w_base = _pair(
            [("gct_ours_write", d / "ours.gct"), ("gct_numpy_write", d / "numpy.gct")], ts, rep
        )
        size = (d / "ours.gct").stat().st_size / 2**20
        print(_row("write", w_ours, w_base, "np.savetxt"), f"| file {size:.0f} MB")
        (d / "numpy.gct").unlink()
        r_ours, r_base = _pair(
            [("gct_ours_read", d / "ours.gct"), ("gct_pandas_read", d / "ours.gct")], ts, rep
        )
        print(_row("read", r_ours, r_base, "pd.read_csv"))


if __name__ == "__main__":
    main()
