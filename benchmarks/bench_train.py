"""End-to-end training pipeline on held-out real studies: which model should be the default?

Leave-one-study-out over the four HG-U133A studies (bladderbatch RMA log2, nakayama and
borovecki MAS5 linear from ``../shared/data``, GSE781 MAS5 embedded): :func:`train_model`
(log2, probe collapse, L1000 panel, dedup, quantile + standardisation) on three studies,
tested on the fourth. Prints per model and fold the MAE on standardized expression (truth and
prediction z-scored within the test study, as D-GEX evaluated cross-platform data), the
median per-gene r, the share of genes better than ridge, the MAE ratio to ridge (the current
``DEFAULT_MODEL``) and the training time; then the same for ridge without quantile
normalisation.

Run (heavy: take the shared lock)::

    OMP_NUM_THREADS=2 flock /tmp/geneinfer-heavy.lock \\
        .venv/bin/python benchmarks/bench_train.py [--models ridge,ols,...] [--folds 2]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

#: Settings sized for 2 CPU cores (D-GEX itself used 3,000-9,000 hidden units on a GPU).
MODEL_PARAMS = {
    "ridge": {},
    "ols": {},
    "knn-ge": {},
    "dgex": {"hidden": (1000,), "max_epochs": 60, "patience": 8, "progress": False},
    "ridge-mlp": {"max_epochs": 60, "patience": 8, "progress": False},
}


def load_studies() -> dict:
    from geneinfer.examples import load_embedded, load_shared
    from geneinfer.train.workflow import prepare_expression

    studies = {
        name: prepare_expression(load_shared(name, data_dir=SHARED))
        for name in ("bladderbatch", "nakayama", "borovecki")
    }
    studies["gse781"] = prepare_expression(load_embedded(["gse781"])["gse781"])
    return studies


def main() -> None:
    import torch

    torch.set_num_threads(2)
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(MODEL_PARAMS))
    ap.add_argument("--folds", type=int, default=4, help="how many held-out studies")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    from geneinfer.commands.demo import evaluate_on
    from geneinfer.evaluate.metrics import share_better
    from geneinfer.train.workflow import train_model

    studies = load_studies()
    models = args.models.split(",")
    if "ridge" not in models:
        models.insert(0, "ridge")
    rows = []
    for test_name in list(studies)[: args.folds]:
        train = [d for n, d in studies.items() if n != test_name]
        test = studies[test_name]
        per_gene = {}
        runs = [(m, True) for m in models] + [("ridge", False)]
        for name, quantile in runs:
            t0 = time.perf_counter()
            model = train_model(
                train,
                model=name,
                panel="l1000",
                data_dir=SHARED,
                params=MODEL_PARAMS.get(name),
                quantile=quantile,
                device="cpu",
                progress=False,
            )
            secs = time.perf_counter() - t0
            label = name if quantile else "ridge-noqn"
            per_gene[label] = evaluate_on(model, test)
            rows.append((test_name, label, per_gene[label], secs, test.n_samples))
        base = per_gene["ridge"]["mae_std"].to_numpy()
        for row in rows:
            if row[0] == test_name:
                pg = row[2]
                print(
                    f"{test_name:<13} {row[1]:<11} MAE(std) {np.nanmean(pg['mae_std']):.4f}  "
                    f"ratio/ridge {np.nanmean(pg['mae_std']) / np.nanmean(base):.3f}  "
                    f"median r {np.nanmedian(pg['r']):.3f}  better than ridge "
                    f"{100 * share_better(pg['mae_std'].to_numpy(), base):5.1f}%  "
                    f"train {row[3]:6.1f} s",
                    flush=True,
                )
    print("\nmean over held-out studies (ratio < 1: better than ridge)")
    labels = dict.fromkeys(r[1] for r in rows)
    for label in labels:
        maes = [np.nanmean(r[2]["mae_std"]) for r in rows if r[1] == label]
        ridge = [np.nanmean(r[2]["mae_std"]) for r in rows if r[1] == "ridge"]
        secs = [r[3] for r in rows if r[1] == label]
        print(
            f"{label:<11} MAE(std) {np.mean(maes):.4f}  ratio/ridge "
            f"{np.mean(np.array(maes) / np.array(ridge)):.3f}  mean train {np.mean(secs):.1f} s"
        )


if __name__ == "__main__":
    main()
