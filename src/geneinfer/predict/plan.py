"""What one prediction run needs, shared by single-process, worker and torchrun runs.

* :class:`Predictor` - the model side: a ``predict_fn`` from log2 landmark profiles to log2
  targets plus gene ids, built from a model directory or an
  :class:`~geneinfer.models.bundle.InferenceModel` (:func:`as_predictor`).
* :class:`Plan` - the input side, fixed for a run: the input's
  :class:`~geneinfer.preprocess.Harmonizer` (scale, gene ids) and the model's landmarks among
  its genes (:class:`~geneinfer.preprocess.LandmarkInputs`), the output genes, the blocks and
  a fingerprint for resuming (:func:`make_plan`).
* :func:`prepare_output` and :func:`run_blocks` - the unfinished output file and the loop
  that predicts blocks into it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from geneinfer import __version__
from geneinfer.errors import ConfigError, GeneinferError, InputFormatError
from geneinfer.genes import GeneIdMap
from geneinfer.io import NONFINITE_POLICIES, BlockReader
from geneinfer.io.preallocated import RowWriter, create_matrix_file
from geneinfer.models.bundle import InferenceModel
from geneinfer.predict import resume
from geneinfer.preprocess import MAX_IMPUTE_FRACTION, Harmonizer, LandmarkInputs
from geneinfer.preprocess.harmonize import MISSING_POLICIES
from geneinfer.utils.files import output_errors

logger = logging.getLogger(__name__)

#: samples predicted and written at once inside a block (bounds memory: 2048 x 22,268 float32
#: is 182 MB; a whole 10,000-sample block would be 890 MB)
DEFAULT_BATCH = 2048
#: bump when the output layout changes, so old partial files are not resumed
LAYOUT_VERSION = 3
#: validation r from which ``pr_is_reliable`` marks an inferred gene (unless set)
DEFAULT_RELIABLE_R = 0.3
#: the ``values`` column-metadata of outputs (read back as log2 by geneinfer.io)
INFERRED_VALUES = "log2 (inferred by geneinfer)"
WITH_LANDMARKS_VALUES = "log2 (measured landmarks and genes inferred by geneinfer)"


def say(message: str, *, progress: bool) -> None:
    """Tell the user (stderr) when running interactively; log otherwise."""
    logger.info(message)
    if progress:
        print(f"geneinfer: {message}", file=sys.stderr, flush=True)


def warn(message: str, *, progress: bool) -> None:
    """Tell the user even without progress messages (``--no-progress``): a warning."""
    if progress:
        say(message, progress=True)
    else:
        logger.warning("%s", message)


def progress_bar(total: int, *, enabled: bool, initial: int = 0, desc: str = "predict") -> tqdm:
    """The prediction progress bar (profiles, profiles/s, time left)."""
    return tqdm(total=total, initial=initial, unit="profiles", unit_scale=True, desc=desc,
                disable=not enabled, smoothing=0.1, dynamic_ncols=True)


# ---------------------------------------------------------------------- the model side
@dataclass(eq=False)
class Predictor:
    """What prediction needs from a model.

    Parameters
    ----------
    predict_fn
        Maps ``(n, n_landmarks)`` float32 log2 profiles (landmark order) to ``(n, n_targets)``
        log2 predictions. Must be deterministic for the same rows.
    landmark_ids, target_ids
        Gene ids of the model's inputs and outputs (Entrez ids as strings on L1000 data).
    landmark_symbols, target_symbols
        Gene symbols in the same order (used in messages and outputs).
    gene_metrics
        Per-target validation metrics (index = target ids; ``valid_r``, ``valid_mae``).
    landmark_means
        Training mean of each landmark, used by ``missing_landmarks="impute"``.
    gene_id_kind
        Kind of the model's gene ids; inputs are harmonised to it.
    checksum
        Identifies the model for resuming; computed from a probe prediction if not given.
    model
        The original model object, handed to worker processes.
    """

    predict_fn: Callable[[np.ndarray], np.ndarray]
    landmark_ids: list[str]
    target_ids: list[str]
    landmark_symbols: list[str] | None = None
    target_symbols: list[str] | None = None
    gene_metrics: pd.DataFrame | None = None
    landmark_means: np.ndarray | None = None
    gene_id_kind: str = "entrez"
    checksum: str | None = None
    model: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.landmark_ids = [str(g) for g in self.landmark_ids]
        self.target_ids = [str(g) for g in self.target_ids]
        self.landmark_symbols = [str(s) for s in (self.landmark_symbols or self.landmark_ids)]
        self.target_symbols = [str(s) for s in (self.target_symbols or self.target_ids)]
        if self.landmark_means is not None:
            self.landmark_means = np.asarray(self.landmark_means, dtype=np.float32)
        if self.checksum is None:
            self.checksum = self._probe_checksum()

    def known_genes(self) -> GeneIdMap:
        """The model's genes with their symbols, trusted first when inputs are harmonised."""
        return GeneIdMap.from_genes([*self.landmark_ids, *self.target_ids],
                                    [*self.landmark_symbols, *self.target_symbols],
                                    kind=self.gene_id_kind)

    def _probe_checksum(self) -> str:
        """Hash of the gene ids and of predictions on a fixed probe input.

        Any change of weights changes the predictions, so this identifies the model without
        knowing how it is stored.
        """
        rng = np.random.default_rng(12345)
        base = self.landmark_means if self.landmark_means is not None else 8.0
        probe = (base + rng.standard_normal((4, len(self.landmark_ids)))).astype(np.float32)
        out = np.ascontiguousarray(self.predict_fn(probe), dtype=np.float32)
        h = hashlib.sha256()
        h.update(json.dumps([self.landmark_ids, self.target_ids]).encode())
        h.update(np.round(out, 4).tobytes())
        return h.hexdigest()

    def __getstate__(self) -> dict[str, Any]:
        # worker processes rebuild predict_fn from the model object (bound methods of
        # torch-backed estimators pickle poorly); plain callables are sent as they are
        state = dict(self.__dict__)
        if self.model is not None:
            state["predict_fn"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.predict_fn is None and self.model is not None:
            self.predict_fn = self.model.predict_log2


def _model_dir_checksum(path: Path) -> str:
    h = hashlib.sha256()
    h.update((path / "model.json").read_bytes())  # it holds the weights' SHA-256
    return h.hexdigest()


def as_predictor(model: Any) -> Predictor:
    """A :class:`Predictor` from a model directory, an InferenceModel or a Predictor."""
    if isinstance(model, Predictor):
        return model
    checksum = None
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        model = InferenceModel.load(path, device="cpu")
        checksum = _model_dir_checksum(path)
    if not hasattr(model, "predict_log2") or not hasattr(model, "landmark_ids"):
        raise ConfigError(
            f"{type(model).__name__} is not a prediction model (needs predict_log2 and "
            "landmark_ids); pass a model directory or an InferenceModel"
        )
    return Predictor(
        predict_fn=model.predict_log2,
        landmark_ids=list(model.landmark_ids),
        target_ids=list(model.target_ids),
        landmark_symbols=getattr(model, "landmark_symbols", None),
        target_symbols=getattr(model, "target_symbols", None),
        gene_metrics=getattr(model, "gene_metrics", None),
        landmark_means=getattr(model, "landmark_means", None),
        gene_id_kind=getattr(model, "gene_id_kind", "entrez") or "entrez",
        checksum=checksum,
        model=model,
    )


# ---------------------------------------------------------------------- the plan
@dataclass
class PlanOptions:
    """The options of a prediction run that every process must agree on.

    Attributes
    ----------
    block_size
        Samples per block: the unit of resuming and of sharding.
    batch_size
        Samples predicted at once inside a block (memory bound); default 2048.
    missing_landmarks
        ``"error"`` or ``"impute"`` (absent landmarks and missing values).
    min_r
        Keep only target genes whose validation r is at least this.
    reliable_r
        ``pr_is_reliable`` marks target genes whose validation r is at least this (default:
        ``min_r`` when given, else :data:`DEFAULT_RELIABLE_R`).
    with_reliability
        Add ``valid_r`` and ``valid_mae`` to the output's gene metadata.
    include_landmarks
        Write the landmark profiles the model used (measured, log2; absent ones imputed) and
        the inferred genes in one file, as CMap's full profiles (``pr_is_lm`` tells them
        apart; landmarks first).
    var_names
        h5ad outputs: ``"symbol"`` (unique gene symbols as ``var_names``, the ids in
        ``var["pr_gene_id"]``, as scanpy expects) or ``"id"``.
    fmt
        Output format.
    scale, annotation, data_dir
        How to read the input (:func:`geneinfer.preprocess.harmonize`).
    max_impute
        With ``missing_landmarks="impute"``: the largest share of the model's landmarks that
        may be absent from the input (default 10 %).
    nonfinite
        The readers' policy for infinite input values: ``"error"`` or ``"missing"``.
    """

    block_size: int = 10000
    batch_size: int | None = None
    missing_landmarks: str = "error"
    min_r: float | None = None
    reliable_r: float | None = None
    with_reliability: bool = False
    include_landmarks: bool = False
    var_names: str = "symbol"
    fmt: str = "gctx"
    scale: str | None = None
    annotation: Any = None
    data_dir: str | None = None
    max_impute: float = MAX_IMPUTE_FRACTION
    nonfinite: str = "error"

    def __post_init__(self) -> None:
        """The same checks as the command line's, for callers of the Python API."""
        for name in ("block_size", "batch_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ConfigError(f"{name} must be a whole number of at least 1, got {value!r}")
        if self.min_r is not None and not -1.0 <= float(self.min_r) <= 1.0:
            raise ConfigError(f"min_r must be between -1 and 1, got {self.min_r}")
        if not 0.0 <= float(self.max_impute) <= 1.0:
            raise ConfigError(f"max_impute must be between 0 and 1, got {self.max_impute}")
        if self.missing_landmarks not in MISSING_POLICIES:
            raise ConfigError(f"missing_landmarks must be one of {', '.join(MISSING_POLICIES)}, "
                              f"not {self.missing_landmarks!r}")
        if self.nonfinite not in NONFINITE_POLICIES:
            raise ConfigError(f"nonfinite must be one of {', '.join(NONFINITE_POLICIES)}, not "
                              f"{self.nonfinite!r}")

    @property
    def reliability_threshold(self) -> float:
        if self.reliable_r is not None:
            return float(self.reliable_r)
        return float(self.min_r) if self.min_r is not None else DEFAULT_RELIABLE_R

    def fingerprint(self) -> dict[str, Any]:
        """What of these options changes the output's bytes (for resuming)."""
        ann = self.annotation
        return {"block_size": self.block_size, "missing_landmarks": self.missing_landmarks,
                "min_r": self.min_r, "reliable_r": self.reliability_threshold,
                "with_reliability": self.with_reliability,
                "include_landmarks": self.include_landmarks, "var_names": self.var_names,
                "format": self.fmt, "scale": self.scale,
                "annotation": ann if isinstance(ann, (str, type(None))) else "table",
                "data_dir": self.data_dir, "nonfinite": self.nonfinite}


@dataclass(eq=False)
class Plan:
    """Everything fixed for one prediction run (the same in every worker)."""

    source: BlockReader
    pred: Predictor
    inputs: LandmarkInputs
    target_idx: np.ndarray | None  # None = all targets
    gene_table: pd.DataFrame
    block_size: int
    batch_size: int
    fingerprint: str
    include_landmarks: bool = False
    var_names: str = "symbol"
    n_imputed: int = 0
    #: non-finite values read as missing: those of a text input (parsed once, whole) plus
    #: those in the blocks read for prediction (GCTX/h5ad, read as predicted)
    n_nonfinite: int = 0

    @property
    def n_samples(self) -> int:
        return self.source.n_samples

    @property
    def n_blocks(self) -> int:
        return max(1, -(-self.n_samples // self.block_size))

    def block_range(self, block: int) -> tuple[int, int]:
        start = block * self.block_size
        return start, min(self.n_samples, start + self.block_size)

    def landmarks(self, start: int, stop: int) -> np.ndarray:
        """The ``(stop - start, n_landmarks)`` log2 landmark matrix of samples start..stop."""
        before = self.source.nonfinite.count
        raw = self.source.read(start, stop, self.inputs.read_cols)
        self.n_nonfinite += self.source.nonfinite.count - before
        n_cols = len(self.source.gene_ids) if self.inputs.read_cols is None \
            else len(self.inputs.read_cols)
        if raw.ndim != 2 or raw.shape != (stop - start, n_cols):
            raise InputFormatError(
                self.source.source, f"block of samples {start}..{stop} has shape {raw.shape}",
                expected=f"({stop - start}, {n_cols})",
            )
        ids = self.source.sample_ids()[start:stop]
        X, n_imputed = self.inputs.landmarks(raw, sample_ids=ids,
                                             where=f"samples {start}..{stop}")
        self.n_imputed += n_imputed
        return X

    def predict(self, X: np.ndarray) -> np.ndarray:
        Y = np.asarray(self.pred.predict_fn(X), dtype=np.float32)
        if Y.shape != (X.shape[0], len(self.pred.target_ids)):
            raise GeneinferError(
                f"model returned shape {Y.shape} for {X.shape[0]} samples, expected "
                f"({X.shape[0]}, {len(self.pred.target_ids)})"
            )
        Y = Y if self.target_idx is None else Y[:, self.target_idx]
        return np.hstack([X, Y]) if self.include_landmarks else Y

    def batches(self, start: int, stop: int) -> Iterator[tuple[int, int, np.ndarray]]:
        """``(s, e, predictions)`` for the sub-batches of samples start..stop."""
        for s in range(start, stop, self.batch_size):
            e = min(stop, s + self.batch_size)
            yield s, e, self.predict(self.landmarks(s, e))


def _select_targets(pred: Predictor, min_r: float | None, progress: bool) -> np.ndarray | None:
    if min_r is None:
        return None
    gm = pred.gene_metrics
    if gm is None or "valid_r" not in gm or gm["valid_r"].isna().all():
        raise ConfigError("this model has no per-gene validation metrics (valid_r); "
                          "cannot use --min-r")
    r = gm["valid_r"].reindex(pd.Index(pred.target_ids)).to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        keep = np.flatnonzero(r >= min_r)
    if not len(keep):
        raise ConfigError(
            f"no target gene has validation r >= {min_r} (best is {np.nanmax(r):.3f})"
        )
    say(f"{len(keep)} of {len(r)} target genes pass valid_r >= {min_r}", progress=progress)
    return keep


def _gene_table(pred: Predictor, idx: np.ndarray | None, options: PlanOptions) -> pd.DataFrame:
    """Row metadata of the output, in CMap's names: ``pr_gene_id``, ``pr_gene_symbol``,
    ``pr_is_lm``, ``pr_is_reliable`` (and ``valid_r``/``valid_mae`` when asked)."""
    gm = pred.gene_metrics if pred.gene_metrics is not None else pd.DataFrame()
    ids = pd.Index(pred.target_ids)
    r = (gm["valid_r"].reindex(ids) if "valid_r" in gm else pd.Series(np.nan, index=ids))
    targets = pd.DataFrame({
        "pr_gene_symbol": pred.target_symbols,
        "pr_is_lm": np.zeros(len(ids), dtype=np.int64),
        "pr_is_reliable": (r.to_numpy(dtype=float) >= options.reliability_threshold
                           ).astype(np.int64),
    }, index=ids)
    if options.with_reliability:
        for col in ("valid_r", "valid_mae"):
            values = gm[col].reindex(ids) if col in gm else pd.Series(np.nan, index=ids)
            targets[col] = values.to_numpy(dtype=np.float64)
    if idx is not None:
        targets = targets.iloc[idx]
    table = targets
    if options.include_landmarks:
        landmarks = pd.DataFrame({"pr_gene_symbol": pred.landmark_symbols, "pr_is_lm": 1,
                                  "pr_is_reliable": 1}, index=pd.Index(pred.landmark_ids))
        table = pd.concat([landmarks, targets])
    table.insert(0, "pr_gene_id", _id_column(table.index))
    table.index.name = "gene_id"
    return table


def _id_column(ids: pd.Index) -> np.ndarray:
    """Gene ids as CMap stores ``pr_gene_id``: integers when they are Entrez ids."""
    texts = ids.astype(str)
    return texts.astype(np.int64).to_numpy() if texts.str.fullmatch(r"\d+").all() \
        else np.asarray(texts, dtype=object)


def make_plan(pred: Predictor, source: BlockReader, options: PlanOptions, *,
              progress: bool = False) -> Plan:
    """Harmonise the input, find the landmarks, choose targets and compute the resume
    fingerprint (only the first samples are read, to decide the scale)."""
    if options.block_size < 1:
        raise ConfigError(f"block size must be a positive number of samples, got "
                          f"{options.block_size}")
    if options.var_names not in ("symbol", "id"):
        raise ConfigError(f"var_names must be 'symbol' or 'id', not {options.var_names!r}")
    if source.n_samples == 0:
        raise InputFormatError(source.source, "no samples", expected="at least one profile")
    parsed = source.nonfinite.count  # a text input's, counted as it was parsed
    harmonizer = Harmonizer.for_reader(source, scale=options.scale,
                                       annotation=options.annotation, known=pred.known_genes(),
                                       data_dir=options.data_dir, to=pred.gene_id_kind)
    inputs = LandmarkInputs.plan(harmonizer, pred.landmark_ids,
                                 landmark_symbols=pred.landmark_symbols,
                                 means=pred.landmark_means, missing=options.missing_landmarks,
                                 max_impute_fraction=options.max_impute)
    harmonizer.announce()  # converted or re-keyed: said once, as training says it
    if inputs.n_absent:  # always told: these predictions rest partly on training means
        warn(f"{inputs.n_absent} of {len(pred.landmark_ids)} landmark genes missing in "
             f"{source.source}; imputed from training means", progress=progress)
    target_idx = _select_targets(pred, options.min_r, progress)
    table = _gene_table(pred, target_idx, options)
    fp = {"layout": LAYOUT_VERSION, "input": source.fingerprint(), "model": pred.checksum,
          "options": options.fingerprint()}
    fingerprint = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()
    return Plan(source, pred, inputs, target_idx, table, options.block_size,
                min(options.block_size, options.batch_size or DEFAULT_BATCH), fingerprint,
                options.include_landmarks, options.var_names, n_nonfinite=parsed)


# ---------------------------------------------------------------------- running blocks
@dataclass
class PredictResult:
    """Summary of a finished :func:`geneinfer.predict.predict_file` run."""

    output: Path
    n_samples: int
    n_genes: int
    n_imputed_values: int = 0
    n_imputed_landmarks: int = 0
    resumed_blocks: int = 0
    seconds: float = 0.0
    #: profiles predicted by this run (resumed blocks excluded) and the time that took
    #: (reading, predicting, writing; not loading the model or planning)
    n_predicted: int = 0
    predict_seconds: float = 0.0
    #: non-finite input values read as missing (``--nonfinite missing``)
    n_nonfinite: int = 0

    @property
    def rate(self) -> float:
        """Profiles per second while predicting (what the progress bar shows)."""
        return self.n_predicted / self.predict_seconds if self.predict_seconds else float("nan")


def prepare_output(plan: Plan, output: Path, fmt: str, *, progress: bool) -> set[int]:
    """Create ``OUT.partial`` or reopen a matching one; return the blocks already finished."""
    part = resume.partial_path(output)
    if part.exists():
        header = resume.read_partial_header(part, fmt)
        if header is not None and header[0] == plan.fingerprint:
            done = resume.ProgressLog.finished_blocks(output, plan.fingerprint)
            if done:
                say(f"resuming {part}: {len(done)} of {plan.n_blocks} blocks already done",
                    progress=progress)
            return done
        say(f"{part} is unfinished output of a different input, model or options (or is "
            "damaged); starting over", progress=progress)
    with output_errors(output):
        resume.remove_partial(output)
    create_matrix_file(
        part, fmt=fmt, gene_table=output_gene_table(plan, fmt),
        sample_ids=plan.source.sample_ids(), sample_columns=output_sample_columns(plan),
        attrs={**resume.partial_attrs(plan.fingerprint), **provenance_attrs(plan)},
        uns={"geneinfer": provenance(plan)},
    )
    return set()


def output_values(plan: Plan) -> str:
    """The output's ``values`` text: what its numbers are (read back as the scale)."""
    return WITH_LANDMARKS_VALUES if plan.include_landmarks else INFERRED_VALUES


def output_sample_columns(plan: Plan) -> list[tuple[str, Any]]:
    """The input's sample metadata, with ``values`` saying what the output holds (the
    project's GCT/GCTX convention for the scale, read back by geneinfer.io)."""
    n = plan.n_samples
    text = output_values(plan).encode()
    columns = [(name, get) for name, get in plan.source.sample_columns() if name != "values"]
    return [*columns, ("values", lambda: np.full(n, text, dtype=f"S{len(text)}"))]


def output_gene_table(plan: Plan, fmt: str) -> pd.DataFrame:
    """The gene table as written: h5ad outputs get unique symbols as ``var_names`` (what
    scanpy looks genes up by) unless ``var_names="id"``."""
    if fmt != "h5ad" or plan.var_names == "id":
        return plan.gene_table
    return plan.gene_table.set_axis(unique_names(plan.gene_table["pr_gene_symbol"],
                                                 plan.gene_table.index))


def unique_names(symbols: pd.Series, ids: pd.Index) -> pd.Index:
    """Symbols (the id where unknown), repeated ones suffixed ``-1``, ``-2`` as anndata's
    ``var_names_make_unique`` does."""
    names = [str(s) if isinstance(s, str) and s and s.lower() != "nan" else str(i)
             for s, i in zip(symbols, ids)]
    seen: dict[str, int] = {}
    out = []
    for name in names:
        k = seen.get(name, 0)
        out.append(name if k == 0 else f"{name}-{k}")
        seen[name] = k + 1
    return pd.Index(out, name="gene_symbol")


def provenance(plan: Plan) -> dict[str, Any]:
    """What made the output: geneinfer version, model kind and training summary."""
    model = plan.pred.model
    info = getattr(model, "info", {}) or {}
    return {
        "geneinfer_version": __version__,
        "values": output_values(plan),
        "scale": "log2",
        "gene_id_kind": plan.pred.gene_id_kind,
        "model": str(getattr(model, "kind", info.get("model", "")) or ""),
        "model_checksum": plan.pred.checksum,
        "training": {k: info[k] for k in ("training_files", "n_train_samples", "panel",
                                          "valid_r_median", "created") if k in info},
        "input": plan.source.source,
        "n_imputed_landmarks": plan.inputs.n_absent,
    }


def provenance_attrs(plan: Plan) -> dict[str, str]:
    """:func:`provenance` as HDF5 root attributes of a GCTX (one JSON text)."""
    return {"geneinfer_provenance": json.dumps(provenance(plan), default=str)}


def run_blocks(
    plan: Plan,
    output: Path,
    fmt: str,
    blocks: list[int],
    *,
    rank: int = 0,
    bar: Any = None,
) -> None:
    """Predict and write ``blocks`` into ``OUT.partial``, recording each finished block.

    Writes run in a background thread so the disk works while the next sub-batch is
    predicted; at most two sub-batches are in flight (memory stays bounded).
    """
    part = resume.partial_path(output)
    header = resume.read_partial_header(part, fmt)
    if header is None or header[0] != plan.fingerprint:
        raise GeneinferError(f"{part}: unfinished output missing or not from this run")
    _, offset, shape = header
    with output_errors(part):
        log = resume.ProgressLog(output, rank=rank, fingerprint=plan.fingerprint)
    pending: deque[Future] = deque()
    failed: list[BaseException] = []

    def write(writer: RowWriter, start: int, rows: np.ndarray) -> None:
        if failed:
            return
        try:
            writer.write_rows(start, rows)
        except BaseException as exc:
            failed.append(exc)
            raise

    def mark(block: int) -> None:
        if not failed:  # a block is recorded only if all of its rows were written
            log.mark_done(block)

    try:
        with RowWriter(part, offset=offset, shape=shape) as writer, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="gi-write") as pool:
            for block in blocks:
                start, stop = plan.block_range(block)
                for s, e, Y in plan.batches(start, stop):
                    while len(pending) >= 2:
                        pending.popleft().result()
                    pending.append(pool.submit(write, writer, s, Y))
                    if bar is not None:
                        bar.update(e - s)
                # FIFO on one thread: the block is recorded after its rows are written
                pending.append(pool.submit(mark, block))
            while pending:
                pending.popleft().result()
    finally:
        for fut in pending:
            fut.cancel()
        log.close()


def finish_output(plan: Plan, output: Path, done_before: set[int], *, t0: float,
                  t_predict: float, progress: bool) -> PredictResult:
    """Check every block is recorded, then move ``OUT.partial`` to ``OUT``."""
    missing = set(range(plan.n_blocks)) - resume.ProgressLog.finished_blocks(output,
                                                                              plan.fingerprint)
    if missing:
        raise GeneinferError(
            f"{resume.partial_path(output)}: blocks {sorted(missing)[:10]} were not written; "
            "rerun the same command to resume"
        )
    with output_errors(output):
        resume.finish(output)
    report_counts(plan, progress=progress)
    now = time.perf_counter()
    n_before = sum(plan.block_range(b)[1] - plan.block_range(b)[0] for b in done_before)
    return PredictResult(output, plan.n_samples, len(plan.gene_table), plan.n_imputed,
                         plan.inputs.n_absent, len(done_before), now - t0,
                         n_predicted=plan.n_samples - n_before,
                         predict_seconds=now - t_predict, n_nonfinite=plan.n_nonfinite)


def report_counts(plan: Plan, *, progress: bool) -> None:
    """Say how many values were imputed or read as missing (warnings: always told)."""
    if plan.n_nonfinite:
        warn(f"{plan.n_nonfinite} non-finite values in {plan.source.source} read as missing "
             "(--nonfinite missing)", progress=progress)
    if plan.n_imputed:
        warn(f"{plan.n_imputed} missing landmark values imputed from training means",
             progress=progress)
