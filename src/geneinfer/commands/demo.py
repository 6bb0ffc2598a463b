"""``geneinfer demo``: train and compare models on the embedded real data, offline.

Trains OLS (the LINCS baseline), ridge, KNN-GE and D-GEX on one embedded study and tests on
another (bladderbatch RMA log2 <-> GSE781 MAS5 linear, both HG-U133A), then prints MAE on
standardized expression, median per-gene Pearson r and the share of genes each model
predicts better than OLS, plus a per-gene error summary of OLS.

Needs no network and no ``../shared`` data: everything comes from the package.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from geneinfer.errors import GeneinferError
from geneinfer.expression import ExpressionData

logger = logging.getLogger(__name__)

#: Models compared, with small settings so the demo runs in well under a minute on 2 cores.
DEMO_MODELS: dict[str, dict[str, Any]] = {
    "ols": {},
    "ridge": {},
    "knn-ge": {},
    "dgex": {},
}
#: Data-driven landmark count when the LINCS table is not available offline.
N_DATA_LANDMARKS = 300
#: Data-driven landmarks are picked among this many most variable training genes (clustering
#: all ~12,600 genes into landmark groups takes too long for a demo).
LANDMARK_CANDIDATES = 5000
#: In --quick mode, targets are a seeded random subset of this size.
QUICK_TARGETS = 1000
#: Embedded studies used (train <-> test).
STUDIES = ("bladderbatch", "GSE781")
#: Names of the GEUVADIS RNA-seq parts (one study: samples split 80/20).
RNASEQ = ("GEUVADIS-train", "GEUVADIS-test")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="DIR", help="also save the trained models here")
    parser.add_argument(
        "--quick", action="store_true", help=f"fewer targets ({QUICK_TARGETS}) and epochs"
    )
    parser.add_argument(
        "--both-directions",
        action="store_true",
        help="also train on GSE781 and test on bladderbatch",
    )
    parser.add_argument("--data-dir", metavar="DIR", help="cache folder of public reference data")


@dataclass
class PanelChoice:
    """The landmark panel the demo uses and why."""

    name: str
    landmarks: list[str]
    targets: list[str]
    reason: str
    dedup_summary: str = ""


def load_demo_studies() -> dict[str, ExpressionData]:
    """The embedded microarray studies on log2 with genes collapsed to Entrez ids."""
    from geneinfer.examples import load_embedded
    from geneinfer.train.workflow import prepare_expression

    embedded = {k.lower(): v for k, v in load_embedded([n.lower() for n in STUDIES]).items()}
    return {name: prepare_expression(embedded[name.lower()]) for name in STUDIES}


def load_rnaseq_split(data_dir: Any = None) -> dict[str, ExpressionData] | None:
    """Embedded GEUVADIS RNA-seq as seeded train/test parts (80/20), with Entrez ids.

    ``None`` when no Ensembl -> Entrez map is on this machine (the D-GEX gene maps or the
    HGNC table in the data folder or cache); the demo never downloads one.
    """
    from geneinfer.examples import load_embedded
    from geneinfer.genes.ids import has_ensembl, load_id_map
    from geneinfer.train.workflow import prepare_expression, validation_split

    if not has_ensembl(load_id_map(data_dir=data_dir)):
        return None
    geuv = prepare_expression(load_embedded(["geuvadis"])["geuvadis"], data_dir=data_dir)
    tr, te = validation_split(geuv.n_samples)
    return {RNASEQ[0]: geuv.select_samples(tr), RNASEQ[1]: geuv.select_samples(te)}


def choose_panel(
    train: ExpressionData, shared_genes: list[str], *, data_dir: Any = None
) -> PanelChoice:
    """The LINCS L1000 panel if its gene table is on this machine, else a data-driven one.

    Never downloads: the demo must run offline.
    """
    from geneinfer.genes import get_panel, select_landmarks
    from geneinfer.public_data import locate

    shared = set(shared_genes)
    if locate("lincs_gene_info", data_dir=data_dir) is not None:
        panel = get_panel("l1000", data_dir=data_dir)
        landmarks = [g for g in panel.landmarks if g in shared]
        reason = f"LINCS L1000 landmarks ({len(landmarks)} of {len(panel.landmarks)} in the data)"
    else:
        sub = train.select_genes(shared_genes)
        var = np.nanvar(sub.values, axis=0)
        top = np.sort(np.argsort(-np.nan_to_num(var, nan=-1.0))[:LANDMARK_CANDIDATES])
        n = min(N_DATA_LANDMARKS, len(top) // 4)
        landmarks = [str(g) for g in select_landmarks(sub.select_genes(sub.gene_ids[top]), n=n)]
        reason = (
            "the LINCS gene table (L1000 landmarks) is not in the data folder or cache and the "
            f"demo does not download; using {len(landmarks)} data-driven landmarks chosen by "
            f"clustering the {len(top)} most variable genes of the training study "
            "(geneinfer.genes.select_landmarks)"
        )
    lm = set(landmarks)
    targets = [g for g in shared_genes if g not in lm]
    return PanelChoice(
        "l1000" if "LINCS L1000" in reason else "data-driven", landmarks, targets, reason
    )


def _panel_obj(choice: PanelChoice) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(name=choice.name, landmarks=choice.landmarks, targets=choice.targets)


def _model_params(name: str, quick: bool) -> dict[str, Any]:
    import inspect

    from geneinfer.models.registry import get_model_class

    accepted = set(inspect.signature(get_model_class(name).__init__).parameters)
    wanted: dict[str, Any] = {}
    if name == "dgex":
        wanted = {
            "hidden": (256,),
            "max_epochs": 20 if quick else 40,
            "patience": 5,
            "dropout": 0.1,
            "batch_size": 16,
            "random_state": 0,
        }
    if name == "knn-ge":
        wanted = {}
    return {k: v for k, v in wanted.items() if k in accepted}


def evaluate_on(bundle: Any, test: ExpressionData) -> pd.DataFrame:
    """Per-gene MAE on standardized expression and Pearson r on a held-out study.

    Truth and prediction are each z-scored within the test study, as D-GEX evaluated its
    cross-platform predictions (GTEx, 1000 Genomes): this removes platform offsets between
    the training and test studies, which no model can know.
    """
    from geneinfer.evaluate.metrics import per_gene_mae, per_gene_pearson, within_study_zscore

    X = test.select_genes(bundle.landmark_ids).values
    Y = test.select_genes(bundle.target_ids).values
    P = bundle.predict_log2(X)
    groups = np.zeros(len(Y))
    mae = per_gene_mae(within_study_zscore(Y, groups), within_study_zscore(P, groups))
    r = per_gene_pearson(Y, P)
    return pd.DataFrame(
        {"mae_std": np.asarray(mae, float), "r": np.asarray(r, float)},
        index=pd.Index(bundle.target_ids),
    )


def comparison_table(per_gene: dict[str, pd.DataFrame], baseline: str = "ols") -> pd.DataFrame:
    """One row per model: mean standardized MAE, median r, share of genes better than OLS."""
    base = per_gene[baseline]["mae_std"]
    rows = []
    for name, pg in per_gene.items():
        ok = pg["mae_std"].notna() & base.notna()
        better = float((pg["mae_std"][ok] < base[ok]).mean()) if name != baseline else np.nan
        rows.append(
            {
                "model": name,
                "MAE (std)": float(np.nanmean(pg["mae_std"])),
                "median r": float(np.nanmedian(pg["r"])),
                "genes better than OLS": better,
            }
        )
    return pd.DataFrame(rows).set_index("model")


def run_direction(
    train_name: str,
    test_name: str,
    studies: dict[str, ExpressionData],
    *,
    quick: bool,
    data_dir: Any,
    out: Path | None,
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], PanelChoice]:
    from geneinfer.train.workflow import deduplicate, train_model

    train, test = studies[train_name], studies[test_name]
    shared = list(train.gene_ids[train.gene_ids.isin(test.gene_ids)])
    choice = choose_panel(train, shared, data_dir=data_dir)
    if quick and len(choice.targets) > QUICK_TARGETS:
        rng = np.random.default_rng(0)
        pick = np.sort(rng.choice(len(choice.targets), QUICK_TARGETS, replace=False))
        choice.targets = [choice.targets[i] for i in pick]
    # Near-duplicate removal once for all models (train_model would repeat it per model).
    train, dedup = deduplicate(train, shared)
    choice.dedup_summary = dedup["summary"]
    per_gene: dict[str, pd.DataFrame] = {}
    for name in DEMO_MODELS:
        t0 = time.perf_counter()
        bundle = train_model(
            train,
            model=name,
            panel=_panel_obj(choice),
            params=_model_params(name, quick),
            device="cpu",
            dedup=False,
            progress=False,
        )
        per_gene[name] = evaluate_on(bundle, test)
        logger.info("%s trained and tested in %.1f s", name, time.perf_counter() - t0)
        if out is not None:
            bundle.save(out / f"{name}-{train_name}")
    return comparison_table(per_gene), per_gene, choice


def format_report(
    train_name: str,
    test_name: str,
    table: pd.DataFrame,
    per_gene: dict[str, pd.DataFrame],
    choice: PanelChoice,
    studies: dict[str, ExpressionData],
) -> str:
    tr, te = studies[train_name], studies[test_name]
    lines = [
        f"train {train_name} ({tr.n_samples} samples) -> test {test_name} "
        f"({te.n_samples} samples); {len(choice.landmarks)} landmarks -> "
        f"{len(choice.targets)} targets; {choice.dedup_summary}",
        "",
        f"{'model':<8} {'MAE (std)':>10} {'median r':>9} {'genes better than OLS':>22}",
    ]
    for name, row in table.iterrows():
        better = row["genes better than OLS"]
        b = "(baseline)" if np.isnan(better) else f"{100 * better:.1f}%"
        lines.append(f"{name:<8} {row['MAE (std)']:>10.4f} {row['median r']:>9.3f} {b:>22}")
    ols = per_gene["ols"]
    q = np.nanpercentile(ols["mae_std"], [10, 25, 50, 75, 90])
    worst = ols["mae_std"].sort_values(ascending=False).head(5)
    sym = tr.gene_symbols()
    lines += [
        "",
        "OLS (LINCS baseline) per-gene standardized MAE: "
        + ", ".join(f"p{p} {v:.3f}" for p, v in zip((10, 25, 50, 75, 90), q)),
        "  hardest genes: " + ", ".join(f"{sym.get(g, g)} ({v:.2f})" for g, v in worst.items()),
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    _limit_torch_threads()
    t0 = time.perf_counter()
    try:
        studies = load_demo_studies()
    except ImportError as exc:
        raise GeneinferError(f"embedded demo data is not available: {exc}") from None
    out = Path(args.out) if args.out else None
    directions = [STUDIES]
    if args.both_directions:
        directions.append(tuple(reversed(STUDIES)))
    for i, (train_name, test_name) in enumerate(directions):
        table, per_gene, choice = run_direction(
            train_name, test_name, studies, quick=args.quick, data_dir=args.data_dir, out=out
        )
        if i == 0:
            print(f"panel: {choice.reason}")
        print()
        print(format_report(train_name, test_name, table, per_gene, choice, studies))
    print()
    print(
        "Note: bladder vs kidney tissue with 17-57 arrays per study, so inference across these "
        "studies is hard; D-GEX reached 0.32 training on ~88,000 GEO profiles."
    )
    _run_rnaseq(args, out)
    print()
    print(
        "MAE (std): mean over genes of |predicted - measured| after z-scoring both within the "
        "test study (D-GEX's cross-platform metric). Train on your own compendium with "
        f"`geneinfer train`. Done in {time.perf_counter() - t0:.0f} s."
    )
    if out is not None:
        print(f"models saved under {out}")
    return 0


def _run_rnaseq(args: argparse.Namespace, out: Path | None) -> None:
    """The GEUVADIS section, when an Ensembl -> Entrez map is available offline."""
    rna = load_rnaseq_split(args.data_dir)
    print()
    if rna is None:
        print(
            "RNA-seq (GEUVADIS): skipped; no Ensembl -> Entrez gene map on this machine "
            "(put the D-GEX gene maps or the HGNC table in --data-dir)"
        )
        return
    table, per_gene, choice = run_direction(
        *RNASEQ, rna, quick=args.quick, data_dir=args.data_dir, out=out
    )
    print(f"RNA-seq (GEUVADIS, held-out samples of one study); panel: {choice.reason}")
    print(format_report(*RNASEQ, table, per_gene, choice, rna))


def _limit_torch_threads() -> None:
    try:
        import torch

        torch.set_num_threads(min(2, torch.get_num_threads()))
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
