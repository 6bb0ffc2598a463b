"""D-GEX training/prediction speed, memory, DDP scaling and recipe/model quality.

Run (heavy: take the shared lock, at most 2 torch threads)::

    flock /tmp/geneinfer-heavy.lock .venv/bin/python benchmarks/bench_neural.py [--small]

Sections (each prints figures and ratios against a baseline measured in the same run):

1. matmul rate (fp32, bf16) of this machine, the yardstick for FLOP utilisation;
2. training throughput (samples/s) of DGEX 1x3000 and 3x9000 on generated data of the D-GEX
   shapes (943 landmarks -> 9,520 targets), next to scikit-learn's ``MLPRegressor`` of the
   same shape and recipe (SGD, momentum 0.5, batch 200), and validation error of both after
   the same samples seen;
3. peak memory of a fit, extrapolated to the full D-GEX training set (88,807 samples);
4. prediction throughput (profiles/s) of every neural model;
5. DDP: 2 processes x 1 thread vs 1 process x 2 threads, same global batch;
6. quality on real GPL96 data (leave-one-dataset-out): recipes ``modern`` vs ``paper``, and
   ridge / DGEX / ridge-mlp / autoencoder / cnn / per-gene-best.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
N_LM, N_TG, FULL_N = 943, 9520, 88_807


def make_data(n: int, p: int = N_LM, q: int = N_TG, seed: int = 0):
    """Expression-like data: 60 latent programs, landmarks linear in them, targets not.

    The programs' loadings are fixed (one "biology"); ``seed`` draws the samples.
    """
    loadings = np.random.default_rng(12345)
    A = loadings.normal(size=(60, p)).astype(np.float32) / 8
    B = loadings.normal(size=(60, q)).astype(np.float32) / 8
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 60)).astype(np.float32)
    X = z @ A + 0.3 * rng.normal(size=(n, p)).astype(np.float32)
    Y = np.tanh(z @ B) + 0.3 * rng.normal(size=(n, q)).astype(np.float32)
    return X, Y


def _product_rate(product, flops: float) -> float:
    """FLOP/s of ``product()`` repeated for 2 s (after one warm-up call)."""
    product()
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 2.0:
        product()
        reps += 1
    return flops * reps / (time.perf_counter() - t0)


def matmul_rate(dtype: torch.dtype, m: int = 200, k: int = 3000, n: int = N_TG) -> float:
    """torch GEMM rate into a preallocated output (a fresh 7.6 MB output per product
    page-faults)."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    out = a @ b
    return _product_rate(lambda: torch.mm(a, b, out=out), 2 * m * k * n)


def numpy_matmul_rate(m: int = 200, k: int = 3000, n: int = N_TG) -> float:
    """The same for numpy float32 (OpenBLAS, the BLAS scikit-learn runs on)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    out = a @ b
    return _product_rate(lambda: np.matmul(a, b, out=out), 2 * m * k * n)


def train_flops_per_sample(hidden: tuple[int, ...]) -> float:
    widths = [N_LM, *hidden, N_TG]
    macs = sum(a * b for a, b in itertools.pairwise(widths))
    return 6.0 * macs  # forward 2, backward 4 FLOPs per multiply-accumulate


def bench_torch_train(hidden, X, Y, Xv, Yv, *, recipe: str, precision: str) -> dict:
    from geneinfer.models.neural import DGEX

    model = DGEX(hidden=hidden, dropout=0.0, recipe=recipe, precision=precision,
                 batch_size=200, max_epochs=1, validation_fraction=0, progress=False,
                 device="cpu", standardize=False)
    model.fit(X, Y)
    epoch = model.history_[0]["history"][1]
    seen = model.history_[0]["steps"] * 200
    val = float(np.mean((model.predict(Xv) - Yv) ** 2))
    return {"samples_per_s": seen / epoch["seconds"], "val_mse": val, "seen": seen}


def bench_sklearn_train(hidden, X, Y, Xv, Yv, *, solver: str, lr_scale: float = 2.0) -> dict:
    from sklearn.neural_network import MLPRegressor

    if solver == "sgd":
        # sklearn reports mean(error^2)/2 over all outputs, but its gradient is that of
        # sum-over-outputs(error^2)/2 averaged over samples (delta = prediction - y): the
        # paper recipe's loss (sum over outputs of error^2) is twice that, so the same SGD
        # steps need lr x 2 (lr_scale=2); smaller scales are tried if that diverges
        opts = {"learning_rate_init": 5e-4 * lr_scale, "momentum": 0.5,
                "nesterovs_momentum": False}
    else:
        opts = {"learning_rate_init": 1e-3}
    model = MLPRegressor(hidden_layer_sizes=hidden, activation="tanh", solver=solver,
                         batch_size=200, alpha=0.0, max_iter=1, shuffle=True, random_state=0,
                         **opts)
    seen = len(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        try:
            model.fit(X, Y)
        except ValueError:  # "Solver produced non-finite parameter weights"
            return {"samples_per_s": seen / (time.perf_counter() - t0), "val_mse": float("nan"),
                    "seen": seen}
        seconds = time.perf_counter() - t0
    pred = model.predict(Xv)
    val = float(np.mean((pred - Yv) ** 2)) if np.isfinite(pred).all() else float("nan")
    return {"samples_per_s": seen / seconds, "val_mse": val, "seen": seen,
            "dtype": str(model.coefs_[0].dtype)}


def train_worker(spec: dict) -> None:
    """One training measurement in a fresh process (its allocator state is its own)."""
    torch.set_num_threads(2)
    hidden = tuple(spec["hidden"])
    X, Y = make_data(spec["steps"] * 200)
    Xv, Yv = make_data(1000, seed=1)
    if spec.get("malloc"):
        from geneinfer.utils.memory import reuse_freed_memory

        reuse_freed_memory()
    if spec["kind"] == "torch":
        res = bench_torch_train(hidden, X, Y, Xv, Yv, recipe=spec["recipe"], precision="fp32")
    else:
        res = bench_sklearn_train(hidden, X, Y, Xv, Yv, solver=spec["solver"],
                                  lr_scale=spec.get("lr_scale", 2.0))
    res["mean_val_mse"] = float(np.mean((Yv - Y.mean(0)) ** 2))
    print("TRAINRESULT " + json.dumps(res), flush=True)


def run_train_worker(spec: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "GENEINFER_MALLOC_TUNING"}
    if spec["kind"] == "sklearn":  # sklearn as users get it, unless the spec says otherwise
        env["GENEINFER_MALLOC_TUNING"] = "1" if spec.get("malloc") else "0"
    res = subprocess.run([sys.executable, __file__, "--train-worker", json.dumps(spec)],
                         capture_output=True, text=True, check=True, env=env)
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("TRAINRESULT "))
    return json.loads(line.split(" ", 1)[1])


def section_train(args, rates) -> None:
    print("\n== 2. training throughput, D-GEX shapes 943 -> 9,520 (2 threads, each run in a "
          "fresh process) ==")
    configs = [((3000,), args.steps_small), ((9000, 9000, 9000), args.steps_big)]
    for hidden, steps in configs:
        flops = train_flops_per_sample(hidden)
        tag = "x".join(str(h) for h in hidden)
        base = {"hidden": list(hidden), "steps": steps}
        res = {"torch paper (SGD)": run_train_worker({**base, "kind": "torch",
                                                      "recipe": "paper"}),
               "torch modern (AdamW)": run_train_worker({**base, "kind": "torch",
                                                         "recipe": "modern"})}
        if len(hidden) == 1 or args.sklearn_big:
            for scale in (2.0, 1.0, 0.5, 0.25):  # the paper's lr first, then smaller
                sgd = run_train_worker({**base, "kind": "sklearn", "solver": "sgd",
                                        "lr_scale": scale})
                if np.isfinite(sgd["val_mse"]):
                    break
                print(f"  sklearn sgd diverged at lr {5e-4 * scale:g}; trying smaller")
            res[f"sklearn sgd (lr {5e-4 * scale:g})"] = sgd
            res["sklearn adam"] = run_train_worker({**base, "kind": "sklearn", "solver": "adam"})
            res["sklearn adam + allocator"] = run_train_worker(
                {**base, "kind": "sklearn", "solver": "adam", "malloc": True})
            res["sklearn sgd + allocator"] = run_train_worker(
                {**base, "kind": "sklearn", "solver": "sgd", "lr_scale": scale, "malloc": True})
        mean_mse = next(iter(res.values()))["mean_val_mse"]
        print(f"(predicting the training mean: val MSE {mean_mse:.4f}; sklearn runs in "
              f"{next((r['dtype'] for r in res.values() if 'dtype' in r), '-')})")
        pairs = {"torch paper (SGD)": next((k for k in res if k.startswith("sklearn sgd (")),
                                           None),
                 "torch modern (AdamW)": "sklearn adam" if "sklearn adam" in res else None}
        best_rate = max(rates["fp32"], rates["numpy"])  # MKL (torch) vs OpenBLAS (numpy)
        for name, r in res.items():
            util = r["samples_per_s"] * flops / best_rate
            ratio = ""
            if pairs.get(name):
                ref = res[pairs[name]]
                ratio = (f"  x{r['samples_per_s'] / ref['samples_per_s']:.2f} vs {pairs[name]}"
                         f" (val MSE {ref['val_mse']:.4f})")
            print(f"DGEX {tag:>14} {name:<26} {r['samples_per_s']:8.1f} samples/s  "
                  f"FLOP util {100 * util:5.1f}% of the best fp32 matmul  "
                  f"val MSE after {r['seen']} samples {r['val_mse']:.4f}{ratio}")


def section_memory(args) -> None:
    print("\n== 3. peak memory of a fit (DGEX 1x3000, 943 -> 9,520, fresh process) ==")
    res = subprocess.run([sys.executable, __file__, "--mem-worker", str(args.mem_samples)],
                         capture_output=True, text=True, check=True)
    r = json.loads(next(ln for ln in res.stdout.splitlines() if ln.startswith("MEMRESULT "))
                   .split(" ", 1)[1])
    n, overhead = args.mem_samples, r["peak_gb"] - r["data_peak_gb"]
    full_data = FULL_N * (N_LM + N_TG) * 4 / 1e9
    # no copy of the data grows with n (batches are gathered on the fly) except one
    # standardized copy of X (for the landmark statistics); the rest is model + batch state
    x_copy = FULL_N * N_LM * 4 / 1e9
    print(f"{n} samples: data {r['data_gb']:.2f} GB; peak RSS {r['peak_gb']:.2f} GB, of which "
          f"{overhead:.2f} GB on top of the data during the fit")
    print(f"estimate for the full D-GEX set ({FULL_N} samples): data {full_data:.2f} GB + fit "
          f"{overhead + x_copy:.2f} GB = {full_data + overhead + x_copy:.2f} GB (target < 16 GB)")
    hidden = (9000, 9000, 9000)
    params = sum(a * b + b for a, b in itertools.pairwise([N_LM, *hidden, N_TG]))
    state = params * 4 * 5 / 1e9  # weights, grads, 2 AdamW moments, best copy
    print(f"DGEX 3x9000: {params / 1e6:.0f} M parameters -> {state:.1f} GB training state; "
          f"full-data fit about {full_data + x_copy + state + 0.5:.1f} GB")


def _rss_gb(field: str) -> float:
    line = next(ln for ln in open("/proc/self/status") if ln.startswith(field))
    return int(line.split()[1]) / 1e6  # kB -> GB


def mem_worker(n: int) -> None:
    from geneinfer.models.neural import DGEX

    torch.set_num_threads(2)
    X, Y = make_data(n)
    # forget the data generator's temporaries: reset the peak (VmHWM) to the current RSS
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    data_peak = _rss_gb("VmRSS")
    DGEX(hidden=(3000,), batch_size=200, max_epochs=1, progress=False, device="cpu").fit(X, Y)
    peak = _rss_gb("VmHWM")
    print("MEMRESULT " + json.dumps({"data_gb": (X.nbytes + Y.nbytes) / 1e9,
                                     "data_peak_gb": data_peak, "peak_gb": peak}), flush=True)


def section_predict(args) -> None:
    print("\n== 4. prediction throughput (profiles/s, 2 threads, fp32) ==")
    from geneinfer.models.linear import Ridge
    from geneinfer.models.neural import DGEX, BottleneckMLP, LandmarkCNN, RidgeResidualMLP

    X, Y = make_data(400)
    Xp, _ = make_data(args.predict_rows, seed=2)
    common = {"max_epochs": 1, "batch_size": 200, "progress": False, "device": "cpu",
              "validation_fraction": 0}
    models = {
        "ridge (baseline)": Ridge(),
        "dgex 1x3000": DGEX(hidden=(3000,), **common),
        "dgex 3x9000": DGEX(hidden=(9000, 9000, 9000), **common),
        "autoencoder 1000-128-1000": BottleneckMLP(**common),
        "cnn 16/32ch + 1000": LandmarkCNN(**common),
        "ridge-mlp 1000": RidgeResidualMLP(**common),
    }
    base = None
    for name, model in models.items():
        if args.small and "9000" in name:
            continue
        model.fit(X, Y)
        model.predict(Xp[:200])
        t0 = time.perf_counter()
        model.predict(Xp)
        rate = len(Xp) / (time.perf_counter() - t0)
        base = base or rate
        print(f"{name:<28} {rate:10.0f} profiles/s  (x{rate / base:.3f} of ridge)")


def section_ddp(args) -> None:
    print("\n== 5. DDP: 2 processes x 1 thread vs 1 process x 2 threads (DGEX 1x3000) ==")
    out = {}
    env = dict(os.environ)
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(key, None)
    cmds = {
        "1 process x 2 threads": [sys.executable, __file__, "--ddp-worker", "2"],
        "1 process x 1 thread": [sys.executable, __file__, "--ddp-worker", "1"],
        "2 processes x 1 thread": [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                   "--nproc-per-node", "2", __file__, "--ddp-worker", "1"],
    }
    for name, cmd in cmds.items():
        res = subprocess.run([*cmd, "--ddp-steps", str(args.ddp_steps)], env=env,
                             capture_output=True, text=True, check=True)
        line = next(ln for ln in res.stdout.splitlines() if ln.startswith("DDPRESULT "))
        out[name] = json.loads(line.split(" ", 1)[1])
    base = out["1 process x 2 threads"]["samples_per_s"]
    one = out["1 process x 1 thread"]["samples_per_s"]
    for name, r in out.items():
        print(f"{name:<24} {r['samples_per_s']:8.1f} samples/s  (x{r['samples_per_s'] / base:.2f} "
              f"of 1 x 2 threads, x{r['samples_per_s'] / one:.2f} of 1 x 1 thread)")


def ddp_worker(threads: int, steps: int) -> None:
    torch.set_num_threads(threads)
    from geneinfer.models.neural import DGEX

    X, Y = make_data(steps * 200)
    model = DGEX(hidden=(3000,), dropout=0.0, batch_size=200, max_epochs=1, progress=False,
                 device="cpu", validation_fraction=0, standardize=False)
    model.fit(X, Y)
    if int(os.environ.get("RANK", "0")) == 0:
        h = model.history_[0]
        print("DDPRESULT " + json.dumps(
            {"samples_per_s": h["steps"] * 200 / h["history"][1]["seconds"],
             "world_size": h["world_size"]}), flush=True)


def section_quality(args) -> None:
    print("\n== 6. quality on real GPL96 data, leave-one-dataset-out "
          "(300 D-GEX landmarks -> 1,000 D-GEX targets; mean per-gene MAE in training-SD units) ==")
    sys.path.insert(0, str(ROOT / "tests" / "models"))
    from gpl96_data import DATASETS, fold, gene_mae, load_gpl96

    from geneinfer.models.ensemble import PerGeneSelector
    from geneinfer.models.linear import LinearRegression, Ridge
    from geneinfer.models.neural import DGEX, BottleneckMLP, LandmarkCNN, RidgeResidualMLP
    from geneinfer.models.registry import make_model

    shared = Path(os.environ.get("GENEINFER_SHARED", ROOT.parent / "shared" / "data"))
    data = load_gpl96(shared)
    epochs = 30 if args.small else 60
    c = {"progress": False, "batch_size": 32, "max_epochs": epochs, "patience": 10}
    width = 512 if args.small else 1000
    nets = {"dgex-paper": {"hidden": [width], "recipe": "paper", **c},
            "dgex-modern": {"hidden": [width], "recipe": "modern", **c},
            "ridge-mlp": {"hidden": [width], **c}}
    factories = {
        "ols": LinearRegression,
        "ridge": Ridge,
        "knn-ge": lambda: make_model("knn-ge"),
        "dgex-paper": lambda: DGEX(**nets["dgex-paper"]),
        "dgex-modern": lambda: DGEX(**nets["dgex-modern"]),
        "ridge-mlp": lambda: RidgeResidualMLP(**nets["ridge-mlp"]),
        "autoencoder": lambda: BottleneckMLP(encoder=(width,), bottleneck=64,
                                             decoder=(width,), **c),
        "cnn": lambda: LandmarkCNN(channels=(8, 16), hidden=256, **c),
        "per-gene-best": lambda: PerGeneSelector(
            candidates=("ridge", "knn-ge", "dgex", "ridge-mlp"),
            candidate_params={"dgex": nets["dgex-modern"], "ridge-mlp": nets["ridge-mlp"]}),
    }
    table: dict[str, list[float]] = {k: [] for k in factories}
    val_loss: dict[str, list[float]] = {"dgex-paper": [], "dgex-modern": []}
    for held in DATASETS:
        X, Y, Xt, Yt = fold(data, held)
        mean, std = X.mean(0), X.std(0)
        for name, make in factories.items():
            model = make()
            if name in ("ols", "ridge", "knn-ge"):  # the neural models standardize internally
                pred = model.fit((X - mean) / std, Y).predict((Xt - mean) / std)
            else:
                pred = model.fit(X, Y).predict(Xt)
            table[name].append(float(gene_mae(pred, Yt, Y).mean()))
            if name in val_loss:
                val_loss[name].append(model.history_[0]["best_val_loss"])
            if name == "per-gene-best":
                print(f"  per-gene-best on {held}: genes per candidate {model.chosen_counts()}")
    ridge = np.array(table["ridge"])
    print(f"{'model':<15}" + "".join(f"{d:>14}" for d in DATASETS) + "      mean   vs ridge")
    for name, vals in table.items():
        print(f"{name:<15}" + "".join(f"{v:14.4f}" for v in vals)
              + f"  {np.mean(vals):8.4f}  x{np.mean(np.array(vals) / ridge):.3f}")
    for name, vals in val_loss.items():
        print(f"validation MSE (z) {name:<12} " + " ".join(f"{v:.4f}" for v in vals)
              + f"  mean {np.mean(vals):.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="quick run (fewer steps/epochs)")
    ap.add_argument("--sections", default="1,2,3,4,5,6")
    ap.add_argument("--sklearn-big", action="store_true",
                    help="also run sklearn at 3x9000 (float64: ~8 GB)")
    ap.add_argument("--ddp-worker", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--ddp-steps", type=int, default=30, help=argparse.SUPPRESS)
    ap.add_argument("--mem-worker", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--train-worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.train_worker:
        train_worker(json.loads(args.train_worker))
        return
    if args.mem_worker:
        mem_worker(args.mem_worker)
        return
    if args.ddp_worker:
        ddp_worker(args.ddp_worker, args.ddp_steps)
        return
    torch.set_num_threads(min(2, torch.get_num_threads()))
    args.steps_small = 20 if args.small else 60
    args.steps_big = 2 if args.small else 6
    args.mem_samples = 4000 if args.small else 20000
    args.predict_rows = 500 if args.small else 2000
    args.ddp_steps = 10 if args.small else 30
    sections = {int(s) for s in args.sections.split(",")}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    rates = {}
    if sections & {1, 2}:
        print("\n== 1. matmul rate (200x3000 @ 3000x9520) ==")
        from geneinfer.models.nn.trainer import resolve_precision

        # bf16 can be ~50x slower on CPUs without native bf16: measure it on a 10x smaller n
        rates = {"fp32": matmul_rate(torch.float32), "bf16": matmul_rate(torch.bfloat16, n=952),
                 "numpy": numpy_matmul_rate()}
        print(f"torch fp32 {rates['fp32'] / 1e9:.1f} GFLOP/s; bf16 {rates['bf16'] / 1e9:.1f} "
              f"GFLOP/s (x{rates['bf16'] / rates['fp32']:.2f}); precision='auto' uses "
              f"{resolve_precision('auto', torch.device('cpu'))} on this CPU; numpy float32 "
              f"(scikit-learn's BLAS) {rates['numpy'] / 1e9:.1f} GFLOP/s")
    if 2 in sections:
        section_train(args, rates)
    if 3 in sections:
        section_memory(args)
    if 4 in sections:
        section_predict(args)
    if 5 in sections:
        section_ddp(args)
    if 6 in sections:
        section_quality(args)


if __name__ == "__main__":
    main()
