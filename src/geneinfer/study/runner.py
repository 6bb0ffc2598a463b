"""Run a study: every (model x fold) unit trains with ``geneinfer train``'s code and predicts
with ``geneinfer predict``'s code, so what the study measures is what those commands ship.

For each fold, :func:`geneinfer.train.train_model` gets the fold's training data sets (one
:class:`ExpressionData` per data set, harmonised as ``train`` reads files) and the study's
panel (the landmarks and targets that every data set measures, written to
``OUT/panel.tsv``); training holds out its own validation samples, fits the preprocessing on
its training samples only and stores it in the model. Test sets go through
:func:`geneinfer.predict.predict_data`. A fold is therefore reproduced on the command line by
``geneinfer train --panel OUT/panel.tsv --train <its training files>`` and
``geneinfer predict --input <its test file>``.

Scores are per gene (:func:`geneinfer.evaluate.gene_scores`) in the model's target space:
measured targets put through the model's own target preprocessing (quantile reference and
standardization fitted on the fold's training samples) against the model's standardized
predictions, so the MAE is D-GEX's "MAE on standardized expression". A second view z-scores
truth and prediction within each test study (removing study offsets).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from geneinfer.errors import ConfigError, GeneinferError
from geneinfer.evaluate.metrics import gene_scores, within_study_zscore
from geneinfer.expression import ExpressionData
from geneinfer.genes import Panel, get_panel
from geneinfer.models.bundle import InferenceModel
from geneinfer.models.registry import param_names
from geneinfer.predict import predict_data
from geneinfer.study.config import ModelSpec, StudyConfig, load_config
from geneinfer.study.folds import Fold, build_folds
from geneinfer.study.results import StudyFacts, aggregate, load_unit, save_unit
from geneinfer.study.sources import complete_genes, load_source
from geneinfer.train.workflow import train_model
from geneinfer.utils.files import atomic_path

logger = logging.getLogger(__name__)


def digest(obj: Any) -> str:
    """A short stable hash of JSON-able settings (unit keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_json(path: Path, obj: Any) -> None:
    """JSON written atomically (NaN/inf as null)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_clean(obj), indent=1, default=_json_default),
                       encoding="utf-8")


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


def learning_curve(history: Any) -> dict[str, list[float | None]]:
    """Loss series per epoch from a model's ``history_``, whatever its layout.

    Accepts ``{name: [values]}``, a list of per-epoch dicts (``{"epoch", "train_loss",
    "val_loss"}``), a list of per-network dicts each holding such a ``"history"`` list (target
    chunks; series get a ``#k`` suffix), or a plain list of numbers.
    """
    if history is None:
        return {}
    if isinstance(history, Mapping):
        if "history" in history:
            return learning_curve(history["history"])
        return {str(k): _floats(v) for k, v in history.items() if _is_series(v)}
    items = list(history)
    if not items:
        return {}
    if all(isinstance(h, Mapping) and "history" in h for h in items):
        out: dict[str, list[float | None]] = {}
        for k, h in enumerate(items):
            for name, vals in learning_curve(h["history"]).items():
                out[name if len(items) == 1 else f"{name}#{k}"] = vals
        return out
    if all(isinstance(h, Mapping) for h in items):
        keys = [k for k in items[0] if str(k).endswith("loss")]
        return {str(k): _floats([h.get(k) for h in items]) for k in keys}
    return {"loss": _floats(items)} if _is_series(items) else {}


def _is_series(v: Any) -> bool:
    return isinstance(v, (list, tuple, np.ndarray)) and all(
        x is None or isinstance(x, (int, float, np.number)) for x in v)


def _floats(v: Any) -> list[float | None]:
    return [None if x is None or not math.isfinite(float(x)) else float(x) for x in v]


def summary_row(scores: pd.DataFrame) -> dict[str, float]:
    """Mean MAE, mean/median r and mean CCC over the genes with a score."""
    sub = scores[np.isfinite(scores["mae"].to_numpy())]
    return {
        "mae": float(sub["mae"].mean()),
        "mean_r": float(np.nanmean(sub["r"])) if len(sub) else float("nan"),
        "median_r": float(np.nanmedian(sub["r"])) if len(sub) else float("nan"),
        "ccc": float(np.nanmean(sub["ccc"])) if len(sub) else float("nan"),
        "n_genes": len(sub),
    }


class Study:
    """Run a study described by a :class:`~geneinfer.study.config.StudyConfig`.

    Parameters
    ----------
    config
        Validated configuration.
    out_dir
        Results folder (created); unit results are cached under ``out_dir/units``.
    quick
        Use each model's ``quick_params`` and a seeded subset of ``study.quick_targets``
        target genes (for smoke tests and CI).
    resume
        Reuse finished units whose settings match; ``False`` recomputes everything.
    progress
        Show a progress bar over units.
    """

    def __init__(self, config: StudyConfig, *, out_dir: str | os.PathLike[str],
                 quick: bool = False, resume: bool = True, progress: bool = True) -> None:
        self.config = config
        self.out = Path(out_dir)
        self.quick = quick
        self.resume = resume
        self.progress = progress
        self.prepared = False

    @property
    def where(self) -> str:
        return str(self.config.path or "study config")

    # ------------------------------------------------------------------ preparation
    def prepare(self) -> Study:
        """Load and harmonise every data set, choose the genes, build the folds: every
        problem the data can show is found here, before any model is trained."""
        cfg = self.config
        self.reports = {}
        loaded: dict[str, ExpressionData] = {}
        for spec in cfg.sources:
            loaded[spec.name], self.reports[spec.name] = load_source(
                spec, data_dir=cfg.data_dir, where=self.where)
        self.panel = self._choose_genes(loaded)
        genes = [*self.panel.landmarks, *(self.panel.targets or [])]
        self.pool = ExpressionData.concat_samples(
            [loaded[s.name].select_genes(genes) for s in cfg.train_sources], join="exact")
        self.external = {s.name: loaded[s.name].select_genes(genes, missing="nan")
                         for s in cfg.test_sources}
        self.folds = build_folds(self.pool.samples["dataset"].to_numpy(), cfg.splits,
                                 seed=cfg.seed, where=self.where)
        self.prepared = True
        return self

    def _choose_genes(self, loaded: Mapping[str, ExpressionData]) -> Panel:
        """Landmarks measured in every data set, targets measured in every training set."""
        cfg = self.config
        name = cfg.panel["name"]
        candidate = cfg.base_dir / name
        if name.lower() not in ("l1000", "dgex") and candidate.is_file():
            name = str(candidate)
        try:
            panel = get_panel(name, data_dir=cfg.data_dir)
        except GeneinferError as exc:
            raise ConfigError(f"{self.where}: panel.name = {cfg.panel['name']!r}: {exc}"
                              ) from None
        lm = list(panel.landmarks)
        first = loaded[cfg.train_sources[0].name]
        tg = list(panel.targets) if panel.targets is not None else [
            g for g in first.gene_ids if g not in set(lm)]
        lm_ok, tg_ok = set(lm), set(tg)
        for src_name, data in loaded.items():
            have = complete_genes(data, lm)
            self._check_coverage(src_name, "landmarks", len(have), len(lm), "min_landmarks")
            lm_ok &= have
        for s in cfg.train_sources:
            have = complete_genes(loaded[s.name], tg)
            self._check_coverage(s.name, "targets", len(have), len(tg), "min_targets")
            tg_ok &= have
        for s in cfg.test_sources:
            have = complete_genes(loaded[s.name], tg)
            self._check_coverage(s.name, "targets", len(have & tg_ok), len(tg), "min_targets")
        landmarks = [g for g in lm if g in lm_ok]
        targets = [g for g in tg if g in tg_ok]
        self._check_coverage("all data sets together", "landmarks", len(landmarks), len(lm),
                             "min_landmarks")
        self._check_coverage("all training data sets together", "targets", len(targets),
                             len(tg), "min_targets")
        self.panel_summary = {
            "panel": cfg.panel["name"], "landmarks_in_panel": len(lm),
            "landmarks_used": len(landmarks), "targets_in_panel": len(tg),
            "targets_used": len(targets),
        }
        if self.quick and len(targets) > cfg.study["quick_targets"]:
            rng = np.random.default_rng(cfg.seed)
            pick = np.sort(rng.choice(len(targets), cfg.study["quick_targets"], replace=False))
            targets = [targets[i] for i in pick]
            self.panel_summary["targets_used_quick"] = len(targets)
        return Panel(f"{cfg.panel['name']} (measured in every data set)", landmarks, targets,
                     symbols=dict(panel.symbols))

    def _check_coverage(self, name: str, what: str, have: int, total: int, key: str) -> None:
        need = int(self.config.panel[key])
        if have < need:
            raise ConfigError(
                f"{self.where}: panel {self.config.panel['name']!r}: only {have} of {total} "
                f"{what} are measured in {name} (panel.{key} = {need}); use a panel that "
                f"matches the data or lower panel.{key}"
            )

    def write_panel(self, path: Path) -> Path:
        """The study's genes as a panel file (``gene``/``role``) that ``geneinfer train
        --panel`` reads, so any fold can be reproduced on the command line."""
        rows = [*(f"{g}\tlandmark" for g in self.panel.landmarks),
                *(f"{g}\ttarget" for g in self.panel.targets or [])]
        with atomic_path(path) as tmp:
            tmp.write_text("gene\trole\n" + "\n".join(rows) + "\n", encoding="utf-8")
        return path

    # ------------------------------------------------------------------ units
    def unit_key(self, model: ModelSpec, fold: Fold) -> str:
        cfg = self.config
        return digest({
            "model": model.name, "params": model.settings(self.quick), "fold": fold.name,
            "groups": model.groups,
            "quick": self.quick, "preprocess": cfg.preprocess, "panel": cfg.panel,
            "splits": cfg.splits, "seed": cfg.seed,
            "sources": [asdict(s) for s in cfg.sources],
            "genes": digest([self.panel.landmarks, self.panel.targets]),
        })

    def unit_dir(self, fold: Fold) -> Path:
        return self.out / "units" / fold.name

    def fold_valid_fraction(self, fold: Fold) -> float:
        splits = self.config.splits
        if fold.split == "random":
            fr = splits["random"]
            return float(fr["valid"]) / (float(fr["train"]) + float(fr["valid"]))
        return float(splits["valid_fraction"])

    def training_parts(self, fold: Fold) -> list[ExpressionData]:
        """The fold's training samples, one :class:`ExpressionData` per data set (in config
        order, as ``geneinfer train --train`` gets one file per data set)."""
        data = self.pool.select_samples(np.sort(fold.train))
        datasets = data.samples["dataset"].to_numpy()
        return [data.select_samples(datasets == s.name).replace(source=s.name)
                for s in self.config.train_sources if (datasets == s.name).any()]

    def test_sets(self, fold: Fold) -> dict[str, ExpressionData]:
        out = {name: self.pool.select_samples(idx) for name, idx in fold.test_pool.items()}
        out.update({name: self.external[name] for name in fold.test_external})
        return out

    def train(self, model: ModelSpec, fold: Fold) -> InferenceModel:
        """The unit's model, trained by :func:`geneinfer.train.train_model`."""
        cfg = self.config
        params = dict(model.settings(self.quick))
        params.setdefault("random_state", cfg.seed)
        params = {k: v for k, v in params.items()
                  if k != "random_state" or "random_state" in param_names(model.name)}
        pre = cfg.preprocess
        return train_model(
            self.training_parts(fold), model=model.name, panel=self.panel, params=params,
            data_dir=cfg.data_dir, dedup=float(pre["dedup_threshold"]) > 0,
            dedup_threshold=float(pre["dedup_threshold"]) or 1.0, quantile=pre["quantile"],
            standardize=pre["standardize"], valid_fraction=self.fold_valid_fraction(fold),
            groups=model.groups, progress=False,
        )

    def run_unit(self, model: ModelSpec, fold: Fold) -> dict[str, Any]:
        """Train one model on one fold and score it on the fold's test sets."""
        t0 = time.perf_counter()
        # model warnings (e.g. "SVR fitted on 100 of 9000 genes") go to the unit record
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            bundle = self.train(model, fold)
        fit_s = time.perf_counter() - t0
        notes = list(dict.fromkeys(str(w.message) for w in caught))
        for note in notes:
            logger.info("%s / %s: %s", model.label, fold.name, note)
        rows, per_gene, arrays = [], {}, {}
        for name, test in self.test_sets(fold).items():
            scored = score_test_set(bundle, test)
            pg = scored["scores"]
            pg.insert(0, "gene", bundle.target_ids)
            # the reliability the model promises (validation r on studies it did not see),
            # next to what the left-out study gets
            stored = bundle.gene_metrics
            pg["stored_r"] = (stored["valid_r"].reindex(bundle.target_ids).to_numpy()
                              if stored is not None and "valid_r" in stored else np.nan)
            per_gene[name] = pg
            base = {"model": model.label, "model_name": model.name, "split": fold.split,
                    "fold": fold.name, "test_set": name, "n_samples": test.n_samples,
                    "n_train": bundle.info["n_train_samples"], "fit_seconds": round(fit_s, 3),
                    "valid_mae": bundle.info.get("valid_mae_std")}
            rows.append({**base, "view": "training", **summary_row(pg)})
            if self.config.evaluate["within_study"]:
                rows.append({**base, "view": "within-study", **summary_row(scored["within"])})
            arrays[name] = scored
        history = learning_curve(getattr(bundle.estimator, "history_", None))
        return {"rows": rows, "per_gene": per_gene, "arrays": arrays, "history": history,
                "warnings": notes}

    # ------------------------------------------------------------------ running
    def needs_arrays(self, model: ModelSpec, fold: Fold) -> bool:
        """Whether later steps (calibration, biology, saved predictions) need the unit's
        predictions on disk."""
        ev = self.config.evaluate
        if ev["save_predictions"]:
            return True
        if fold.split == "external" and ev["calibration"] is not None:
            return True
        bio = ev["biology"]
        if fold.split == "lodo" and bio is not None and model.label in bio["models"]:
            return any(d["dataset"] in fold.test_pool for d in bio["datasets"])
        return False

    def run(self) -> dict[str, Any]:
        """Train and evaluate every unit (resuming), aggregate and write the results."""
        if not self.prepared:
            self.prepare()
        self.out.mkdir(parents=True, exist_ok=True)
        self.write_panel(self.out / "panel.tsv")
        t0 = time.perf_counter()
        docs: dict[tuple[str, str], dict] = {}
        models = self.config.models
        bar = tqdm(total=len(self.folds) * len(models), desc=f"study {self.config.name}",
                   unit="unit", disable=not self.progress)
        skipped = 0
        for fold in self.folds:
            for model in models:
                key = self.unit_key(model, fold)
                needs = self.needs_arrays(model, fold)
                doc = load_unit(self.unit_dir(fold), model.label, key, needs_arrays=needs) \
                    if self.resume else None
                if doc is None:
                    bar.set_postfix_str(f"{model.label} / {fold.name}")
                    res = self.run_unit(model, fold)
                    save_unit(self.unit_dir(fold), model.label, key, res, keep_arrays=needs,
                              write=write_json)
                    doc = load_unit(self.unit_dir(fold), model.label, key, needs_arrays=needs)
                else:
                    skipped += 1
                docs[(model.label, fold.name)] = doc
                bar.update()
        bar.close()
        return aggregate(self.facts(), docs, elapsed=time.perf_counter() - t0,
                         skipped=skipped, write_json=write_json)

    def facts(self) -> StudyFacts:
        """What the result tables and the report need to know about this study."""
        targets = list(self.panel.targets or [])
        values = self.pool.select_genes(targets).values
        gene_stats = pd.DataFrame({"mean": np.nanmean(values, axis=0),
                                   "var": np.nanvar(values, axis=0)}, index=pd.Index(targets))
        names = ", ".join(s.name for s in self.config.train_sources)
        training = (f"Training pool: {self.pool.n_samples} samples from {names}; each fold "
                    "trains with geneinfer train (near-duplicates removed, validation held "
                    "out) and predicts with geneinfer predict.")
        return StudyFacts(self.config, self.out, self.folds, self.panel_summary, gene_stats,
                          training, {k: r.to_json() for k, r in self.reports.items()},
                          self.quick, self.where)


def run_study(config: str | os.PathLike[str] | StudyConfig, *,
              out_dir: str | os.PathLike[str], quick: bool = False, resume: bool = True,
              progress: bool = True, data_dir: str | os.PathLike[str] | None = None
              ) -> dict[str, Any]:
    """Load/validate ``config``, prepare the data (validated too) and run the study."""
    cfg = config if isinstance(config, StudyConfig) else load_config(config, data_dir=data_dir)
    return Study(cfg, out_dir=out_dir, quick=quick, resume=resume, progress=progress).run()


def score_test_set(model: InferenceModel, test: ExpressionData) -> dict[str, Any]:
    """Predict ``test`` as ``geneinfer predict`` does and score every target gene.

    Returns the per-gene ``scores`` (model target space), the ``within``-study scores, the
    log2 predictions and the model-space arrays later steps reuse (``X`` landmarks, ``Y``
    truth, ``P`` predictions).
    """
    pred = predict_data(model, test)
    pre = model.preprocessor
    truth = test.select_genes(model.target_ids, missing="nan").values
    Y = pre.transform_targets(truth)
    P = pre.standardize_targets(pred.values)
    groups = test.samples["dataset"].to_numpy() if "dataset" in test.samples \
        else np.zeros(test.n_samples)
    X = pre.transform_landmarks(test.select_genes(model.landmark_ids).values)
    labels = (test.samples["label"] if "label" in test.samples
              else pd.Series("na", index=test.sample_ids)).astype(str).to_numpy().astype("U")
    return {"scores": gene_scores(Y, P),
            "within": gene_scores(within_study_zscore(Y, groups), within_study_zscore(P, groups)),
            "log2": pred.values, "X": X, "Y": Y, "P": P, "labels": labels}
