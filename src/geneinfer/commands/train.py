"""``geneinfer train``: fit a landmark -> target model on expression files and save it."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from geneinfer.commands.options import (
    add_archs4_arguments,
    add_nonfinite,
    add_platform_arguments,
    annotation_option,
    archs4_selection,
    open_fraction,
)
from geneinfer.errors import ConfigError, DataUnavailableError, GeneinferError
from geneinfer.models.bundle import MODEL_JSON, check_model_path, read_model_doc
from geneinfer.models.nn.distributed import finish as finish_distributed
from geneinfer.models.registry import MODEL_NAMES
from geneinfer.public_data import locate_registered_file
from geneinfer.scales import CONVERTIBLE
from geneinfer.train.landmarks import panel_measured_in
from geneinfer.train.outofcore import OUT_OF_CORE, TrainingInput, memory_budget, train_inputs
from geneinfer.train.workflow import DEFAULT_MODEL, VALID_FRACTION
from geneinfer.utils.files import output_errors, remove_stale_temps
from geneinfer.utils.locks import exclusive_lock

#: key of ``model.info`` that identifies the training inputs and settings of a fit
FIT_FINGERPRINT = "fit_fingerprint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="default",
        metavar="NAME",
        help=f"model to train: {', '.join(MODEL_NAMES)} (default: {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--panel",
        default="l1000",
        metavar="l1000|dgex|FILE",
        help="landmark/target panel (default: l1000, the 978 LINCS landmarks)",
    )
    parser.add_argument(
        "--train",
        nargs="+",
        required=True,
        metavar="FILE",
        help="training expression files (GCT, GCTX, SOFT, TSV/CSV, h5ad; any scale)",
    )
    parser.add_argument(
        "--groups", metavar="COLUMN", default=None,
        help="sample-metadata column naming each profile's study, e.g. a GEO series id "
        "(default: the --train file; 'none': all one group); hyper-parameters are chosen and "
        "the stored per-gene r/MAE measured on studies left out",
    )
    parser.add_argument(
        "--refit", choices=("auto", "yes", "no"), default="auto",
        help="networks and other iterative models validated on held-out studies: fit a fresh "
        "copy on all profiles afterwards (auto: up to 20,000 profiles; default: auto)",
    )
    parser.add_argument(
        "--valid", metavar="FILE", help="validation file (default: studies left out of the "
        "--train data, see --groups; with one study, --valid-fraction of its samples)"
    )
    parser.add_argument(
        "--valid-fraction", type=open_fraction, default=VALID_FRACTION, metavar="F",
        help="share of the training samples held out (whole studies where there are several) "
        "for networks' early stopping and scoring, and for scoring with one study "
        "(default: %(default)s)",
    )
    parser.add_argument("--out", required=True, metavar="MODEL", help="model directory to write")
    parser.add_argument(
        "--overwrite", action="store_true",
        help="replace a model already at --out that was trained on other data or settings "
        "(without it only a rerun of the same training may replace it)")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model hyper-parameter (repeatable); VALUE is read as JSON when it parses, "
        "e.g. --param alphas=[1,10,100] (ridge), --param hidden=[3000,3000] --param "
        "max_epochs=50 (dgex)",
    )
    parser.add_argument(
        "--scale", choices=CONVERTIBLE, default=None,
        help="scale of the training values when the files do not say it "
        "(default: stated by each file, else detected)",
    )
    parser.add_argument(
        "--data-dir", metavar="DIR",
        help="data folder of public gene tables (panels, Ensembl ids); "
        "default: $GENEINFER_DATA_DIR, then the download cache",
    )
    parser.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="torch device"
    )
    parser.add_argument(
        "--no-dedup", action="store_true", help="keep near-duplicate training profiles"
    )
    parser.add_argument(
        "--no-quantile",
        action="store_true",
        help="skip quantile normalisation (landmark and target blocks)",
    )
    parser.add_argument(
        "--checkpoint-dir",
        metavar="DIR",
        help="checkpoints for resuming torch training (default: .MODEL.checkpoints next to "
        "--out, removed after a successful run)",
    )
    add_nonfinite(parser)
    add_platform_arguments(parser)
    parser.add_argument(
        "--landmarks-from", metavar="FILE",
        help="train on the panel's landmarks that FILE measures (e.g. a study on an older "
        "array); the others become targets. FILE is harmonised like a training file, with "
        "--landmarks-annotation if its probes need one",
    )
    parser.add_argument(
        "--landmarks-annotation", metavar="FILE|GPLxxx",
        help="probe annotation of the --landmarks-from file (default: its own, or the "
        "platform it names when cached)",
    )
    big = parser.add_argument_group(
        "large training sets",
        "Above --memory-limit the training data are streamed from disk in blocks (models: "
        + ", ".join(OUT_OF_CORE) + ").",
    )
    big.add_argument(
        "--memory-limit", metavar="SIZE", default=None,
        help="memory the training may use, e.g. 8G, 500M or 50%% (default: 50%% of this "
        "machine's memory); larger training data are trained out of core",
    )
    big.add_argument("--out-of-core", action="store_true",
                     help="stream the training data even when they would fit in memory")
    big.add_argument("--sample-attributes", metavar="FILE",
                     help="sample attribute table joined to the training samples (first "
                     "column = sample id), e.g. GTEx's SampleAttributesDS.txt: its SMTSD "
                     "tissue becomes each sample's group")
    a4 = parser.add_argument_group(
        "ARCHS4 files",
        "Which samples of an ARCHS4 .h5 file to train on (filters of different kinds "
        "combine with AND). By default every bulk sample (singlecellprobability < 0.5).",
    )
    add_archs4_arguments(a4)


def training_paths(paths: list[str], data_dir: Any) -> list[str]:
    """``--train`` files; a name that is no file but a registered download (its file name,
    e.g. human_gene_v2.latest.h5, or source name) is found in the data folder or cache."""
    out = []
    for path in paths:
        if Path(path).exists():
            out.append(path)
            continue
        found = locate_registered_file(Path(path).name, data_dir=data_dir)
        if found is None:
            out.append(path)  # reported as missing when read
        elif found[1] is None:
            raise DataUnavailableError(
                f"{path}: no such file, and data source {found[0]!r} is not in the data "
                f"folder or cache: run `geneinfer data fetch {found[0]}` first")
        else:
            out.append(str(found[1]))
    return out


def parse_params(items: list[str]) -> dict[str, Any]:
    """``["alpha=10", "act=relu"]`` -> ``{"alpha": 10, "act": "relu"}`` (JSON values if valid)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise ConfigError(f"--param {item!r}: expected KEY=VALUE, e.g. max_epochs=50")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if isinstance(value, list):
            value = tuple(value)
        out[key] = value
    return out


def run(args: argparse.Namespace) -> int:
    check_model_path(args.out)
    params = parse_params(args.param)
    fingerprint = fit_fingerprint(args, params)
    out = Path(args.out)
    with output_errors(out.parent, what="create the folder"):
        out.parent.mkdir(parents=True, exist_ok=True)  # for the lock file
    if not _is_main_process():
        return _train(args, params, fingerprint)
    # one training per --out at a time; a second one stops at once naming this one's pid
    with exclusive_lock(out, what="training a model into"):
        check_replaceable(out, fingerprint, overwrite=args.overwrite)
        remove_stale_temps(out)  # of a save that was killed
        return _train(args, params, fingerprint)


def _train(args: argparse.Namespace, params: dict[str, Any], fingerprint: str) -> int:
    annotation = annotation_option(args)
    budget = memory_budget(args.memory_limit)
    selection = archs4_selection(args)
    inputs = [TrainingInput(p, selection=selection, soft_platform=args.platform)
              for p in training_paths(args.train, args.data_dir)]
    panel: Any = args.panel
    if args.landmarks_from:
        panel = panel_measured_in(args.panel, args.landmarks_from,
                                  annotation=args.landmarks_annotation, scale=None,
                                  data_dir=args.data_dir)
    # Torch models checkpoint here so an interrupted run resumes when the same command is
    # rerun (checkpoints are fingerprinted by data and settings, so stale ones are ignored).
    ckpt = Path(args.checkpoint_dir) if args.checkpoint_dir else _default_checkpoints(args.out)
    model = train_inputs(
        inputs,
        memory_limit=budget,
        out_of_core=True if args.out_of_core else None,
        sample_attributes=args.sample_attributes,
        model=args.model,
        panel=panel,
        valid=args.valid,
        valid_fraction=args.valid_fraction,
        groups=args.groups,
        refit={"auto": "auto", "yes": True, "no": False}[args.refit],
        params=params,
        scale=args.scale,
        annotation=annotation,
        data_dir=args.data_dir,
        dedup=not args.no_dedup,
        quantile=not args.no_quantile,
        device=args.device,
        checkpoint_dir=ckpt,
        progress=args.progress,
        nonfinite=args.nonfinite,
    )
    try:
        if not _is_main_process():
            return 0  # under torchrun every rank trains; rank 0 alone writes the model
        model.info[FIT_FINGERPRINT] = fingerprint
        path = model.save(args.out)
        if not args.checkpoint_dir:
            shutil.rmtree(ckpt, ignore_errors=True)  # the saved model supersedes them
        if not args.quiet:
            print(format_summary(model, path))
        return 0
    finally:
        finish_distributed()  # under torchrun every rank waits for rank 0's save here


def fit_fingerprint(args: argparse.Namespace, params: dict[str, Any]) -> str:
    """What identifies a fit: every training input (path, size, modification time) and
    every setting that changes the model. A rerun of the same command has the same one."""
    files = [*args.train, *([args.valid] if args.valid else [])]
    files += [f for f in (args.panel, args.annotation, args.landmarks_from,
                          args.landmarks_annotation, args.sample_attributes, args.select_samples)
              if f and Path(f).is_file()]
    settings = {
        "inputs": [_file_identity(f) for f in files],
        "model": args.model, "panel": args.panel, "params": sorted(params.items()),
        "valid": args.valid, "valid_fraction": args.valid_fraction, "scale": args.scale,
        "data_dir": args.data_dir, "device": args.device, "dedup": not args.no_dedup,
        "quantile": not args.no_quantile, "nonfinite": args.nonfinite,
        "groups": args.groups, "refit": args.refit, "annotation": args.annotation,
        "platform": args.platform, "landmarks_from": args.landmarks_from,
        "landmarks_annotation": args.landmarks_annotation,
        "sample_attributes": args.sample_attributes, "out_of_core": args.out_of_core,
        "select": [args.select_series, args.select_search, args.select_samples,
                   args.include_single_cell],
    }
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _file_identity(path: str) -> list[object]:
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return [str(p), None, None]
    return [str(p.resolve()), st.st_size, st.st_mtime_ns]


def check_replaceable(out: Path, fingerprint: str, *, overwrite: bool) -> None:
    """An existing model at ``out`` may be replaced only with ``--overwrite`` or by a rerun
    of the same training (same fingerprint): a different run must not silently replace it."""
    if overwrite or not (out / MODEL_JSON).is_file():
        return
    try:
        doc = read_model_doc(out)
    except GeneinferError:
        doc = None
    info = doc.get("info") if isinstance(doc, dict) else None
    previous = info.get(FIT_FINGERPRINT) if isinstance(info, dict) else None
    if previous != fingerprint:
        raise ConfigError(
            f"{out} already holds a model trained on other data or settings; choose another "
            "--out, or add --overwrite to replace it")


def _is_main_process() -> bool:
    """False on the non-zero ranks of a ``torchrun`` launch (they hold the same weights)."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def _default_checkpoints(out: str) -> Path:
    p = Path(out)
    return p.parent / f".{p.name}.checkpoints"


def format_summary(model: Any, path: Any = None) -> str:
    """A few lines: genes found/missing, samples, validation MAE and r."""
    info = model.info
    panel = info.get("panel", {})
    missing = panel.get("landmarks_missing", [])
    lines = [f"input        {item['summary']}" for item in info.get("inputs", [])]
    lines += [
        f"model        {info.get('model')} ({model.n_landmarks} landmarks -> "
        f"{model.n_targets} targets)",
        f"panel        {panel.get('panel')}: {panel.get('landmarks_found')} of "
        f"{panel.get('landmarks_in_panel')} landmarks found",
    ]
    if missing:
        shown = ", ".join(missing[:15]) + (
            f" and {len(missing) - 15} more" if len(missing) > 15 else ""
        )
        lines.append(f"missing      {len(missing)} landmarks: {shown}")
    if panel.get("targets_from_data"):
        lines.append(f"targets      {panel.get('targets')} (all non-landmark genes in the data)")
    else:
        lines.append(
            f"targets      {panel.get('targets')} of {panel.get('targets_in_panel')} in panel"
        )
    dedup = info.get("dedup", {})
    dd = f", {dedup.get('removed', 0)} duplicates removed" if dedup.get("enabled") else ""
    groups = info.get("groups", {})
    lines.append(
        f"samples      {info.get('n_train_samples')} train in {groups.get('n_groups', 1)} "
        f"group(s) of {groups.get('column', 'dataset')}{dd}"
    )
    lines.append(f"selection    {_selection_text(model)}")
    lines.append(f"scored on    {info.get('n_valid_samples')} profiles: {info.get('validation')}")
    ooc = info.get("out_of_core")
    if ooc:
        rates = ", ".join(f"{name} {p['profiles_per_s']:,.0f} profiles/s"
                          for name, p in ooc.get("passes", {}).items() if p.get("profiles_per_s"))
        lines.append(f"out of core  {ooc['blocks']} blocks of up to {ooc['block_rows']} "
                     f"profiles in {ooc['seconds']:.0f} s" + (f" ({rates})" if rates else ""))
    lines.append(
        f"validation   MAE {_fmt(info.get('valid_mae'))} log2 "
        f"({_fmt(info.get('valid_mae_std'))} standardized), "
        f"median r {_fmt(info.get('valid_r_median'))}"
    )
    if path is not None:
        lines.append(f"saved        {path}")
    return "\n".join(lines)


def _selection_text(model: Any) -> str:
    """How the hyper-parameters were chosen, and the chosen penalty where there is one."""
    sel = model.info.get("selection") or {}
    method = sel.get("method", "none")
    text = {"leave-one-group-out": f"leave-one-group-out over {sel.get('n_groups')} groups",
            "group-k-fold": f"{sel.get('n_folds')} folds of whole groups",
            "gcv": "generalised cross-validation within the data (one group)",
            "holdout": "a held-out share of the profiles",
            "group-holdout": "held-out groups (early stopping)"}.get(method, method)
    alpha = getattr(model.estimator, "alpha_", None)
    if isinstance(alpha, (int, float)):
        text += f"; alpha {alpha:.4g}"
    return text


def _fmt(x: Any) -> str:
    return "n/a" if x is None else f"{x:.4f}"
