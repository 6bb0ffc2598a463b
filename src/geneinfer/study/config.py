"""Study configuration: one TOML file describes data, panel, models, splits and evaluation.

:func:`load_config` checks the file's structure (unknown keys, types, model names and
parameters, split fractions, missing files) before anything is loaded or trained; every
problem is a :class:`~geneinfer.errors.ConfigError` naming the setting.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geneinfer.errors import ConfigError
from geneinfer.examples import EMBEDDED_NAMES
from geneinfer.genes.probes import is_platform_name
from geneinfer.models.registry import MODEL_NAMES, get_model_class, make_model
from geneinfer.public_data import get_source, resolve_data_dir
from geneinfer.scales import CONVERTIBLE

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SCALES_DECLARABLE = CONVERTIBLE
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
    "data": {"data_dir": (str, None), "shared_dir": (str, None), "sources": (list, ...)},
    "data.sources": {
        "name": (str, ...),
        "shared": (str, None),
        "file": (str, None),
        "geo": (str, None),
        "embedded": (str, None),
        "accession": (str, None),
        "scale": (str, None),
        "platform": (str, None),
        "annotation": (str, None),
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
        "groups": (str, None),
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
        "save_predictions": (bool, False),
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
    """One data set of the study (``[[data.sources]]``): a ``file`` (relative to the config),
    a path in the data folder or a registered public data set (``shared``), a GEO series
    (``geo``) or a data set shipped with geneinfer (``embedded``). ``scale`` states the
    values' scale when the file does not (default: stated by the file, else detected).
    ``platform`` (a GEO platform, ``GPL570``) picks the platform of a SOFT file with several
    and, for probes without their own Entrez column, names the annotation to use (from the
    data folder or cache); ``annotation`` is an annotation file (relative to the config) or
    a platform that overrides it."""

    name: str
    scale: str | None = None
    shared: str | None = None
    file: str | None = None
    geo: str | None = None
    embedded: str | None = None
    accession: str | None = None
    platform: str | None = None
    annotation: str | None = None
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
    #: the sample column naming each training profile's study (``geneinfer train
    #: --groups``); None: the data set; ``"none"``: all one group (selection within it)
    groups: str | None = None

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
    data_dir: Path | None
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


def resolve_study_data_dir(raw: str | None, base_dir: Path,
                           data_dir: str | os.PathLike[str] | None) -> Path | None:
    """The study's data folder: ``--data-dir`` if given, else ``$GENEINFER_DATA_DIR``, else
    the config's ``data.data_dir`` (relative to the config file), else none (files are then
    looked up in the download cache). One rule for every command
    (:func:`geneinfer.public_data.resolve_data_dir`), with the config as the last default."""
    folder = resolve_data_dir(data_dir)
    if folder is not None:
        return folder
    if raw:
        path = (base_dir / Path(raw).expanduser()).resolve()
        if not path.is_dir():
            raise ConfigError(
                f"data.data_dir = {raw!r} (relative to the config file) is not a folder: "
                f"{path}; pass --data-dir or set GENEINFER_DATA_DIR"
            )
        return path
    return None


def _parse_sources(raw: list[Any], where: str, base_dir: Path, data_dir: Path | None
                   ) -> list[SourceSpec]:
    if not raw:
        raise ConfigError(f"{where}: [data] has no sources; add [[data.sources]] tables")
    specs: list[SourceSpec] = []
    for i, table in enumerate(raw):
        t = _check_table(table, "data.sources", f"{where}, data.sources[{i}]")
        label = f"{where}, data source {t['name']!r}"
        given = [k for k in ("shared", "file", "geo", "embedded") if t[k]]
        if len(given) != 1:
            raise ConfigError(
                f"{label}: give exactly one of shared / file / geo / embedded (got "
                f"{', '.join(given) or 'none'})"
            )
        if t["scale"] is not None:
            _choice(t["scale"], SCALES_DECLARABLE, f"data source {t['name']!r} scale", where)
        if t["embedded"]:
            _choice(t["embedded"], EMBEDDED_NAMES, f"data source {t['name']!r} embedded",
                    where)
        _choice(t["role"], ROLES, f"data source {t['name']!r} role", where)
        if t["file"]:
            path = (base_dir / Path(t["file"]).expanduser()).resolve()
            if not path.is_file():
                raise ConfigError(
                    f"{label}: file {t['file']!r} not found (looked at {path}); fix the path "
                    "(relative paths are relative to the config file)"
                )
            t["file"] = str(path)
        if t["annotation"] and not is_platform_name(t["annotation"]):
            path = (base_dir / Path(t["annotation"]).expanduser()).resolve()
            if not path.is_file():
                raise ConfigError(
                    f"{label}: annotation {t['annotation']!r} is neither a GEO platform "
                    f"(GPLnnn) nor a file (looked at {path}; relative paths are relative to "
                    "the config file)"
                )
            t["annotation"] = str(path)
        if t["shared"] and "/" in t["shared"]:
            if data_dir is None:
                raise ConfigError(
                    f"{label}: shared = {t['shared']!r} needs the shared data folder; pass "
                    "--data-dir, set GENEINFER_DATA_DIR or data.data_dir"
                )
            path = data_dir / t["shared"]
            if not path.is_file():
                raise ConfigError(
                    f"{label}: shared file {t['shared']!r} not found in {data_dir}; fix "
                    "the data folder (--data-dir) or the file name"
                )
        if t["shared"] and "/" not in t["shared"]:
            try:
                get_source(t["shared"]).resolve(t["accession"])
            except ConfigError as exc:
                raise ConfigError(f"{label}: shared = {t['shared']!r}: {exc}") from None
        if t["geo"]:
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
        specs.append(ModelSpec(t["name"], label, dict(t["params"]), dict(t["quick_params"]),
                               t["groups"]))
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
                 where: str = "study config", text: str = "",
                 data_dir: str | os.PathLike[str] | None = None) -> StudyConfig:
    """Validate a parsed TOML mapping; raise :class:`ConfigError` naming the bad setting."""
    unknown = [k for k in raw if k not in _TOP_KEYS]
    if unknown:
        raise ConfigError(
            f"{where}: unknown section [{unknown[0]}]; valid sections: {', '.join(_TOP_KEYS)}"
        )
    base = Path(base_dir)
    study = _check_table(raw.get("study", {}), "study", where)
    data = _check_table(raw.get("data", {"sources": []}), "data", where)
    if data["data_dir"] and data["shared_dir"]:
        raise ConfigError(f"{where}: give data.data_dir only (shared_dir is its old name)")
    folder = resolve_study_data_dir(data["data_dir"] or data["shared_dir"], base, data_dir)
    sources = _parse_sources(data["sources"], where, base, folder)
    panel = _check_table(raw.get("panel", {}), "panel", where)
    pre = _check_table(raw.get("preprocess", {}), "preprocess", where)
    _choice(pre["rnaseq_transform"], RNASEQ_TRANSFORMS, "preprocess.rnaseq_transform", where)
    if pre["dedup_threshold"] < 0:
        raise ConfigError(f"{where}: preprocess.dedup_threshold must be >= 0 (0 = off)")
    models = _parse_models(raw.get("models"), where)
    splits = _parse_splits(raw.get("splits", {}), where, sources)
    evaluate = _parse_evaluate(raw.get("evaluate", {}), where, models, splits, sources)
    if study["quick_targets"] < 10:
        raise ConfigError(f"{where}: study.quick_targets must be at least 10")
    return StudyConfig(study, sources, panel, pre, models, splits, evaluate, folder, base, text)


def load_config(path: str | os.PathLike[str], *,
                data_dir: str | os.PathLike[str] | None = None) -> StudyConfig:
    """Read and validate a study TOML file (nothing is loaded or trained yet).

    ``data_dir`` (``--data-dir``) is the data folder; see :func:`resolve_study_data_dir`.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: study config not found")
    text = p.read_text(encoding="utf-8")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc})") from None
    cfg = parse_config(raw, base_dir=p.resolve().parent, where=str(p), text=text,
                       data_dir=data_dir)
    cfg.path = p
    return cfg
