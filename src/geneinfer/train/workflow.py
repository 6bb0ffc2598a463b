"""Training workflow: expression files -> a saved-ready :class:`InferenceModel`.

Steps (each a small function below, usable on its own):

1. read every file and harmonise it (:func:`geneinfer.preprocess.harmonize`): log2 whatever
   the scale (files may differ, e.g. RMA log2 and MAS5 linear), canonical gene ids whatever
   the ids (probes, Ensembl ids, symbols);
2. stack the files, keeping the genes they share;
3. resolve the panel into the landmarks and targets present (:func:`geneinfer.genes.match_panel`);
4. optionally drop duplicate profiles;
5. hold out validation samples (a given file, else a seeded split of the training samples);
6. fit the preprocessor on training samples only, then the estimator (torch models get the
   validation set for early stopping);
7. score every target gene on the validation samples (:mod:`geneinfer.evaluate.metrics`).
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from tqdm.auto import tqdm

from geneinfer import __version__
from geneinfer.errors import ConfigError, GeneinferError, MissingGenesError
from geneinfer.evaluate.metrics import gene_scores, grouped_gene_scores
from geneinfer.expression import ExpressionData
from geneinfer.genes import Panel, get_panel
from geneinfer.genes.matching import PanelMatch, match_genes, match_panel
from geneinfer.io import NonFinite, finite_data, read
from geneinfer.models.bundle import InferenceModel
from geneinfer.models.registry import make_model, param_names
from geneinfer.preprocess import HarmonizeReport, ProfilePreprocessor, harmonize, remove_duplicates
from geneinfer.train.validation import (
    NO_GROUPS,
    TrainingGroups,
    hold_out_groups,
    training_groups,
    validation_rule,
)

logger = logging.getLogger(__name__)

#: Model trained when none is named: the winner of the leave-one-dataset-out study of
#: ``studies/shared.toml`` (per-gene stack of ridge, PCR, KNN-GE and SampleLASSO; lower
#: MAE than study-aware ridge on each of the five held-out sets, see the README).
DEFAULT_MODEL = "stack"
#: Share of training samples held out for validation when no validation file is given.
VALID_FRACTION = 0.2
#: up to this many training profiles, iterative models are refitted on all of them after
#: validation on held-out groups (``refit="auto"``)
REFIT_MAX_PROFILES = 20000
#: Fewest training samples we accept (below this, per-gene fits are meaningless).
MIN_TRAIN_SAMPLES = 8
SPLIT_SEED = 0

Source = str | os.PathLike[str] | ExpressionData


# ---------------------------------------------------------------------- loading
def _source_name(src: Source) -> str:
    if isinstance(src, ExpressionData):
        return str(src.source or "<ExpressionData>")
    return os.fspath(src)


def load_input(
    src: Source,
    *,
    scale: str | None = None,
    annotation: Any = None,
    data_dir: str | os.PathLike[str] | None = None,
    nonfinite: str = "error",
) -> tuple[ExpressionData, HarmonizeReport]:
    """One input (a file or data) harmonised: log2 with canonical gene ids, and the report.

    ``nonfinite`` is the readers' policy for infinite values (``"error"`` or ``"missing"``);
    data given in memory is held to it too (models cannot fit infinite values).
    """
    counter = NonFinite(nonfinite)
    if isinstance(src, ExpressionData):
        data = finite_data(src, counter)
    else:
        if not Path(src).exists():
            raise GeneinferError(f"{os.fspath(src)}: no such file")
        data = read(src, nonfinite=counter)
    harmonized, report = harmonize(data, scale=scale, annotation=annotation, data_dir=data_dir)
    report.nonfinite_as_missing = counter.count
    return harmonized, report


def load_training_data(
    sources: Source | Sequence[Source],
    *,
    scale: str | None = None,
    annotation: Any = None,
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
    nonfinite: str = "error",
) -> tuple[ExpressionData, list[str], list[HarmonizeReport]]:
    """Read and harmonise ``sources`` and stack them (genes shared by all kept).

    Returns the stacked data, the source names and one harmonisation report per source.
    Samples get a ``dataset`` column (the file name) when they have none.
    """
    items = _as_list(sources)
    if not items:
        raise ConfigError("no training data given")
    parts, names, reports = [], [], []
    for src in _progress(items, progress and len(items) > 1, "reading"):
        part, report = load_input(src, scale=scale, annotation=annotation, data_dir=data_dir,
                                  nonfinite=nonfinite)
        name = _source_name(src)
        if "dataset" not in part.samples:
            samples = part.samples.copy()
            samples["dataset"] = Path(name).name.split(".")[0]
            part = part.replace(samples=samples)
        parts.append(part)
        names.append(name)
        reports.append(report)
    _check_unique_samples(parts, names)
    if len(parts) == 1:
        return parts[0], names, reports
    data = ExpressionData.concat_samples(parts, join="inner")
    if data.n_genes == 0:
        raise GeneinferError(f"the training files share no genes: {', '.join(names)}")
    return data, names, reports


def _as_list(sources: Source | Sequence[Source]) -> list[Source]:
    if isinstance(sources, (str, os.PathLike, ExpressionData)):
        return [sources]
    return list(sources)


def _check_unique_samples(parts: list[ExpressionData], names: list[str]) -> None:
    seen: dict[str, str] = {}
    for part, name in zip(parts, names):
        for sid in part.sample_ids:
            if sid in seen:
                raise GeneinferError(
                    f"sample id {sid!r} appears in both {seen[sid]} and {name}; "
                    "is the same file given twice?"
                )
            seen[sid] = name


def _progress(items: list, enabled: bool, desc: str):
    if not enabled:
        return items
    return tqdm(items, desc=desc, unit="file")


# ---------------------------------------------------------------------- panel
def resolve_panel(panel: Any, data: ExpressionData, *,
                  data_dir: str | os.PathLike[str] | None = None) -> PanelMatch:
    """The panel (a name, a file or a :class:`~geneinfer.genes.Panel`) against ``data``."""
    pobj = panel if isinstance(panel, Panel) else get_panel(panel, data_dir=data_dir)
    return match_panel(pobj, data.gene_ids, source=data.source)


# ---------------------------------------------------------------------- splitting / cleaning
def validation_split(
    n_samples: int, *, fraction: float = VALID_FRACTION, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random (train, valid) index arrays; at least one sample in each."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"the validation fraction must be between 0 and 1, got {fraction}")
    if n_samples < MIN_TRAIN_SAMPLES + 1:
        raise GeneinferError(
            f"{n_samples} samples are too few to train and validate "
            f"(need at least {MIN_TRAIN_SAMPLES + 1}, or give a validation file)"
        )
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_samples)
    n_valid = min(max(1, round(fraction * n_samples)), n_samples - MIN_TRAIN_SAMPLES)
    return np.sort(perm[n_valid:]), np.sort(perm[:n_valid])


def drop_incomplete(
    data: ExpressionData, landmarks: list[str], targets: list[str]
) -> tuple[ExpressionData, list[str], dict[str, int]]:
    """Drop samples with missing landmark values and targets with missing training values.

    Models cannot fit NaN; we drop rather than fill so no value is invented.
    """
    lm = data.select_genes(landmarks).values
    ok_rows = ~np.isnan(lm).any(axis=1)
    tg = data.select_genes(targets).values[ok_rows]
    ok_cols = ~np.isnan(tg).any(axis=0)
    report = {
        "samples_with_missing_landmarks": int((~ok_rows).sum()),
        "targets_with_missing_values": int((~ok_cols).sum()),
    }
    kept_targets = [t for t, ok in zip(targets, ok_cols) if ok]
    if report["samples_with_missing_landmarks"]:
        logger.warning(
            "dropped %d samples with missing landmark values",
            report["samples_with_missing_landmarks"],
        )
    if report["targets_with_missing_values"]:
        logger.warning(
            "dropped %d target genes with missing training values",
            report["targets_with_missing_values"],
        )
    return data.select_samples(ok_rows), kept_targets, report


def deduplicate(
    data: ExpressionData, genes: list[str], *, threshold: float = 1.0,
    progress: bool | None = None
) -> tuple[ExpressionData, dict[str, Any]]:
    """Drop near-duplicate profiles (D-GEX rule, :func:`geneinfer.preprocess.remove_duplicates`:
    Euclidean distance below ``threshold`` on the model's log2 genes); return the kept samples
    and a JSON-able report."""
    keep, rep = remove_duplicates(data.select_genes(genes).values, threshold=threshold,
                                  progress=progress)
    dropped = data.sample_ids[~keep]
    dup_of = rep.duplicate_of[~keep]
    report = {
        "removed": int(rep.n_dropped),
        "threshold": float(rep.threshold),
        "summary": rep.summary(),
        "dropped": {str(s): str(data.sample_ids[j]) for s, j in zip(dropped[:100], dup_of[:100])},
    }
    if rep.n_dropped:
        logger.warning("%s", rep.summary())
    return data.select_samples(keep), report


# ---------------------------------------------------------------------- fitting
def fit_estimator(
    est: Any,
    X: np.ndarray,
    Y: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    X_valid: np.ndarray | None = None,
    Y_valid: np.ndarray | None = None,
) -> bool:
    """``est.fit(X, Y)``, passing ``groups`` and ``X_val``/``Y_val`` to models that take them.

    geneinfer models have ``fit(X, Y, *, groups=None, X_val=None, Y_val=None)``: the groups
    drive their study-aware selection, a validation set replaces it (networks stop early
    on it). Returns whether the validation set was passed.
    """
    takes = set(inspect.signature(est.fit).parameters)
    kwargs: dict[str, Any] = {}
    if groups is not None and "groups" in takes:
        kwargs["groups"] = groups
    use_valid = X_valid is not None and Y_valid is not None and {"X_val", "Y_val"} <= takes
    if use_valid:
        kwargs.update(X_val=X_valid, Y_val=Y_valid)
    est.fit(X, Y, **kwargs)
    return use_valid


def validation_metrics(Y_true: np.ndarray, Y_pred: np.ndarray, target_ids: list[str], *,
                       train_std: np.ndarray, groups: np.ndarray | None = None) -> pd.DataFrame:
    """Per-gene validation metrics on log2 scale (:func:`geneinfer.evaluate.gene_scores`;
    with ``groups``, :func:`geneinfer.evaluate.metrics.grouped_gene_scores`: r within each
    held-out study, averaged).

    Columns: ``valid_r`` (Pearson r), ``valid_mae`` (MAE in log2 units), ``valid_mae_std``
    (MAE divided by the gene's training standard deviation: the D-GEX "MAE on standardized
    expression").
    """
    scores = (gene_scores(Y_true, Y_pred) if groups is None
              else grouped_gene_scores(Y_true, Y_pred, groups))
    std = np.where(train_std > 0, train_std, np.nan)
    return pd.DataFrame(
        {"valid_r": scores["r"].to_numpy(), "valid_mae": scores["mae"].to_numpy(),
         "valid_mae_std": scores["mae"].to_numpy() / std},
        index=pd.Index(target_ids, name="gene_id"),
    )


def _validation_data(
    valid: Source,
    *,
    landmarks: list[str],
    targets: list[str],
    landmark_means: np.ndarray,
    scale: str | None,
    annotation: Any,
    data_dir: str | os.PathLike[str] | None,
    nonfinite: str = "error",
) -> tuple[np.ndarray, np.ndarray]:
    """Landmark and target matrices of a validation input (absent genes imputed / NaN)."""
    vdata, _ = load_input(valid, scale=scale, annotation=annotation, data_dir=data_dir,
                          nonfinite=nonfinite)
    lm = match_genes(landmarks, vdata.gene_ids)
    if not lm.present.any():
        raise MissingGenesError(lm.missing, what="landmark genes", source=vdata.source)
    if lm.n_missing:
        logger.warning("%d landmarks absent from validation data %s; imputed from training "
                       "means", lm.n_missing, vdata.source)
    XL = lm.take(vdata.values)
    XL = np.where(np.isnan(XL), landmark_means[None, :], XL).astype(np.float32)
    return XL, match_genes(targets, vdata.gene_ids).take(vdata.values)


def _parse_params(model: str, params: dict[str, Any] | None) -> dict[str, Any]:
    params = dict(params or {})
    accepted = param_names(model)
    unknown = [k for k in params if k not in accepted]
    if unknown:
        example = next(iter(sorted(accepted)), None)
        hint = f", e.g. --param {example}=..." if example else ""
        raise ConfigError(
            f"model {model!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"it accepts: {', '.join(sorted(accepted)) or 'none'}{hint}"
        )
    return params


def train_model(
    train_files_or_data: Source | Sequence[Source],
    *,
    model: str = "default",
    panel: Any = "l1000",
    valid: Source | None = None,
    groups: str | None = None,
    params: dict[str, Any] | None = None,
    scale: str | None = None,
    annotation: Any = None,
    data_dir: str | os.PathLike[str] | None = None,
    dedup: bool = True,
    dedup_threshold: float = 1.0,
    quantile: bool = True,
    standardize: bool = True,
    valid_fraction: float = VALID_FRACTION,
    refit: bool | str = "auto",
    device: str = "auto",
    checkpoint_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    nonfinite: str = "error",
) -> InferenceModel:
    """Train a landmark -> target model on expression files or data.

    Parameters
    ----------
    train_files_or_data
        Paths (any format :func:`geneinfer.io.read` knows) or :class:`ExpressionData`; one or
        several, possibly on different scales.
    model
        Registry name (``ridge``, ``dgex``, ...); ``"default"`` uses :data:`DEFAULT_MODEL`.
    panel
        ``"l1000"``, ``"dgex"``, a panel file, or a ``Panel``.
    valid
        Validation input. By default the per-gene validation scores come from studies the
        model did not see (:mod:`geneinfer.train.validation`): with two or more groups,
        out-of-group predictions (models cheap to refit) or held-out groups (iterative
        models); with one group, a seeded :data:`VALID_FRACTION` of its profiles. Torch
        models stop early on the validation profiles
        (``info["validation_used_for_early_stopping"]``), which makes their scores slightly
        optimistic.
    groups
        Sample-metadata column naming each training profile's study (e.g. a GEO series id);
        default: the input file. Models choose their hyper-parameters by cross-validation
        over these groups.
    params
        Hyper-parameters for the model.
    scale, annotation
        How to read the inputs when their files do not say (see
        :func:`geneinfer.preprocess.harmonize`): the values' scale, and the probe
        annotation of their platform.
    data_dir
        Data folder with public gene tables (:func:`geneinfer.public_data.resolve_data_dir`).
    dedup, dedup_threshold
        Drop profiles within Euclidean distance ``dedup_threshold`` (log2) of another one
        before splitting (D-GEX: 1).
    quantile, standardize
        Quantile-normalise the landmark and target blocks onto training references, and
        standardise each gene with its training mean and standard deviation.
    valid_fraction
        Share of the training samples held out for validation when ``valid`` is not given
        (whole groups where there are several).
    refit
        Iterative models validated on held-out groups: also fit a fresh copy on every profile
        and keep that one (``"auto"``: when there are at most :data:`REFIT_MAX_PROFILES`
        profiles, where the held-out studies are a real loss of data and a second fit is
        cheap). Models cheap to refit are always fitted on every profile.
    device
        ``auto``, ``cpu`` or ``cuda`` for torch models.
    checkpoint_dir
        Where torch models keep checkpoints so an interrupted run resumes.
    progress
        Show progress bars.
    nonfinite
        Infinite values in the inputs: ``"error"`` refuses them naming the cell,
        ``"missing"`` reads them as missing (counted in each input's report).

    Returns
    -------
    InferenceModel
        With per-gene validation metrics and training provenance in ``info``.
    """
    name = DEFAULT_MODEL if model in ("default", None) else model
    params = _parse_params(name, params)
    data, names, reports = load_training_data(train_files_or_data, scale=scale,
                                              annotation=annotation, data_dir=data_dir,
                                              progress=progress, nonfinite=nonfinite)
    match = resolve_panel(panel, data, data_dir=data_dir)
    _log_panel(match)
    data, targets, nan_report = drop_incomplete(data, match.landmarks, match.targets)
    dedup_report: dict[str, Any] = {"enabled": bool(dedup)}
    if dedup:
        data, rep = deduplicate(data, match.landmarks + targets, threshold=dedup_threshold,
                                progress=None)
        dedup_report.update(rep)
    study_groups = training_groups(data, groups)
    est = _build_estimator(
        name, params, device=device, checkpoint_dir=checkpoint_dir, progress=progress
    )
    rule = validation_rule(study_groups, has_file=valid is not None,
                           cheap_refit=bool(getattr(est, "cheap_refit", True)))
    if not study_groups.study_aware and valid is None and study_groups.column != NO_GROUPS:
        logger.warning(
            "the training profiles form one group (%s: %s): hyper-parameters are chosen within "
            "it and the validation scores describe the same study, overstating what a new study "
            "gets; train on several studies (files, or --groups COLUMN) to choose and validate "
            "over studies", study_groups.column, ", ".join(np.unique(study_groups.labels)[:3]))
    symbols = _symbols(data, match)
    maker = _BundleMaker(match.landmarks, targets,
                         [str(symbols.get(g, g)) for g in match.landmarks],
                         [str(symbols.get(g, g)) for g in targets],
                         data.gene_id_kind if data.gene_id_kind != "unknown" else "entrez",
                         quantile=quantile, standardize=standardize)
    X = data.select_genes(match.landmarks).values
    Y = data.select_genes(targets).values
    logger.info("fitting %s on %d samples x %d landmarks -> %d targets (validation: %s)",
                name, *X.shape, len(targets), rule)
    if rule == "file":
        fitted = _fit_with_file(est, maker, X, Y, study_groups, valid, scale=scale,
                                annotation=annotation, data_dir=data_dir, nonfinite=nonfinite)
    elif rule == "out-of-group":
        fitted = _fit_out_of_group(est, maker, X, Y, study_groups, progress=progress)
    elif rule == "group-holdout":
        refit = len(X) <= REFIT_MAX_PROFILES if refit == "auto" else bool(refit)
        fitted = _fit_group_holdout(est, maker, X, Y, study_groups, fraction=valid_fraction,
                                    refit=refit)
    else:
        fitted = _fit_holdout(est, maker, X, Y, fraction=valid_fraction)
    bundle = maker.bundle(est, fitted.pre, fitted.landmark_means)
    metrics = validation_metrics(fitted.Y_true, fitted.Y_pred, targets,
                                 train_std=np.nanstd(Y, axis=0), groups=fitted.groups)
    bundle.gene_metrics_ = metrics
    bundle.info_ = {
        "model": name,
        "params": est.get_params(deep=False),
        "training_files": names,
        "inputs": [r.to_json() for r in reports],
        "groups": study_groups.describe(),
        "validation": fitted.description,
        "validation_rule": rule,
        "validation_used_for_early_stopping": fitted.early_stop,
        "selection": getattr(est, "selection_", None),
        "panel": match.summary(),
        "n_train_samples": int(fitted.n_train),
        "n_valid_samples": len(fitted.Y_true),
        "missing_values": nan_report,
        "dedup": dedup_report,
        "quantile": bool(quantile),
        "standardize": bool(standardize),
        "valid_mae": _nanmean(metrics["valid_mae"]),
        "valid_mae_std": _nanmean(metrics["valid_mae_std"]),
        "valid_r_median": _nanmedian(metrics["valid_r"]),
        "geneinfer_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return bundle


# ---------------------------------------------------------------------- validation rules
@dataclass
class _BundleMaker:
    """Builds the InferenceModel of a fitted estimator: the final model, and the fold models
    whose predictions of held-out studies give the validation scores (the same code path)."""

    landmarks: list[str]
    targets: list[str]
    landmark_symbols: list[str]
    target_symbols: list[str]
    gene_id_kind: str
    quantile: bool
    standardize: bool

    def preprocessor(self, X: np.ndarray, Y: np.ndarray) -> ProfilePreprocessor:
        return ProfilePreprocessor(quantile=self.quantile, standardize=self.standardize).fit(X, Y)

    def bundle(self, est: Any, pre: ProfilePreprocessor,
               landmark_means: np.ndarray) -> InferenceModel:
        return InferenceModel.from_fitted(
            est, pre, self.landmarks, self.targets, landmark_symbols=self.landmark_symbols,
            target_symbols=self.target_symbols, landmark_means=landmark_means,
            gene_id_kind=self.gene_id_kind)

    def fit(self, est: Any, X: np.ndarray, Y: np.ndarray, *, groups: np.ndarray | None = None,
            X_valid: np.ndarray | None = None, Y_valid: np.ndarray | None = None
            ) -> tuple[ProfilePreprocessor, np.ndarray, bool]:
        """Fit the preprocessing and ``est`` on log2 ``X``/``Y``; returns the preprocessor,
        the landmark means and whether the validation set was used (early stopping)."""
        pre = self.preprocessor(X, Y)
        Zv = Tv = None
        if X_valid is not None and Y_valid is not None:
            # early stopping cannot use NaN: absent validation targets get the training mean
            # (they then carry no error signal); the per-gene scores keep them missing
            Y_fill = np.where(np.isnan(Y_valid), np.nanmean(Y, axis=0), Y_valid)
            Zv, Tv = pre.transform_landmarks(X_valid), pre.transform_targets(Y_fill)
        used = fit_estimator(est, pre.transform_landmarks(X), pre.transform_targets(Y),
                             groups=groups, X_valid=Zv, Y_valid=Tv)
        return pre, np.nanmean(X, axis=0).astype(np.float32), used


@dataclass
class _Fitted:
    """The fitted preprocessing and what the validation scores are computed from."""

    pre: ProfilePreprocessor
    landmark_means: np.ndarray
    Y_true: np.ndarray
    Y_pred: np.ndarray
    groups: np.ndarray | None
    n_train: int
    description: str
    early_stop: bool = False


def _fit_out_of_group(est: Any, maker: _BundleMaker, X: np.ndarray, Y: np.ndarray,
                      groups: TrainingGroups, *, progress: bool) -> _Fitted:
    """Each fold of whole groups predicted by a clone fitted on the others (with their
    groups, so its own choices are made over studies too); then ``est`` on every profile."""
    folds = groups.folds
    assert folds is not None
    P = np.full(Y.shape, np.nan, dtype=np.float32)
    scored = np.zeros(len(X), dtype=bool)
    for k in tqdm(range(len(folds.folds)), desc="out-of-group validation", unit="fold",
                  disable=not progress, leave=False):
        test = folds.held_out(k)
        fold_est = clone(est)
        pre, means, _ = maker.fit(fold_est, X[~test], Y[~test], groups=groups.labels[~test])
        P[test] = maker.bundle(fold_est, pre, means).predict_log2(X[test])
        scored |= test
    pre, means, _ = maker.fit(est, X, Y, groups=groups.labels)
    return _Fitted(pre, means, Y[scored], P[scored], groups.labels[scored], len(X),
                   f"out-of-group: {folds.n_scored} groups of {groups.column} each predicted "
                   f"by a model fitted without it ({folds.method}); the model is fitted on all")


def _fit_group_holdout(est: Any, maker: _BundleMaker, X: np.ndarray, Y: np.ndarray,
                       groups: TrainingGroups, *, fraction: float, refit: bool) -> _Fitted:
    """Whole groups held out: the model stops early and is scored there; with ``refit`` a
    fresh copy is then fitted on every profile (with the groups, so it makes its own choices
    over studies), which the training uses instead."""
    tr, va = hold_out_groups(groups, fraction=fraction, seed=SPLIT_SEED,
                             min_train=MIN_TRAIN_SAMPLES)
    scored_est = clone(est) if refit else est
    pre, means, used = maker.fit(scored_est, X[tr], Y[tr], groups=groups.labels[tr],
                                 X_valid=X[va], Y_valid=Y[va])
    held = np.unique(groups.labels[va])
    P = maker.bundle(scored_est, pre, means).predict_log2(X[va])
    desc = (f"held-out groups of {groups.column}: {', '.join(held[:5])}"
            f"{' ...' if len(held) > 5 else ''} ({len(va)} profiles)")
    if not refit:
        return _Fitted(pre, means, Y[va], P, groups.labels[va], len(tr), desc, used)
    pre, means, _ = maker.fit(est, X, Y, groups=groups.labels)
    return _Fitted(pre, means, Y[va], P, groups.labels[va], len(X),
                   f"{desc}; then refitted on all", used)


def _fit_holdout(est: Any, maker: _BundleMaker, X: np.ndarray, Y: np.ndarray, *,
                 fraction: float) -> _Fitted:
    """One group: a seeded random share of the profiles scores the model; models cheap to
    refit are then fitted on every profile, iterative ones stop early on the share."""
    tr, va = validation_split(len(X), fraction=fraction)
    desc = f"held-out {len(va)} training samples (seed {SPLIT_SEED})"
    if getattr(est, "cheap_refit", True):
        fold_est = clone(est)
        pre, means, _ = maker.fit(fold_est, X[tr], Y[tr])
        P = maker.bundle(fold_est, pre, means).predict_log2(X[va])
        pre, means, _ = maker.fit(est, X, Y)
        return _Fitted(pre, means, Y[va], P, None, len(X), f"{desc}; then fitted on all")
    pre, means, used = maker.fit(est, X[tr], Y[tr], X_valid=X[va], Y_valid=Y[va])
    P = maker.bundle(est, pre, means).predict_log2(X[va])
    return _Fitted(pre, means, Y[va], P, None, len(tr), desc, used)


def _fit_with_file(est: Any, maker: _BundleMaker, X: np.ndarray, Y: np.ndarray,
                   groups: TrainingGroups, valid: Source, *, scale: str | None,
                   annotation: Any, data_dir: str | os.PathLike[str] | None,
                   nonfinite: str = "error") -> _Fitted:
    """A validation file: iterative models stop early on it; every model is scored on it."""
    if len(X) < MIN_TRAIN_SAMPLES:
        raise GeneinferError(f"{len(X)} training samples are too few (need {MIN_TRAIN_SAMPLES})")
    means = np.nanmean(X, axis=0).astype(np.float32)
    X_va, Y_va = _validation_data(valid, landmarks=maker.landmarks, targets=maker.targets,
                                  landmark_means=means, scale=scale, annotation=annotation,
                                  data_dir=data_dir, nonfinite=nonfinite)
    iterative = not getattr(est, "cheap_refit", True)
    labels = groups.labels if groups.study_aware else None
    pre, means, used = maker.fit(est, X, Y, groups=labels, X_valid=X_va if iterative else None,
                                 Y_valid=Y_va if iterative else None)
    P = maker.bundle(est, pre, means).predict_log2(X_va)
    return _Fitted(pre, means, Y_va, P, None, len(X), _source_name(valid), used)


def _build_estimator(
    name: str,
    params: dict[str, Any],
    *,
    device: str,
    checkpoint_dir: str | os.PathLike[str] | None,
    progress: bool,
) -> Any:
    est = make_model(name, **params)
    have = est.get_params(deep=False)
    extra: dict[str, Any] = {"device": device, "progress": bool(progress),
                             "checkpoint_dir": os.fspath(checkpoint_dir) if checkpoint_dir
                             else None}
    # settings of the run, for models that have them and where the user set none
    est.set_params(**{k: v for k, v in extra.items()
                      if k in have and k not in params and v is not None})
    return est


def _symbols(data: ExpressionData, match: PanelMatch) -> dict[str, str]:
    """Gene symbols from the data's annotation, else from the panel, else the id."""
    out = dict(match.symbols)
    if "symbol" in data.genes:
        known = data.genes["symbol"].dropna()
        out.update({str(k): str(v) for k, v in known.items() if str(v)})
    return out


def _nanmean(s: pd.Series) -> float | None:
    v = s.to_numpy(dtype=float)
    return float(np.nanmean(v)) if np.isfinite(v).any() else None


def _nanmedian(s: pd.Series) -> float | None:
    v = s.to_numpy(dtype=float)
    return float(np.nanmedian(v)) if np.isfinite(v).any() else None


def _log_panel(match: PanelMatch) -> None:
    if match.missing_landmarks:
        logger.warning(
            "%d of %d landmarks of panel %s are not in the training data",
            len(match.missing_landmarks),
            len(match.landmarks) + len(match.missing_landmarks),
            match.name,
        )
