"""A whole benchmark study from one TOML file: data -> folds -> models -> metrics -> report.

Steps
-----
1. :func:`load_config` checks the file's structure (unknown keys, types, model names and
   parameters, split fractions, missing files) and :meth:`Study.prepare` loads the data and
   checks what needs it (declared scales against the values, panel coverage, empty split
   sets) -- all before any model is trained.
2. Every (model x fold) *unit* is trained and evaluated; its result is written to
   ``OUT/units/`` under a key of its settings, so an interrupted study resumes where it
   stopped and a changed model reruns only that model.
3. Results are aggregated into ``metrics.csv``, per-gene tables, calibration and
   downstream-biology tables, ``versions.json`` and a self-contained ``report.html``.

Leakage rules: preprocessing (quantile reference, per-gene mean/std) is fitted on the training
samples of each fold only; validation samples are held-out *training* samples; test studies
are never used to choose anything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform as _platform
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from geneinfer.errors import ConfigError, GeneinferError
from geneinfer.expression import ExpressionData
from geneinfer.utils.files import atomic_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

logger = logging.getLogger(__name__)

__all__ = [
    "Fold",
    "ModelSpec",
    "SourceSpec",
    "Study",
    "StudyConfig",
    "load_config",
    "parse_config",
    "run_study",
]

SCALES_DECLARABLE = ("log2", "linear", "counts")
ROLES = ("train", "test")
SPLIT_KINDS = ("random", "lodo", "external")

# Allowed keys of every table; values are (type(s), default). A default of ... = required.
_TOP_KEYS = ("study", "data", "panel", "preprocess", "models", "splits", "evaluate")
_SCHEMA: dict[str, dict[str, tuple[Any, Any]]] = {
    "study": {
        "name": (str, "study"),
        "seed": (int, 0),
        "quick_targets": (int, 1000),
    },
    "data": {"shared_dir": (str, None), "sources": (list, ...)},
    "data.sources": {
        "name": (str, ...),
        "shared": (str, None),
        "file": (str, None),
        "geo": (str, None),
        "accession": (str, None),
        "scale": (str, ...),
        "platform": (str, None),
        "role": (str, "train"),
        "label_column": (str, "label"),
        "format": (str, None),
        "max_samples": (int, None),
    },
    "panel": {
        "name": (str, "dgex"),
        "min_landmarks": (int, 100),
        "min_targets": (int, 100),
    },
    "preprocess": {
        "log2": (bool, True),
        "dedup_threshold": ((int, float), 1.0),
        "quantile": (bool, True),
        "standardize": (bool, True),
        "rnaseq_transform": (str, "log2cpm"),
    },
    "models": {
        "name": (str, ...),
        "label": (str, None),
        "params": (dict, {}),
        "quick_params": (dict, {}),
    },
    "splits": {
        "random": (dict, None),
        "leave_one_dataset_out": (bool, False),
        "external": (list, []),
        "valid_fraction": ((int, float), 0.1),
    },
    "splits.random": {"train": ((int, float), ...), "valid": ((int, float), ...),
                      "test": ((int, float), ...)},
    "evaluate": {
        "baseline": (str, "ols"),
        "within_study": (bool, True),
        "calibration": (dict, None),
        "biology": (dict, None),
    },
    "evaluate.calibration": {
        "shots": (int, 5),
        "repeats": (int, 5),
        "methods": (list, ["none", "center", "offset-scale"]),
    },
    "evaluate.biology": {
        "datasets": (list, ...),
        "models": (list, None),
        "top_n": (int, 100),
        "n_splits": (int, 5),
        "min_class_size": (int, 5),
    },
    "evaluate.biology.datasets": {
        "dataset": (str, ...),
        "classes": (list, None),
        "min_class_size": (int, None),
    },
}
CALIBRATION_METHODS = ("none", "center", "offset-scale")
RNASEQ_TRANSFORMS = ("log2cpm",)


# ====================================================================== configuration
@dataclass(frozen=True)
class SourceSpec:
    """One data set of the study (``[[data.sources]]``)."""

    name: str
    scale: str
    shared: str | None = None
    file: str | None = None
    geo: str | None = None
    accession: str | None = None
    platform: str | None = None
    role: str = "train"
    label_column: str = "label"
    format: str | None = None
    max_samples: int | None = None


@dataclass(frozen=True)
class ModelSpec:
    """One model of the study (``[[models]]``)."""

    name: str
    label: str
    params: dict[str, Any] = field(default_factory=dict)
    quick_params: dict[str, Any] = field(default_factory=dict)

    def settings(self, quick: bool) -> dict[str, Any]:
        return {**self.params, **(self.quick_params if quick else {})}


@dataclass
class StudyConfig:
    """A validated study configuration (see :func:`load_config`)."""

    study: dict[str, Any]
    sources: list[SourceSpec]
    panel: dict[str, Any]
    preprocess: dict[str, Any]
    models: list[ModelSpec]
    splits: dict[str, Any]
    evaluate: dict[str, Any]
    shared_dir: Path | None
    base_dir: Path
    text: str = ""
    path: Path | None = None

    @property
    def name(self) -> str:
        return str(self.study["name"])

    @property
    def seed(self) -> int:
        return int(self.study["seed"])

    def source(self, name: str) -> SourceSpec:
        return next(s for s in self.sources if s.name == name)

    @property
    def train_sources(self) -> list[SourceSpec]:
        return [s for s in self.sources if s.role == "train"]

    @property
    def test_sources(self) -> list[SourceSpec]:
        return [s for s in self.sources if s.role == "test"]


def _type_name(t: Any) -> str:
    if isinstance(t, tuple):
        return " or ".join(_type_name(x) for x in t)
    return {str: "a string", int: "an integer", float: "a number", bool: "true/false",
            list: "a list", dict: "a table"}.get(t, t.__name__)


def _check_table(table: Any, section: str, where: str) -> dict[str, Any]:
    """Check keys and value types of one table; fill defaults; return a new dict."""
    schema = _SCHEMA[section]
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [{section}] must be a table, got {type(table).__name__}")
    unknown = [k for k in table if k not in schema]
    if unknown:
        raise ConfigError(
            f"{where}: unknown setting {section}.{unknown[0]}; valid keys of [{section}]: "
            f"{', '.join(schema)}"
        )
    out: dict[str, Any] = {}
    for key, (types, default) in schema.items():
        if key not in table:
            if default is ...:
                raise ConfigError(f"{where}: [{section}] needs the setting {key!r}")
            out[key] = default.copy() if isinstance(default, (dict, list)) else default
            continue
        value = table[key]
        bad_bool = isinstance(value, bool) and types is not bool and bool not in (
            types if isinstance(types, tuple) else (types,)
        )
        if not isinstance(value, types) or bad_bool:
            raise ConfigError(
                f"{where}: {section}.{key} must be {_type_name(types)}, got {value!r}"
            )
        out[key] = value
    return out


def _choice(value: str, choices: Sequence[str], setting: str, where: str) -> str:
    if value not in choices:
        raise ConfigError(
            f"{where}: {setting} = {value!r} is not valid; choose one of: {', '.join(choices)}"
        )
    return value


def _resolve_shared_dir(raw: str | None, base_dir: Path) -> Path | None:
    env = os.environ.get("GENEINFER_SHARED") or os.environ.get("GENEINFER_DATA_DIR")
    if env:
        return Path(env).expanduser()
    if raw:
        return (base_dir / Path(raw).expanduser()).resolve()
    guess = Path.cwd().parent / "shared" / "data"
    return guess if guess.is_dir() else None


def _parse_sources(raw: list[Any], where: str, base_dir: Path, shared_dir: Path | None
                   ) -> list[SourceSpec]:
    if not raw:
        raise ConfigError(f"{where}: [data] has no sources; add [[data.sources]] tables")
    specs: list[SourceSpec] = []
    for i, table in enumerate(raw):
        t = _check_table(table, "data.sources", f"{where}, data.sources[{i}]")
        label = f"{where}, data source {t['name']!r}"
        given = [k for k in ("shared", "file", "geo") if t[k]]
        if len(given) != 1:
            raise ConfigError(
                f"{label}: give exactly one of shared / file / geo (got "
                f"{', '.join(given) or 'none'})"
            )
        _choice(t["scale"], SCALES_DECLARABLE, f"data source {t['name']!r} scale", where)
        _choice(t["role"], ROLES, f"data source {t['name']!r} role", where)
        if t["file"]:
            path = (base_dir / Path(t["file"]).expanduser()).resolve()
            if not path.is_file():
                raise ConfigError(
                    f"{label}: file {t['file']!r} not found (looked at {path}); fix the path "
                    "(relative paths are relative to the config file)"
                )
            t["file"] = str(path)
        if t["shared"] and "/" in t["shared"]:
            if shared_dir is None:
                raise ConfigError(
                    f"{label}: shared = {t['shared']!r} needs the shared data folder; set "
                    "data.shared_dir or GENEINFER_SHARED"
                )
            path = shared_dir / t["shared"]
            if not path.is_file():
                raise ConfigError(
                    f"{label}: shared file {t['shared']!r} not found in {shared_dir}; fix "
                    "data.shared_dir or the file name"
                )
        if t["shared"] and "/" not in t["shared"]:
            from geneinfer.public_data import get_source

            try:
                get_source(t["shared"]).resolve(t["accession"])
            except ConfigError as exc:
                raise ConfigError(f"{label}: shared = {t['shared']!r}: {exc}") from None
        if t["geo"]:
            from geneinfer.public_data import get_source

            try:
                get_source("geo_soft").resolve(t["geo"])
            except ConfigError as exc:
                raise ConfigError(f"{label}: geo = {t['geo']!r}: {exc}") from None
        if t["max_samples"] is not None and t["max_samples"] < 2:
            raise ConfigError(f"{label}: max_samples must be at least 2")
        specs.append(SourceSpec(**t))
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{where}: data source name {dup[0]!r} is used twice; names must differ")
    return specs


def _parse_models(raw: Any, where: str) -> list[ModelSpec]:
    from geneinfer.models.registry import MODEL_NAMES, get_model_class, make_model

    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: add at least one [[models]] table with a registry name")
    specs: list[ModelSpec] = []
    for i, table in enumerate(raw):
        t = _check_table(table, "models", f"{where}, models[{i}]")
        _choice(t["name"], MODEL_NAMES, f"models[{i}].name", where)
        label = t["label"] or t["name"]
        try:
            get_model_class(t["name"])
        except ImportError as exc:
            raise ConfigError(
                f"{where}: model {t['name']!r} is not available in this installation ({exc})"
            ) from None
        for params in (t["params"], {**t["params"], **t["quick_params"]}):
            try:
                make_model(t["name"], **params)
            except ConfigError as exc:
                raise ConfigError(f"{where}: models[{i}] ({label}): {exc}") from None
        specs.append(ModelSpec(t["name"], label, dict(t["params"]), dict(t["quick_params"])))
    labels = [m.label for m in specs]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ConfigError(
            f"{where}: two models are labelled {dup[0]!r}; give each a distinct label = '...'"
        )
    return specs


def _parse_splits(raw: dict[str, Any], where: str, sources: list[SourceSpec]) -> dict[str, Any]:
    s = _check_table(raw, "splits", where)
    if s["random"] is not None:
        r = _check_table(s["random"], "splits.random", where)
        fr = [float(r[k]) for k in ("train", "valid", "test")]
        if min(fr) <= 0 or abs(sum(fr) - 1.0) > 1e-6:
            raise ConfigError(
                f"{where}: splits.random fractions must be positive and sum to 1 "
                f"(got train={fr[0]}, valid={fr[1]}, test={fr[2]})"
            )
        s["random"] = dict(zip(("train", "valid", "test"), fr))
    if not 0 < float(s["valid_fraction"]) < 0.5:
        raise ConfigError(f"{where}: splits.valid_fraction must be in (0, 0.5)")
    train_names = [x.name for x in sources if x.role == "train"]
    test_names = [x.name for x in sources if x.role == "test"]
    for name in s["external"]:
        if name not in test_names:
            raise ConfigError(
                f"{where}: splits.external names {name!r}, which is not a data source with "
                f"role = 'test' (test sources: {', '.join(test_names) or 'none'})"
            )
    unused = [n for n in test_names if n not in s["external"]]
    if unused:
        raise ConfigError(
            f"{where}: test source {unused[0]!r} is not listed in splits.external; add it there"
        )
    if s["leave_one_dataset_out"] and len(train_names) < 2:
        raise ConfigError(
            f"{where}: splits.leave_one_dataset_out needs at least two training data sets "
            f"(have {len(train_names)})"
        )
    if not (s["random"] or s["leave_one_dataset_out"] or s["external"]):
        raise ConfigError(
            f"{where}: [splits] defines no split; set random, leave_one_dataset_out or external"
        )
    if not train_names:
        raise ConfigError(f"{where}: no data source has role = 'train'")
    return s


def _parse_evaluate(raw: dict[str, Any], where: str, cfg_models: list[ModelSpec],
                    splits: dict[str, Any], sources: list[SourceSpec]) -> dict[str, Any]:
    e = _check_table(raw, "evaluate", where)
    if e["calibration"] is not None:
        c = _check_table(e["calibration"], "evaluate.calibration", where)
        for m in c["methods"]:
            _choice(m, CALIBRATION_METHODS, "evaluate.calibration.methods", where)
        if c["shots"] < 2 or c["repeats"] < 1:
            raise ConfigError(f"{where}: evaluate.calibration needs shots >= 2 and repeats >= 1")
        if not splits["external"]:
            raise ConfigError(
                f"{where}: evaluate.calibration needs a cross-platform test set in "
                "splits.external"
            )
        e["calibration"] = c
    if e["biology"] is not None:
        b = _check_table(e["biology"], "evaluate.biology", where)
        if not splits["leave_one_dataset_out"]:
            raise ConfigError(
                f"{where}: evaluate.biology needs splits.leave_one_dataset_out = true (the "
                "inferring model must not have seen the evaluated data set)"
            )
        labels = [m.label for m in cfg_models]
        b["models"] = b["models"] if b["models"] is not None else labels
        for m in b["models"]:
            _choice(m, labels, "evaluate.biology.models", where)
        train_names = [s.name for s in sources if s.role == "train"]
        ds = []
        for i, table in enumerate(b["datasets"]):
            d = _check_table(table, "evaluate.biology.datasets",
                             f"{where}, evaluate.biology.datasets[{i}]")
            _choice(d["dataset"], train_names, f"evaluate.biology.datasets[{i}].dataset", where)
            ds.append(d)
        b["datasets"] = ds
        e["biology"] = b
    return e


def parse_config(raw: Mapping[str, Any], *, base_dir: str | Path = ".",
                 where: str = "study config", text: str = "") -> StudyConfig:
    """Validate a parsed TOML mapping; raise :class:`ConfigError` naming the bad setting."""
    unknown = [k for k in raw if k not in _TOP_KEYS]
    if unknown:
        raise ConfigError(
            f"{where}: unknown section [{unknown[0]}]; valid sections: {', '.join(_TOP_KEYS)}"
        )
    base = Path(base_dir)
    study = _check_table(raw.get("study", {}), "study", where)
    data = _check_table(raw.get("data", {"sources": []}), "data", where)
    shared_dir = _resolve_shared_dir(data["shared_dir"], base)
    sources = _parse_sources(data["sources"], where, base, shared_dir)
    panel = _check_table(raw.get("panel", {}), "panel", where)
    pre = _check_table(raw.get("preprocess", {}), "preprocess", where)
    _choice(pre["rnaseq_transform"], RNASEQ_TRANSFORMS, "preprocess.rnaseq_transform", where)
    if pre["dedup_threshold"] < 0:
        raise ConfigError(f"{where}: preprocess.dedup_threshold must be >= 0 (0 = off)")
    if not pre["log2"]:
        bad = [s.name for s in sources if s.scale != "log2"]
        if bad:
            raise ConfigError(
                f"{where}: preprocess.log2 = false but source {bad[0]!r} is not log2; "
                "set preprocess.log2 = true"
            )
    models = _parse_models(raw.get("models"), where)
    splits = _parse_splits(raw.get("splits", {}), where, sources)
    evaluate = _parse_evaluate(raw.get("evaluate", {}), where, models, splits, sources)
    if study["quick_targets"] < 10:
        raise ConfigError(f"{where}: study.quick_targets must be at least 10")
    return StudyConfig(study, sources, panel, pre, models, splits, evaluate, shared_dir,
                       base, text)


def load_config(path: str | os.PathLike[str]) -> StudyConfig:
    """Read and validate a study TOML file (nothing is loaded or trained yet)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: study config not found")
    text = p.read_text(encoding="utf-8")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc})") from None
    cfg = parse_config(raw, base_dir=p.resolve().parent, where=str(p), text=text)
    cfg.path = p
    return cfg


# ====================================================================== data loading
def _read_source(spec: SourceSpec, cfg: StudyConfig) -> ExpressionData:
    """Read a source: a file, a path in the shared data folder, or a registered public data
    set (``geneinfer.public_data``: data folder first, then cache, then download)."""
    from geneinfer.io import detect_format, read

    if spec.file:
        path = Path(spec.file)
    elif spec.shared and "/" in spec.shared:
        path = cfg.shared_dir / spec.shared  # type: ignore[operator]
    else:
        from geneinfer.public_data import fetch

        if spec.geo:
            path = fetch("geo_soft", accession=spec.geo, data_dir=cfg.shared_dir)
        else:
            path = fetch(str(spec.shared), accession=spec.accession, data_dir=cfg.shared_dir)
    opts: dict[str, Any] = {"format": spec.format} if spec.format else {}
    if spec.platform and detect_format(path, format=spec.format) == "soft":
        opts["platform"] = spec.platform  # a SOFT family file may hold several platforms
    return read(path, **opts)


def _as_log2(data: ExpressionData, spec: SourceSpec, cfg: StudyConfig) -> ExpressionData:
    """Declared scale -> log2; a declared scale the values contradict is a config error."""
    from geneinfer.preprocess import to_log2

    try:
        return to_log2(data, scale=spec.scale)
    except ConfigError:
        raise
    except GeneinferError as exc:
        raise ConfigError(
            f"{cfg.path or 'study config'}: data source {spec.name!r} declares scale = "
            f"{spec.scale!r}, but {exc}; fix its scale in [[data.sources]]"
        ) from None


def _to_entrez(data: ExpressionData, cfg: StudyConfig) -> ExpressionData:
    if data.gene_id_kind == "probe":
        from geneinfer.genes import collapse_probes

        return collapse_probes(data)
    if data.gene_id_kind in ("ensembl", "symbol", "unknown"):
        from geneinfer.genes import map_gene_ids

        return map_gene_ids(data, to="entrez", data_dir=cfg.shared_dir)
    return data


def load_source(spec: SourceSpec, cfg: StudyConfig) -> ExpressionData:
    """One data source on log2 with Entrez gene ids; samples carry ``dataset`` and ``label``."""
    data = _read_source(spec, cfg)
    if spec.platform and "platform" in data.samples:
        keep = data.samples["platform"].astype(str).to_numpy() == spec.platform
        if not keep.any():
            raise ConfigError(
                f"data source {spec.name!r}: no sample on platform {spec.platform!r} "
                f"(found {', '.join(sorted(set(data.samples['platform'].astype(str))))})"
            )
        data = data.select_samples(keep)
    if spec.max_samples is not None and data.n_samples > spec.max_samples:
        data = data.select_samples(slice(0, spec.max_samples))
    if spec.scale == "counts":
        # Counts of genes merged by the id mapping are summed, so map before the transform.
        _as_log2(data, spec, cfg)  # checks the declared scale against the values first
        data = _as_log2(_to_entrez(data.with_values(data.values, scale="counts"), cfg), spec,
                        cfg)
    else:
        data = _to_entrez(_as_log2(data, spec, cfg), cfg)
    samples = data.samples.copy()
    samples["dataset"] = spec.name
    samples["platform"] = spec.platform or ""
    if spec.label_column in samples:
        samples["label"] = samples[spec.label_column].astype(str)
    else:
        samples["label"] = "na"
    # Sample ids are prefixed so two data sets can never collide.
    ids = pd.Index([f"{spec.name}:{s}" for s in data.sample_ids])
    samples.index = ids
    return ExpressionData(data.values, data.gene_ids, ids, data.genes, samples, "log2",
                          data.gene_id_kind, source=spec.name)


# ====================================================================== folds
@dataclass
class Fold:
    """One train/validation/test partition (indices into the pooled training samples)."""

    name: str
    split: str
    train: np.ndarray
    valid: np.ndarray
    test_pool: dict[str, np.ndarray] = field(default_factory=dict)
    test_external: list[str] = field(default_factory=list)

    @property
    def test_sets(self) -> list[str]:
        return [*self.test_pool, *self.test_external]


def build_folds(datasets: np.ndarray, splits: Mapping[str, Any], *, seed: int,
                where: str = "study config") -> list[Fold]:
    """Folds for the configured splits; ``datasets`` = dataset name per pooled sample.

    Uses :mod:`geneinfer.evaluate.splits`; an empty set raises :class:`ConfigError` naming
    the ``[splits]`` setting to change.
    """
    from geneinfer.evaluate.splits import external_test, leave_one_group_out, random_split

    n = len(datasets)
    vf = float(splits["valid_fraction"])
    folds: list[Fold] = []
    try:
        if splits["random"]:
            fr = splits["random"]
            sp = random_split(n, fractions=(fr["train"], fr["valid"], fr["test"]), seed=seed)
            folds.append(Fold("random", "random", sp.train, sp.valid, {"random-test": sp.test}))
        if splits["leave_one_dataset_out"]:
            for sp in leave_one_group_out(datasets, valid_fraction=vf, seed=seed):
                folds.append(Fold(f"lodo-{sp.name}", "lodo", sp.train, sp.valid,
                                  {str(sp.name): sp.test}))
        if splits["external"]:
            sp = external_test(n, 1, valid_fraction=vf, seed=seed)
            folds.append(Fold("external", "external", sp.train, sp.valid, {},
                              list(splits["external"])))
    except ConfigError as exc:
        raise ConfigError(f"{where}: [splits]: {exc}") from None
    return folds


# ====================================================================== fold preprocessing
class FoldScaler:
    """Quantile reference + per-gene standardization, fitted on training samples only.

    Test samples that lack some genes (e.g. RNA-seq after id mapping) are mapped onto a
    reference built from the *training* values of the genes they do have, so their
    distribution is not stretched over genes they never measured.
    """

    def __init__(self, *, quantile: bool = True, standardize: bool = True) -> None:
        self.quantile = quantile
        self.standardize = standardize

    def fit(self, X: np.ndarray) -> FoldScaler:
        from geneinfer.preprocess.standardize import Standardizer

        self.train_ = np.asarray(X, dtype=np.float32)
        self._refs: dict[bytes, np.ndarray] = {}
        Q = self._quantile(self.train_)
        self.std_ = Standardizer().fit(Q)
        self.mean_log2_ = np.nanmean(Q, axis=0)
        self.var_log2_ = np.nanvar(Q, axis=0)
        return self

    def _quantile(self, X: np.ndarray) -> np.ndarray:
        if not self.quantile:
            return np.asarray(X, dtype=np.float32)
        from geneinfer.preprocess.quantile import map_to_reference, quantile_reference

        out = np.full(X.shape, np.nan, dtype=np.float32)
        present = np.isfinite(X)
        patterns, inverse = np.unique(present, axis=0, return_inverse=True)
        for k, pat in enumerate(patterns):
            rows = np.flatnonzero(inverse.ravel() == k)
            if not pat.any():
                continue
            key = np.packbits(pat).tobytes()
            if key not in self._refs:
                self._refs[key] = quantile_reference(self.train_[:, pat])
            out[np.ix_(rows, np.flatnonzero(pat))] = map_to_reference(
                X[np.ix_(rows, np.flatnonzero(pat))], self._refs[key]
            )
        return out

    def transform(self, X: np.ndarray) -> np.ndarray:
        Q = self._quantile(np.asarray(X, dtype=np.float32))
        return self.std_.transform(Q) if self.standardize else Q

    @property
    def scale_(self) -> np.ndarray:
        return self.std_.scale_ if self.standardize else np.ones_like(self.std_.scale_)


# ====================================================================== metrics
def gene_metrics(Y: np.ndarray, P: np.ndarray) -> pd.DataFrame:
    """Per-gene MAE, Pearson r and Lin's CCC over samples (NaN pairs skipped)."""
    from geneinfer.evaluate.metrics import per_gene_ccc, per_gene_mae, per_gene_pearson

    n = (np.isfinite(Y) & np.isfinite(P)).sum(axis=0)
    return pd.DataFrame({"mae": per_gene_mae(Y, P), "r": per_gene_pearson(Y, P),
                         "ccc": per_gene_ccc(Y, P), "n": n})


def _summary_row(pg: pd.DataFrame) -> dict[str, float]:
    ok = np.isfinite(pg["mae"].to_numpy())
    sub = pg[ok]
    return {
        "mae": float(sub["mae"].mean()),
        "mean_r": float(np.nanmean(sub["r"])),
        "median_r": float(np.nanmedian(sub["r"])),
        "ccc": float(np.nanmean(sub["ccc"])),
        "n_genes": int(ok.sum()),
    }


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


def _floats(v: Sequence[Any]) -> list[float | None]:
    return [None if x is None or not math.isfinite(float(x)) else float(x) for x in v]


# ====================================================================== calibration
def calibrate_predictions(Y: np.ndarray, P: np.ndarray, *, methods: Sequence[str],
                          shots: int = 5, repeats: int = 5, seed: int = 0) -> list[dict]:
    """Metrics on a cross-platform test set with no / per-study / few-shot calibration.

    Each repeat draws ``shots`` samples with measured full profiles; ``offset-scale`` learns
    a per-gene offset and slope from them (:class:`~geneinfer.preprocess.OffsetScaleCalibrator`).
    Every method is scored on the *remaining* samples only, the same ones for all methods.
    """
    from geneinfer.preprocess import OffsetScaleCalibrator, center_per_study

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
            acc[m].append(_summary_row(gene_metrics(yt, pt)))
    out = []
    for m, recs in acc.items():
        frame = pd.DataFrame(recs)
        out.append({"method": m, "shots": shots if m == "offset-scale" else 0,
                    "n_eval_samples": n - shots, "repeats": repeats,
                    "mae": frame["mae"].mean(), "mae_std": frame["mae"].std(ddof=0),
                    "mean_r": frame["mean_r"].mean(), "ccc": frame["ccc"].mean(),
                    "n_genes": int(frame["n_genes"].iloc[0])})
    return out


# ====================================================================== the study
def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _write_json(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, default=_json_default), encoding="utf-8")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


def _clean_float(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def versions() -> dict[str, str]:
    """Versions of geneinfer, Python and the numerical libraries."""
    import matplotlib
    import scipy
    import sklearn
    import torch

    from geneinfer import __version__

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


class Study:
    """Run a study described by a :class:`StudyConfig`.

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
        Show tqdm progress bars.
    """

    def __init__(self, config: StudyConfig, *, out_dir: str | os.PathLike[str],
                 quick: bool = False, resume: bool = True, progress: bool = True) -> None:
        self.config = config
        self.out = Path(out_dir)
        self.quick = quick
        self.resume = resume
        self.progress = progress
        self.prepared = False

    # ------------------------------------------------------------------ preparation
    @property
    def _where(self) -> str:
        return str(self.config.path or "study config")

    def prepare(self) -> Study:
        """Load every data set, resolve the panel and build the folds; validate all of it."""
        cfg = self.config
        loaded: dict[str, ExpressionData] = {}
        for spec in cfg.sources:
            loaded[spec.name] = load_source(spec, cfg)
        self._resolve_genes(loaded)
        genes = self.landmarks + self.targets
        pool = ExpressionData.concat_samples(
            [loaded[s.name].select_genes(genes) for s in cfg.train_sources], join="exact"
        )
        self.dedup_report = {"removed": 0}
        thr = float(cfg.preprocess["dedup_threshold"])
        if thr > 0 and pool.n_samples > 2:
            from geneinfer.preprocess import remove_duplicates

            # All pairs for small pools; k-means buckets (D-GEX) for compendia.
            keep, _ = remove_duplicates(pool.values, threshold=thr,
                                        n_clusters=1 if pool.n_samples <= 2000 else None,
                                        seed=cfg.seed, progress=self.progress)
            self.dedup_report = {"removed": int((~keep).sum()), "threshold": thr,
                                 "removed_ids": list(pool.sample_ids[~keep])}
            pool = pool.select_samples(keep)
        self.pool = pool
        self.external = {
            s.name: loaded[s.name].select_genes(genes, missing="nan") for s in cfg.test_sources
        }
        self.folds = build_folds(pool.samples["dataset"].to_numpy(), cfg.splits, seed=cfg.seed,
                                 where=self._where)
        self.prepared = True
        return self

    def _resolve_genes(self, loaded: Mapping[str, ExpressionData]) -> None:
        from geneinfer.genes import get_panel

        cfg = self.config
        pname = cfg.panel["name"]
        if pname.lower() not in ("l1000", "dgex"):
            candidate = cfg.base_dir / pname
            pname = str(candidate) if candidate.is_file() else pname
        try:
            panel = get_panel(pname, data_dir=cfg.shared_dir)
        except GeneinferError as exc:
            raise ConfigError(f"{self._where}: panel.name = {cfg.panel['name']!r}: {exc}"
                              ) from None

        def complete(data: ExpressionData, ids: Sequence[str]) -> set[str]:
            sub = data.select_genes(list(ids), missing="drop")
            ok = np.isfinite(sub.values).all(axis=0)
            return set(sub.gene_ids[ok])

        lm = [str(g) for g in panel.landmarks]
        if panel.targets is not None:
            tg = [str(g) for g in panel.targets]
        else:  # a landmark-only panel: every other gene of the first training set is a target
            first = loaded[cfg.train_sources[0].name]
            tg = [g for g in first.gene_ids if g not in set(lm)]
        lm_ok = set(lm)
        for name, data in loaded.items():
            have = complete(data, lm)
            self._check_coverage(name, "landmarks", len(have), len(lm), "min_landmarks")
            lm_ok &= have
        tg_ok = set(tg)
        for s in cfg.train_sources:
            have = complete(loaded[s.name], tg)
            self._check_coverage(s.name, "targets", len(have), len(tg), "min_targets")
            tg_ok &= have
        for s in cfg.test_sources:
            have = complete(loaded[s.name], tg)
            self._check_coverage(s.name, "targets", len(have & tg_ok), len(tg), "min_targets")
        self.landmarks = [g for g in lm if g in lm_ok]
        targets = [g for g in tg if g in tg_ok]
        self._check_coverage("all data sets together", "landmarks", len(self.landmarks), len(lm),
                             "min_landmarks")
        self._check_coverage("all training data sets together", "targets", len(targets), len(tg),
                             "min_targets")
        self.panel_summary = {
            "panel": cfg.panel["name"], "landmarks_in_panel": len(lm),
            "landmarks_used": len(self.landmarks), "targets_in_panel": len(tg),
            "targets_used": len(targets),
        }
        if self.quick and len(targets) > cfg.study["quick_targets"]:
            rng = np.random.default_rng(cfg.seed)
            pick = np.sort(rng.choice(len(targets), cfg.study["quick_targets"], replace=False))
            targets = [targets[i] for i in pick]
            self.panel_summary["targets_used_quick"] = len(targets)
        self.targets = targets

    def _check_coverage(self, name: str, what: str, have: int, total: int, key: str) -> None:
        need = int(self.config.panel[key])
        if have < need:
            raise ConfigError(
                f"{self._where}: panel {self.config.panel['name']!r}: only {have} of {total} "
                f"{what} are measured in {name} (panel.{key} = {need}); use a panel that "
                f"matches the data or lower panel.{key}"
            )

    # ------------------------------------------------------------------ units
    def unit_key(self, model: ModelSpec, fold: Fold) -> str:
        cfg = self.config
        return _digest({
            "model": model.name, "params": model.settings(self.quick), "fold": fold.name,
            "quick": self.quick, "preprocess": cfg.preprocess, "panel": cfg.panel,
            "splits": cfg.splits, "seed": cfg.seed,
            "sources": [asdict(s) for s in cfg.sources],
            "genes": _digest([self.landmarks, self.targets]),
        })

    def _unit_dir(self, fold: Fold) -> Path:
        return self.out / "units" / fold.name

    def _needs_predictions(self, model: ModelSpec, fold: Fold) -> bool:
        ev = self.config.evaluate
        if fold.split == "external" and ev["calibration"] is not None:
            return True
        bio = ev["biology"]
        if fold.split == "lodo" and bio is not None and model.label in bio["models"]:
            return any(d["dataset"] in fold.test_pool for d in bio["datasets"])
        return False

    def _fold_arrays(self, fold: Fold) -> dict[str, Any]:
        """Preprocessed (standardized) landmark/target arrays of one fold."""
        nl = len(self.landmarks)
        genes = self.landmarks + self.targets
        V = self.pool.values
        scaler = FoldScaler(quantile=self.config.preprocess["quantile"],
                            standardize=self.config.preprocess["standardize"])
        scaler.fit(V[fold.train])
        arrays: dict[str, Any] = {"scaler": scaler, "nl": nl}

        def split(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return M[:, :nl], M[:, nl:]

        arrays["train"] = split(scaler.transform(V[fold.train]))
        arrays["valid"] = split(scaler.transform(V[fold.valid]))
        tests: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]] = {}
        for name, idx in fold.test_pool.items():
            X, Y = split(scaler.transform(V[idx]))
            tests[name] = (X, Y, self.pool.samples["dataset"].to_numpy()[idx],
                           self.pool.samples.iloc[idx])
        for name in fold.test_external:
            data = self.external[name].select_genes(genes, missing="nan")
            X, Y = split(scaler.transform(data.values))
            tests[name] = (X, Y, np.full(data.n_samples, name, dtype=object), data.samples)
        arrays["tests"] = tests
        return arrays

    def _run_unit(self, model: ModelSpec, fold: Fold, arrays: Mapping[str, Any]) -> dict:
        from geneinfer.evaluate.metrics import within_study_zscore
        from geneinfer.models.registry import make_model
        from geneinfer.train.workflow import fit_estimator

        est = make_model(model.name, **model.settings(self.quick))
        if "random_state" in est.get_params(deep=False) and \
                est.get_params(deep=False)["random_state"] is None:
            est.set_params(random_state=self.config.seed)
        Xtr, Ytr = arrays["train"]
        Xva, Yva = arrays["valid"]
        t0 = time.perf_counter()
        # Model warnings (e.g. "SVR fitted on 100 of 9000 genes") go to the unit record and
        # the log instead of interleaving with the progress bar.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit_estimator(est, Xtr, Ytr, X_valid=Xva, Y_valid=Yva)
        fit_s = time.perf_counter() - t0
        notes = list(dict.fromkeys(str(w.message) for w in caught))
        for note in notes:
            logger.info("%s / %s: %s", model.label, fold.name, note)
        valid = _summary_row(gene_metrics(Yva, est.predict(Xva)))
        rows, per_gene, preds = [], {}, {}
        within = self.config.evaluate["within_study"]
        for name, (X, Y, groups, _) in arrays["tests"].items():
            P = np.asarray(est.predict(X), dtype=np.float32)
            pg = gene_metrics(Y, P)
            pg.insert(0, "gene", self.targets)
            per_gene[name] = pg
            base = {"model": model.label, "model_name": model.name, "split": fold.split,
                    "fold": fold.name, "test_set": name, "n_samples": len(X),
                    "n_train": len(Xtr), "fit_seconds": round(fit_s, 3),
                    "valid_mae": valid["mae"]}
            rows.append({**base, "view": "training", **_summary_row(pg)})
            if within:
                wz = gene_metrics(within_study_zscore(Y, groups), within_study_zscore(P, groups))
                rows.append({**base, "view": "within-study", **_summary_row(wz)})
            if self._needs_predictions(model, fold):
                preds[name] = P
        history = learning_curve(getattr(est, "history_", None))
        return {"rows": rows, "per_gene": per_gene, "preds": preds, "history": history,
                "warnings": notes}

    def _save_unit(self, model: ModelSpec, fold: Fold, key: str, res: Mapping[str, Any]) -> None:
        d = self._unit_dir(fold)
        d.mkdir(parents=True, exist_ok=True)
        for name, pg in res["per_gene"].items():
            with atomic_path(d / f"{model.label}__{name}.genes.csv") as tmp:
                pg.to_csv(tmp, index=False)
        if res["preds"]:
            with atomic_path(d / f"{model.label}.preds.npz") as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, **res["preds"])
        # The JSON marks the unit as finished, so it is written last.
        _write_json(d / f"{model.label}.json",
                    {"key": key, "rows": [{k: _clean_float(v) for k, v in r.items()}
                                          for r in res["rows"]],
                     "history": res["history"], "test_sets": list(res["per_gene"]),
                     "warnings": res.get("warnings", [])})

    def _load_unit(self, model: ModelSpec, fold: Fold, key: str) -> dict | None:
        path = self._unit_dir(fold) / f"{model.label}.json"
        if not (self.resume and path.is_file()):
            return None
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        if doc.get("key") != key:
            return None
        if self._needs_predictions(model, fold) and not (
            (self._unit_dir(fold) / f"{model.label}.preds.npz").is_file()
            and (self._unit_dir(fold) / "_truth.npz").is_file()
        ):
            return None  # finished before biology/calibration asked for its predictions
        return doc

    # ------------------------------------------------------------------ running
    def run(self) -> dict[str, Any]:
        """Train and evaluate every unit (resuming), aggregate and write the results."""
        from tqdm.auto import tqdm

        if not self.prepared:
            self.prepare()
        self.out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        docs: dict[tuple[str, str], dict] = {}
        total = len(self.folds) * len(self.config.models)
        bar = tqdm(total=total, desc=f"study {self.config.name}", unit="unit",
                   disable=not self.progress)
        skipped = 0
        for fold in self.folds:
            arrays = None
            for model in self.config.models:
                key = self.unit_key(model, fold)
                doc = self._load_unit(model, fold, key)
                if doc is None:
                    bar.set_postfix_str(f"{model.label} / {fold.name}")
                    if arrays is None:
                        arrays = self._fold_arrays(fold)
                        self._save_truth(fold, arrays)
                    res = self._run_unit(model, fold, arrays)
                    self._save_unit(model, fold, key, res)
                    doc = self._load_unit(model, fold, key) or {"rows": res["rows"],
                                                                 "history": res["history"]}
                else:
                    skipped += 1
                docs[(model.label, fold.name)] = doc
                bar.update()
        bar.close()
        elapsed = time.perf_counter() - t0
        return self._aggregate(docs, elapsed=elapsed, skipped=skipped)

    def _save_truth(self, fold: Fold, arrays: Mapping[str, Any]) -> None:
        """Standardized landmarks/targets and labels of test sets that later steps reuse."""
        need = any(self._needs_predictions(m, fold) for m in self.config.models)
        if not need:
            return
        d = self._unit_dir(fold)
        d.mkdir(parents=True, exist_ok=True)
        out: dict[str, np.ndarray] = {}
        for name, (X, Y, _groups, samples) in arrays["tests"].items():
            out[f"{name}.X"] = X
            out[f"{name}.Y"] = Y
            out[f"{name}.label"] = samples["label"].astype(str).to_numpy().astype("U")
        with atomic_path(d / "_truth.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **out)

    # ------------------------------------------------------------------ aggregation
    def _aggregate(self, docs: Mapping[tuple[str, str], dict], *, elapsed: float,
                   skipped: int) -> dict[str, Any]:
        cfg = self.config
        rows = [r for doc in docs.values() for r in doc["rows"]]
        metrics = pd.DataFrame(rows)
        per_gene = self._per_gene_long()
        metrics = self._add_better_than_baseline(metrics, per_gene)
        metrics.to_csv(self.out / "metrics.csv", index=False)
        per_gene_dir = self.out / "per_gene"
        per_gene_dir.mkdir(exist_ok=True)
        for (model, split, test_set), sub in per_gene.groupby(["model", "split", "test_set"]):
            with atomic_path(per_gene_dir / f"{model}__{split}__{test_set}.csv") as tmp:
                sub.drop(columns=["model", "split", "test_set"]).to_csv(tmp, index=False)
        histories = {m: doc["history"] for (m, f), doc in docs.items()
                     if doc.get("history") and f == self.folds[-1].name}
        _write_json(self.out / "learning_curves.json",
                    {f"{m}|{f}": doc["history"] for (m, f), doc in docs.items()
                     if doc.get("history")})
        calibration = self._calibration() if cfg.evaluate["calibration"] else None
        biology = self._biology() if cfg.evaluate["biology"] else None
        from geneinfer.evaluate.report import ReportData, reliability_table, write_report

        reliability = reliability_table(per_gene) if len(per_gene) else pd.DataFrame()
        reliability.to_csv(self.out / "reliability.csv", index=False)
        if calibration is not None:
            calibration.to_csv(self.out / "calibration.csv", index=False)
        if biology is not None:
            biology.to_csv(self.out / "biology.csv", index=False)
        vers = versions()
        _write_json(self.out / "versions.json", {
            **vers, "config_sha256": hashlib.sha256(cfg.text.encode()).hexdigest(),
            "quick": self.quick, "panel": self.panel_summary,
            "duplicates": self.dedup_report, "elapsed_seconds": round(elapsed, 1),
            "units_reused": skipped,
        })
        with atomic_path(self.out / "config.toml") as tmp:
            tmp.write_text(cfg.text, encoding="utf-8")
        scaler = FoldScaler(quantile=cfg.preprocess["quantile"], standardize=False).fit(
            self.pool.values)
        n_targets = len(self.targets)
        gene_stats = pd.DataFrame({"mean": scaler.mean_log2_[-n_targets:],
                                   "var": scaler.var_log2_[-n_targets:]},
                                  index=pd.Index(self.targets))
        notes = [
            f"Panel {self.panel_summary['panel']}: {len(self.landmarks)} landmarks and "
            f"{len(self.targets)} targets measured in every data set used"
            + (" (quick mode: target subset)" if self.quick else "") + ".",
            f"Training pool: {self.pool.n_samples} samples from "
            f"{', '.join(s.name for s in cfg.train_sources)}; "
            f"{self.dedup_report['removed']} near-duplicates removed.",
            f"Units: {len(docs)} ({skipped} reused from cache); run time {elapsed:.1f} s.",
        ]
        seen: dict[str, None] = {}
        for (label, _fold), doc in docs.items():
            for w in doc.get("warnings", []):
                seen.setdefault(f"Model warning ({label}): {w}", None)
        notes += list(seen)[:20]
        data = ReportData(
            title=f"geneinfer study: {cfg.name}", metrics=metrics, per_gene=per_gene,
            gene_stats=gene_stats, histories=histories, calibration=calibration,
            biology=biology, config_text=cfg.text, versions=vers, notes=notes,
            baseline=cfg.evaluate["baseline"],
        )
        report = write_report(data, self.out / "report.html")
        return {"metrics": metrics, "per_gene": per_gene, "calibration": calibration,
                "biology": biology, "reliability": reliability, "report": report,
                "elapsed": elapsed, "skipped": skipped}

    def _per_gene_long(self) -> pd.DataFrame:
        parts = []
        for fold in self.folds:
            for model in self.config.models:
                for name in fold.test_sets:
                    path = self._unit_dir(fold) / f"{model.label}__{name}.genes.csv"
                    if path.is_file():
                        pg = pd.read_csv(path, dtype={"gene": str})
                        pg.insert(0, "test_set", name)
                        pg.insert(0, "fold", fold.name)
                        pg.insert(0, "split", fold.split)
                        pg.insert(0, "model", model.label)
                        parts.append(pg)
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    def _add_better_than_baseline(self, metrics: pd.DataFrame, per_gene: pd.DataFrame
                                  ) -> pd.DataFrame:
        base = self.config.evaluate["baseline"]
        col = f"better_than_{base}"
        metrics[col] = np.nan
        if not len(per_gene) or base not in set(per_gene["model"]):
            return metrics
        ref = per_gene[per_gene["model"] == base].set_index(["fold", "test_set", "gene"])["mae"]
        pg = per_gene.join(ref.rename("base_mae"), on=["fold", "test_set", "gene"])
        ok = np.isfinite(pg["mae"]) & np.isfinite(pg["base_mae"])
        pg = pg[ok]
        share = (pg["mae"] < pg["base_mae"]).groupby(
            [pg["model"], pg["fold"], pg["test_set"]]).mean()
        idx = pd.MultiIndex.from_frame(metrics[["model", "fold", "test_set"]])
        vals = share.reindex(idx).to_numpy()
        metrics[col] = np.where(metrics["view"] == "training", vals, np.nan)
        return metrics

    # ------------------------------------------------------------------ calibration
    def _calibration(self) -> pd.DataFrame:
        c = self.config.evaluate["calibration"]
        fold = next(f for f in self.folds if f.split == "external")
        truth = np.load(self._unit_dir(fold) / "_truth.npz", allow_pickle=False)
        rows = []
        for model in self.config.models:
            path = self._unit_dir(fold) / f"{model.label}.preds.npz"
            if not path.is_file():
                continue
            preds = np.load(path, allow_pickle=False)
            for name in fold.test_external:
                Y, P = truth[f"{name}.Y"], preds[name]
                for rec in calibrate_predictions(Y, P, methods=c["methods"], shots=c["shots"],
                                                 repeats=c["repeats"], seed=self.config.seed):
                    rows.append({"model": model.label, "test_set": name, **rec})
        return pd.DataFrame(rows)

    # ------------------------------------------------------------------ biology
    def _biology(self) -> pd.DataFrame:
        from geneinfer.evaluate.biology import downstream_table, evaluate_downstream

        b = self.config.evaluate["biology"]
        rows = []
        for d in b["datasets"]:
            fold = next(f for f in self.folds if f.split == "lodo" and d["dataset"] in f.test_pool)
            truth = np.load(self._unit_dir(fold) / "_truth.npz", allow_pickle=False)
            X, Y = truth[f"{d['dataset']}.X"], truth[f"{d['dataset']}.Y"]
            labels = truth[f"{d['dataset']}.label"]
            for label in b["models"]:
                path = self._unit_dir(fold) / f"{label}.preds.npz"
                P = np.load(path, allow_pickle=False)[d["dataset"]]
                try:
                    rec = evaluate_downstream(
                        X, Y, P, labels, classes=d["classes"],
                        min_class_size=d["min_class_size"] or b["min_class_size"],
                        n_splits=b["n_splits"], top_n=b["top_n"], seed=self.config.seed)
                except GeneinferError as exc:
                    raise ConfigError(
                        f"{self._where}: evaluate.biology dataset {d['dataset']!r}: {exc}; "
                        "set classes / min_class_size"
                    ) from None
                rows.append({"dataset": d["dataset"], "model": label, **rec})
        return downstream_table(rows)


def run_study(config: str | os.PathLike[str] | StudyConfig, *, out_dir: str | os.PathLike[str],
              quick: bool = False, resume: bool = True, progress: bool = True) -> dict[str, Any]:
    """Load/validate ``config``, prepare the data (validated too) and run the study."""
    cfg = config if isinstance(config, StudyConfig) else load_config(config)
    study = Study(cfg, out_dir=out_dir, quick=quick, resume=resume, progress=progress)
    study.prepare()
    return study.run()
