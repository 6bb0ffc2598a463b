"""Out-of-core training on an ARCHS4-sized compendium against in-memory training and the disk.

Generates an ARCHS4-layout ``.h5`` (v2: ``data/expression`` genes x samples, uint32 counts,
chunks of every gene x 100 samples, gzip level 1; ``meta/genes/gene_symbol`` +
``ensembl_gene``; ``meta/samples`` with GSM ids, series of 20-300 samples,
``singlecellprobability``) of 300,000 samples x 20,000 genes: 24 GB of counts, 96 GB as the
float32 landmark + target matrices a whole-data fit would hold. The genes are the D-GEX
panel's Ensembl ids (943 landmarks, ~9,500 targets: the D-GEX shapes) and other ids that map
to no gene (they count for the library sizes, as ARCHS4's non-coding genes do). Counts follow
a 16-factor log-normal model per sample (library sizes 5 M +- 50 %) with overdispersed noise,
so landmarks do predict targets.

Then, each in a fresh process (wall seconds, peak RSS of that process):

1. the raw read rate: h5py reading every chunk in sample blocks, page cache dropped first
   (``posix_fadvise(DONTNEED)``): what the disk and gzip deliver, the limit of any pass;
2. ``geneinfer train --model ridge`` on the whole file (out of core: above --memory-limit);
3. ``geneinfer train --model dgex --param hidden=[3000] --param max_epochs=1`` on it;
4. the same two commands on an in-memory subset (the first samples, same layout).

Profiles/s are the file's profiles over the command's wall time (read, harmonise, normalise,
fit); the out-of-core passes' own rates come from the model's ``info``. Ratios compare with
the in-memory runs and with the raw read rate.

    flock /tmp/geneinfer-heavy.lock python benchmarks/bench_compendium.py        # full, ~1.5 h
    python benchmarks/bench_compendium.py --small                                # ~3 min

The generated files are deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from geneinfer.utils.memory import parse_size

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GENEINFER_SHARED", ROOT.parent / "shared" / "data"))
FULL = {"samples": 300_000, "genes": 20_000, "subset": 10_000, "memory": "8G"}
SMALL = {"samples": 6_000, "genes": 12_000, "subset": 1_500, "memory": "2G"}
CHUNK_SAMPLES = 100
FACTORS = 16


# ---------------------------------------------------------------------- generation
def _gene_table(n_genes: int, rng: np.random.Generator) -> pd.DataFrame:
    panel = []
    for name in ("dgex_map_lm.txt", "dgex_map_tg.txt"):
        t = pd.read_csv(SHARED / "genes" / name, sep="\t", header=None, dtype=str)
        panel.append(t[[0, 1]].set_axis(["gene_symbol", "ensembl_gene"], axis=1))
    genes = pd.concat(panel).drop_duplicates("ensembl_gene")
    genes = genes.iloc[: n_genes]
    extra = n_genes - len(genes)
    if extra > 0:  # genes outside the panel: no Entrez id in the gene tables
        genes = pd.concat([genes, pd.DataFrame({
            "gene_symbol": [f"LINC{90000 + i}" for i in range(extra)],
            "ensembl_gene": [f"ENSG{99000000000 + i:011d}" for i in range(extra)]})])
    return genes.iloc[rng.permutation(len(genes))].reset_index(drop=True)


def _sample_table(n: int, rng: np.random.Generator) -> pd.DataFrame:
    sizes = rng.integers(20, 300, size=n // 20 + 2)
    series = np.repeat([f"GSE{100000 + i}" for i in range(len(sizes))], sizes)[:n]
    return pd.DataFrame({
        "geo_accession": [f"GSM{1_000_000 + i}" for i in range(n)],
        "series_id": series,
        "singlecellprobability": np.where(rng.random(n) < 0.02, 0.9, 0.01),
        "source_name_ch1": ["tissue"] * n,
        "title": [f"sample {i}" for i in range(n)],
    })


def generate(path: Path, n_samples: int, n_genes: int) -> dict[str, float]:
    """Write the ARCHS4-layout file block by block (float32 model, stochastic rounding)."""
    from geneinfer.io.archs4 import write_archs4

    rng = np.random.default_rng(2024)
    genes = _gene_table(n_genes, rng)
    samples = _sample_table(n_samples, rng)
    mu = rng.normal(np.log(5.0), 2.0, n_genes).astype(np.float32)
    load = (rng.normal(0, 0.6, (n_genes, FACTORS)) / np.sqrt(FACTORS)).astype(np.float32)

    def blocks():
        step = 2000
        for start in range(0, n_samples, step):
            m = min(step, n_samples - start)
            z = rng.standard_normal((m, FACTORS), dtype=np.float32)
            eta = z @ load.T
            eta += mu
            eta += 0.3 * rng.standard_normal(eta.shape, dtype=np.float32)  # overdispersion
            np.exp(eta, out=eta)
            eta *= (rng.lognormal(np.log(5e6), 0.5, m).astype(np.float32)
                    / eta.sum(axis=1))[:, None]
            eta += rng.random(eta.shape, dtype=np.float32)  # stochastic rounding
            yield np.floor(eta).astype(np.uint32)

    t0 = time.perf_counter()
    write_archs4(path, genes=genes, samples=samples, blocks=blocks(),
                 chunk_samples=CHUNK_SAMPLES, compression="gzip", compression_opts=1)
    return {"seconds": time.perf_counter() - t0, "bytes": path.stat().st_size}


def subset(big: Path, small: Path, n: int) -> None:
    """The first ``n`` samples of ``big`` in the same layout (the in-memory comparison)."""
    from geneinfer.io.archs4 import write_archs4

    with h5py.File(big, "r") as f:
        genes = pd.DataFrame({k: f[f"meta/genes/{k}"][()] for k in f["meta/genes"]})
        samples = pd.DataFrame({k: f[f"meta/samples/{k}"][:n] for k in f["meta/samples"]})
        genes = genes.apply(lambda c: c.str.decode("utf-8") if c.dtype == object else c)
        samples = samples.apply(lambda c: c.str.decode("utf-8") if c.dtype == object else c)
        ds = f["data/expression"]
        parts = (ds[:, s:min(n, s + 2000)].T for s in range(0, n, 2000))
        write_archs4(small, genes=genes, samples=samples, blocks=parts,
                     chunk_samples=CHUNK_SAMPLES, compression="gzip", compression_opts=1)


# ---------------------------------------------------------------------- measurements
def drop_cache(path: Path) -> None:
    """Evict the file's pages from the page cache (no root needed), so reads hit the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_rate(path: Path) -> dict[str, float]:
    """Seconds to read and decompress every chunk, in blocks of 10 chunks of samples."""
    drop_cache(path)
    t0 = time.perf_counter()
    with h5py.File(path, "r", rdcc_nbytes=256 * 2**20) as f:
        ds = f["data/expression"]
        n = ds.shape[1]
        step = 10 * CHUNK_SAMPLES
        total = 0
        for s in range(0, n, step):
            total += ds[:, s:s + step].nbytes
    sec = time.perf_counter() - t0
    return {"seconds": sec, "profiles_per_s": n / sec, "uncompressed_MB_per_s": total / sec / 1e6,
            "file_MB_per_s": path.stat().st_size / sec / 1e6}


def run(cmd: list[str], log: Path) -> dict[str, float]:
    """Run a command in a child that reports its wall time and peak RSS."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "rc = subprocess.call(sys.argv[1:]); "
             "print(rc, time.perf_counter() - t, "
             "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    with open(log, "w") as err:
        out = subprocess.run([sys.executable, "-c", probe, *cmd], stdout=subprocess.PIPE,
                             stderr=err, text=True, check=False)
    rc, sec, rss_kb = out.stdout.split()[-3:]
    if int(rc) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {rc}); see {log}")
    return {"seconds": float(sec), "peak_rss_GB": int(rss_kb) / 2**20}


def train(data: Path, out: Path, model: str, memory: str, log: Path, *extra: str
          ) -> dict[str, float]:
    drop_cache(data)
    cmd = [sys.executable, "-m", "geneinfer", "train", "--train", str(data), "--out",
           str(out), "--model", model, "--panel", "dgex", "--no-dedup", "--data-dir",
           str(SHARED), "--memory-limit", memory, *extra]
    result = run(cmd, log)
    info = json.loads((out / "model.json").read_text())["info"]
    # out of core the held-out series stay out of training; in memory every profile trains
    # (the held-out ones score a first fit, see geneinfer.train.validation)
    result["n_profiles"] = info["n_train_samples"] + (
        info["n_valid_samples"] if "out_of_core" in info else 0)
    result["valid_r_median"] = info["valid_r_median"]
    result["out_of_core"] = "out_of_core" in info
    if "out_of_core" in info:
        result["passes"] = {k: {kk: vv for kk, vv in v.items()
                                if kk in ("seconds", "profiles_per_s", "profiles_read")}
                            for k, v in info["out_of_core"]["passes"].items()}
    return result


# ---------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="small sizes for a quick check")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where the generated files go (default: a temporary folder in /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--models", nargs="+", choices=("ridge", "dgex"), default=["ridge", "dgex"],
                    help="models to time (default: both)")
    ap.add_argument("--skip-read", action="store_true", help="skip the raw read rate")
    ap.add_argument("--report", type=Path, default=None,
                    help="print the table of an earlier run's results.json and stop")
    args = ap.parse_args()
    if args.report:
        _report(json.loads(args.report.read_text()))
        return
    size = SMALL if args.small else FULL
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-compendium-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    big, sub = work / "compendium.h5", work / "subset.h5"
    results: dict[str, object] = {"size": size, "cpus": os.cpu_count()}
    try:
        if not big.exists():
            results["generate"] = generate(big, size["samples"], size["genes"])
            print(f"generated {big}: {big.stat().st_size / 1e9:.2f} GB in "
                  f"{results['generate']['seconds']:.0f} s", flush=True)
        if not sub.exists():
            subset(big, sub, size["subset"])
        if not args.skip_read:
            results["read"] = read_rate(big)
            print("raw read", results["read"], flush=True)
        mem = "64G"  # the subset is trained in memory, whatever this machine has
        # one epoch of D-GEX (no refit on all profiles after early stopping)
        for model, extra in (("ridge", ()), ("dgex", ("--param", "hidden=[3000]", "--param",
                                                      "max_epochs=1", "--refit", "no"))):
            if model not in args.models:
                continue
            for name, data, limit in (("streamed", big, size["memory"]),
                                      ("in_memory", sub, mem)):
                out = work / f"{model}-{name}"
                log = work / f"{model}-{name}.log"
                # the full file is above the limit by itself; the small one is made to stream
                force = ("--out-of-core",) if name == "streamed" and args.small else ()
                r = train(data, out, model, limit, log, *extra, *force)
                r["profiles_per_s"] = r["n_profiles"] / r["seconds"]
                results[f"{model}_{name}"] = r
                print(model, name, json.dumps(r), flush=True)
        _report(results)
    finally:
        (work / "results.json").write_text(json.dumps(results, indent=2, default=str))
        if not args.keep:
            for path in (big, sub):
                path.unlink(missing_ok=True)
        print(f"results: {work / 'results.json'}")


def _report(r: dict) -> None:
    size, read = r["size"], r.get("read")
    limit = parse_size(size["memory"]) / 2**30
    print(f"\n{size['samples']:,} samples x {size['genes']:,} genes (ARCHS4 layout, uint32, "
          f"chunks {size['genes']} x {CHUNK_SAMPLES}, gzip 1); {r['cpus']} CPUs; streamed "
          f"with --memory-limit {size['memory']}")
    if read:
        print(f"raw read: {read['seconds']:.0f} s, {read['profiles_per_s']:,.0f} profiles/s, "
              f"{read['uncompressed_MB_per_s']:,.0f} MB/s of counts "
              f"({read['file_MB_per_s']:,.0f} MB/s from the file)")
    print(f"{'run':<18}{'profiles':>10}{'seconds':>9}{'profiles/s':>12}{'peak RSS':>10}"
          f"{'vs limit':>10}{'vs memory':>11}{'vs read':>9}")
    for model in ("ridge", "dgex"):
        if f"{model}_in_memory" not in r:
            continue
        mem = r[f"{model}_in_memory"]
        for name in ("streamed", "in_memory"):
            x = r[f"{model}_{name}"]
            vs_limit = f"{x['peak_rss_GB'] / limit:>10.2f}" if name == "streamed" else " " * 10
            vs_read = (f"{x['profiles_per_s'] / read['profiles_per_s']:>9.2f}" if read
                       else " " * 9)
            print(f"{model + ' ' + name:<18}{x['n_profiles']:>10,}{x['seconds']:>9.0f}"
                  f"{x['profiles_per_s']:>12,.0f}{x['peak_rss_GB']:>9.2f}G{vs_limit}"
                  f"{x['profiles_per_s'] / mem['profiles_per_s']:>11.2f}{vs_read}")
        for pass_name, p in r[f"{model}_streamed"].get("passes", {}).items():
            rate = f"{p['profiles_per_s']:,.0f} profiles/s" if "profiles_per_s" in p else ""
            print(f"    {pass_name:<14}{p['seconds']:>8.0f} s  {rate}")


if __name__ == "__main__":
    main()
