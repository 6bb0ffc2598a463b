"""A study's results: unit records on disk, and the tables, figures and report made of them.

Every (model x fold) unit is written to ``OUT/units/<fold>/`` (per-gene scores, the unit's
rows and learning curve, and the predictions later steps need) under a key of its settings,
so an interrupted study resumes where it stopped. :func:`aggregate` turns the units into
``metrics.csv``, ``per_gene/*.csv``, ``reliability.csv``, ``calibration.csv``,
``biology.csv``, ``learning_curves.json``, ``versions.json`` and ``report.html``.
"""

from __future__ import annotations

import hashlib
import json
import platform as _platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import scipy
import sklearn
import torch

from geneinfer import __version__
from geneinfer.calibration import OffsetScaleCalibrator, center_per_study
from geneinfer.errors import ConfigError, GeneinferError
from geneinfer.evaluate.biology import downstream_table, evaluate_downstream
from geneinfer.evaluate.metrics import gene_scores
from geneinfer.evaluate.report import ReportData, reliability_table, write_report
from geneinfer.study.config import ModelSpec, StudyConfig
from geneinfer.study.folds import Fold
from geneinfer.utils.files import atomic_path

TRUTH_FILE = "_truth.npz"


def versions() -> dict[str, str]:
    """Versions of geneinfer, Python and the numerical libraries."""
    return {
        "geneinfer": __version__,
        "python": sys.version.split()[0],
        "platform": _platform.platform(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
        "torch": torch.__version__,
        "matplotlib": matplotlib.__version__,
    }


# ---------------------------------------------------------------------- unit records
def unit_paths(unit_dir: Path, label: str) -> dict[str, Path]:
    return {"record": unit_dir / f"{label}.json", "preds": unit_dir / f"{label}.preds.npz",
            "truth": unit_dir / TRUTH_FILE}


def save_unit(unit_dir: Path, label: str, key: str, res: Mapping[str, Any], *,
              keep_arrays: bool, write: Any) -> None:
    """Write a unit's per-gene scores, predictions (when needed) and, last, its record."""
    unit_dir.mkdir(parents=True, exist_ok=True)
    paths = unit_paths(unit_dir, label)
    for name, pg in res["per_gene"].items():
        with atomic_path(unit_dir / f"{label}__{name}.genes.csv") as tmp:
            pg.to_csv(tmp, index=False)
    if keep_arrays:
        preds = {}
        for name, arr in res["arrays"].items():
            preds[name] = arr["P"]
            preds[f"{name}.log2"] = arr["log2"]
        _save_npz(paths["preds"], preds)
        if not paths["truth"].is_file():  # the same for every model of the fold
            _save_npz(paths["truth"], {f"{name}.{k}": arr[k] for name, arr in
                                       res["arrays"].items() for k in ("X", "Y")}
                      | {f"{name}.label": arr["labels"] for name, arr in res["arrays"].items()})
    # the record marks the unit as finished, so it is written last
    write(paths["record"], {"key": key, "rows": res["rows"], "history": res["history"],
                            "test_sets": list(res["per_gene"]),
                            "warnings": res.get("warnings", [])})


def _save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def load_unit(unit_dir: Path, label: str, key: str, *, needs_arrays: bool) -> dict | None:
    """A finished unit's record, or None when absent, stale or missing needed arrays."""
    paths = unit_paths(unit_dir, label)
    if not paths["record"].is_file():
        return None
    try:
        doc = json.loads(paths["record"].read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if doc.get("key") != key:
        return None
    if needs_arrays and not (paths["preds"].is_file() and paths["truth"].is_file()):
        return None  # finished before biology/calibration asked for its predictions
    return doc


# ---------------------------------------------------------------------- tables
def per_gene_long(out: Path, folds: Sequence[Fold], models: Sequence[ModelSpec]
                  ) -> pd.DataFrame:
    """Every unit's per-gene scores in one long table."""
    parts = []
    for fold in folds:
        for model in models:
            for name in fold.test_sets:
                path = out / "units" / fold.name / f"{model.label}__{name}.genes.csv"
                if path.is_file():
                    pg = pd.read_csv(path, dtype={"gene": str})
                    pg.insert(0, "test_set", name)
                    pg.insert(0, "fold", fold.name)
                    pg.insert(0, "split", fold.split)
                    pg.insert(0, "model", model.label)
                    parts.append(pg)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def add_better_than_baseline(metrics: pd.DataFrame, per_gene: pd.DataFrame, base: str
                             ) -> pd.DataFrame:
    """Column ``better_than_<base>``: share of genes with a lower MAE than the baseline."""
    col = f"better_than_{base}"
    metrics[col] = np.nan
    if not len(per_gene) or base not in set(per_gene["model"]):
        return metrics
    ref = per_gene[per_gene["model"] == base].set_index(["fold", "test_set", "gene"])["mae"]
    pg = per_gene.join(ref.rename("base_mae"), on=["fold", "test_set", "gene"])
    pg = pg[np.isfinite(pg["mae"]) & np.isfinite(pg["base_mae"])]
    share = (pg["mae"] < pg["base_mae"]).groupby(
        [pg["model"], pg["fold"], pg["test_set"]]).mean()
    idx = pd.MultiIndex.from_frame(metrics[["model", "fold", "test_set"]])
    metrics[col] = np.where(metrics["view"] == "training", share.reindex(idx).to_numpy(),
                            np.nan)
    return metrics


def _summary(scores: pd.DataFrame) -> dict[str, float]:
    sub = scores[np.isfinite(scores["mae"].to_numpy())]
    return {"mae": float(sub["mae"].mean()), "mean_r": float(np.nanmean(sub["r"])),
            "ccc": float(np.nanmean(sub["ccc"])), "n_genes": len(sub)}


def calibrate_predictions(Y: np.ndarray, P: np.ndarray, *, methods: Sequence[str],
                          shots: int = 5, repeats: int = 5, seed: int = 0) -> list[dict]:
    """Metrics on a cross-platform test set with no / per-study / few-shot calibration.

    Each repeat draws ``shots`` samples with measured full profiles; ``offset-scale`` learns
    a per-gene offset and slope from them (:class:`~geneinfer.calibration.OffsetScaleCalibrator`).
    Every method is scored on the *remaining* samples only, the same ones for all methods.
    """
    n = len(Y)
    if n <= shots + 2:
        raise GeneinferError(
            f"calibration needs more than {shots + 2} test samples, the set has {n}"
        )
    rng = np.random.default_rng(seed)
    acc: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
    for _ in range(repeats):
        perm = rng.permutation(n)
        cal, ev = np.sort(perm[:shots]), np.sort(perm[shots:])
        Ye, Pe = Y[ev], P[ev]
        for m in methods:
            if m == "none":
                yt, pt = Ye, Pe
            elif m == "center":
                one = np.zeros(len(ev))
                yt, pt = center_per_study(Ye, one), center_per_study(Pe, one)
            else:
                calib = OffsetScaleCalibrator(scale=True).fit(P[cal], Y[cal])
                yt, pt = Ye, calib.transform(Pe)
            acc[m].append(_summary(gene_scores(yt, pt)))
    out = []
    for m, recs in acc.items():
        frame = pd.DataFrame(recs)
        out.append({"method": m, "shots": shots if m == "offset-scale" else 0,
                    "n_eval_samples": n - shots, "repeats": repeats,
                    "mae": frame["mae"].mean(), "mae_std": frame["mae"].std(ddof=0),
                    "mean_r": frame["mean_r"].mean(), "ccc": frame["ccc"].mean(),
                    "n_genes": int(frame["n_genes"].iloc[0])})
    return out


def calibration_table(cfg: StudyConfig, folds: Sequence[Fold], out: Path) -> pd.DataFrame:
    """:func:`calibrate_predictions` of every model on the external test sets."""
    c = cfg.evaluate["calibration"]
    fold = next(f for f in folds if f.split == "external")
    unit_dir = out / "units" / fold.name
    truth = np.load(unit_dir / TRUTH_FILE, allow_pickle=False)
    rows = []
    for model in cfg.models:
        path = unit_paths(unit_dir, model.label)["preds"]
        if not path.is_file():
            continue
        preds = np.load(path, allow_pickle=False)
        for name in fold.test_external:
            for rec in calibrate_predictions(truth[f"{name}.Y"], preds[name],
                                             methods=c["methods"], shots=c["shots"],
                                             repeats=c["repeats"], seed=cfg.seed):
                rows.append({"model": model.label, "test_set": name, **rec})
    return pd.DataFrame(rows)


def biology_table(cfg: StudyConfig, folds: Sequence[Fold], out: Path, where: str
                  ) -> pd.DataFrame:
    """Downstream biology (classifiers, DE genes) on true vs inferred profiles of the
    left-out data sets (:func:`geneinfer.evaluate.biology.evaluate_downstream`)."""
    b = cfg.evaluate["biology"]
    rows = []
    for d in b["datasets"]:
        fold = next(f for f in folds if f.split == "lodo" and d["dataset"] in f.test_pool)
        unit_dir = out / "units" / fold.name
        truth = np.load(unit_dir / TRUTH_FILE, allow_pickle=False)
        X, Y = truth[f"{d['dataset']}.X"], truth[f"{d['dataset']}.Y"]
        labels = truth[f"{d['dataset']}.label"]
        for label in b["models"]:
            P = np.load(unit_paths(unit_dir, label)["preds"], allow_pickle=False)[d["dataset"]]
            try:
                rec = evaluate_downstream(
                    X, Y, P, labels, classes=d["classes"],
                    min_class_size=d["min_class_size"] or b["min_class_size"],
                    n_splits=b["n_splits"], top_n=b["top_n"], seed=cfg.seed)
            except GeneinferError as exc:
                raise ConfigError(f"{where}: evaluate.biology dataset {d['dataset']!r}: {exc}; "
                                  "set classes / min_class_size") from None
            rows.append({"dataset": d["dataset"], "model": label, **rec})
    return downstream_table(rows)


# ---------------------------------------------------------------------- aggregation
@dataclass
class StudyFacts:
    """What the aggregation needs to know about a prepared study."""

    config: StudyConfig
    out: Path
    folds: list[Fold]
    panel_summary: dict[str, Any]
    gene_stats: pd.DataFrame
    training: str
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    quick: bool = False
    where: str = "study config"


def aggregate(facts: StudyFacts, docs: Mapping[tuple[str, str], dict], *, elapsed: float,
              skipped: int, write_json: Any) -> dict[str, Any]:
    """Write every result file of the study and return the main tables."""
    cfg, out = facts.config, facts.out
    metrics = pd.DataFrame([r for doc in docs.values() for r in doc["rows"]])
    per_gene = per_gene_long(out, facts.folds, cfg.models)
    metrics = add_better_than_baseline(metrics, per_gene, cfg.evaluate["baseline"])
    metrics.to_csv(out / "metrics.csv", index=False)
    per_gene_dir = out / "per_gene"
    per_gene_dir.mkdir(exist_ok=True)
    if len(per_gene):
        for (model, split, test_set), sub in per_gene.groupby(["model", "split", "test_set"]):
            with atomic_path(per_gene_dir / f"{model}__{split}__{test_set}.csv") as tmp:
                sub.drop(columns=["model", "split", "test_set"]).to_csv(tmp, index=False)
    histories = {f"{m}|{f}": doc["history"] for (m, f), doc in docs.items()
                 if doc.get("history")}
    write_json(out / "learning_curves.json", histories)
    calibration = (calibration_table(cfg, facts.folds, out)
                   if cfg.evaluate["calibration"] else None)
    biology = (biology_table(cfg, facts.folds, out, facts.where)
               if cfg.evaluate["biology"] else None)
    reliability = reliability_table(per_gene) if len(per_gene) else pd.DataFrame()
    reliability.to_csv(out / "reliability.csv", index=False)
    for table, name in ((calibration, "calibration.csv"), (biology, "biology.csv")):
        if table is not None:
            table.to_csv(out / name, index=False)
    vers = versions()
    write_json(out / "versions.json", {
        **vers, "config_sha256": hashlib.sha256(cfg.text.encode()).hexdigest(),
        "quick": facts.quick, "panel": facts.panel_summary, "inputs": facts.inputs,
        "elapsed_seconds": round(elapsed, 1), "units_reused": skipped,
    })
    with atomic_path(out / "config.toml") as tmp:
        tmp.write_text(cfg.text, encoding="utf-8")
    report = write_report(_report_data(facts, metrics, per_gene, histories, calibration,
                                       biology, vers, docs, elapsed, skipped),
                          out / "report.html")
    return {"metrics": metrics, "per_gene": per_gene, "calibration": calibration,
            "biology": biology, "reliability": reliability, "report": report,
            "elapsed": elapsed, "skipped": skipped}


def _report_data(facts: StudyFacts, metrics: pd.DataFrame, per_gene: pd.DataFrame,
                 histories: Mapping[str, Any], calibration: pd.DataFrame | None,
                 biology: pd.DataFrame | None, vers: Mapping[str, str],
                 docs: Mapping[tuple[str, str], dict], elapsed: float, skipped: int
                 ) -> ReportData:
    cfg, ps = facts.config, facts.panel_summary
    panel = (f"Panel {ps['panel']}: {ps['landmarks_used']} landmarks and "
             f"{ps.get('targets_used_quick', ps['targets_used'])} targets measured in every "
             "data set" + (" (quick mode: target subset)" if facts.quick else "") + ".")
    notes = [f"Units: {len(docs)} ({skipped} reused from cache); run time {elapsed:.1f} s.",
             *(f"Input {item['summary']}" for item in facts.inputs.values())]
    seen: dict[str, None] = {}
    for (label, _fold), doc in docs.items():
        for w in doc.get("warnings", []):
            seen.setdefault(f"Model warning ({label}): {w}", None)
    notes += list(seen)[:20]
    return ReportData(
        title=f"geneinfer study: {cfg.name}", metrics=metrics, per_gene=per_gene,
        gene_stats=facts.gene_stats, histories=histories, calibration=calibration,
        biology=biology, config_text=cfg.text, versions=vers, notes=notes,
        baseline=cfg.evaluate["baseline"], training=facts.training, panel=panel,
    )
