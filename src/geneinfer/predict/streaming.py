"""Streaming, resumable prediction of target genes for inputs of any size.

:func:`predict_file` reads the input in blocks of samples, maps the input genes onto the
model's landmarks, predicts, and writes each block straight into a preallocated GCTX/h5ad
output (see :mod:`geneinfer.predict.writers`); memory is bounded by one sub-batch, whatever
the number of profiles. A killed run resumes from its last finished block when the same
command is run again; with ``workers``/``torchrun`` each rank handles a contiguous range of
blocks (see :mod:`geneinfer.predict.sharded`).

The core is generic over :class:`Predictor` (a ``predict_fn`` mapping log2 landmark profiles
to log2 targets, plus gene ids), built from a saved model directory, an
:class:`~geneinfer.models.bundle.InferenceModel` or any object with ``predict_log2``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from geneinfer.errors import ConfigError, GeneinferError, InputFormatError, MissingGenesError
from geneinfer.expression import ExpressionData
from geneinfer.predict import writers as W
from geneinfer.predict.inputs import BlockSource, open_source

logger = logging.getLogger(__name__)

#: samples predicted and written at once inside a block (bounds memory: 2048 x 22,268 float32
#: is 182 MB; a whole 10,000-sample block would be 890 MB)
DEFAULT_BATCH = 2048
#: in-memory outputs (GCT/TSV/CSV) larger than this must go to GCTX/h5ad instead
_MAX_MEMORY_OUTPUT_BYTES = 2 * 1024**3
#: bump when the output layout changes, so old partial files are not resumed
_LAYOUT_VERSION = 1
_ID_COLUMNS = ("entrez", "pr_gene_id", "gene_id", "entrez_id", "ensembl", "probe", "pr_id")
_SYMBOL_COLUMNS = ("symbol", "pr_gene_symbol", "gene_symbol")


def _say(message: str, *, progress: bool) -> None:
    """Tell the user (stderr) when running interactively; log otherwise."""
    logger.info(message)
    if progress:
        print(f"geneinfer: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- the model side
@dataclass(eq=False)
class Predictor:
    """What streaming prediction needs from a model.

    Parameters
    ----------
    predict_fn
        Maps ``(n, n_landmarks)`` float32 log2 profiles (landmark order) to ``(n, n_targets)``
        log2 predictions. Must be deterministic for the same rows.
    landmark_ids, target_ids
        Gene ids of the model's inputs and outputs (Entrez ids as strings on L1000 data).
    landmark_symbols, target_symbols
        Gene symbols in the same order (used for matching by symbol and in messages).
    gene_metrics
        Per-target validation metrics (index = target ids; ``valid_r``, ``valid_mae``).
    landmark_means
        Training mean of each landmark, used by ``missing_landmarks="impute"``.
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
        from geneinfer.models.bundle import InferenceModel

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
        checksum=checksum,
        model=model,
    )


# ---------------------------------------------------------------------- gene matching
@dataclass
class LandmarkMap:
    """How input columns become the model's landmark matrix."""

    read_cols: np.ndarray  # input columns to read, sorted, unique
    dst: np.ndarray  # landmark positions filled from a single input column
    src: np.ndarray  # their positions in the read block
    multi: list[tuple[int, np.ndarray]]  # landmark <- mean of several input columns (probes)
    absent: np.ndarray  # bool per landmark: not in the input
    key: str  # which input id/metadata column matched

    def assemble(self, raw: np.ndarray) -> np.ndarray:
        """Landmark matrix (NaN where absent or missing) from a block of ``read_cols``."""
        X = np.full((raw.shape[0], len(self.absent)), np.nan, dtype=np.float32)
        X[:, self.dst] = raw[:, self.src]
        for li, cols in self.multi:
            with np.errstate(invalid="ignore"), _quiet_nanmean():
                X[:, li] = np.nanmean(raw[:, cols], axis=1)
        return X


def _candidate_keys(source: BlockSource, pred: Predictor) -> list[tuple[str, np.ndarray, list]]:
    meta = source.gene_meta
    out = [("id", np.asarray(source.gene_ids, dtype=object), pred.landmark_ids)]
    lower = {str(c).lower(): c for c in meta.columns}
    for name in _ID_COLUMNS + _SYMBOL_COLUMNS:
        col = lower.get(name)
        if col is None:
            continue
        values = meta[col].to_numpy()
        if values.dtype.kind == "f":  # Entrez ids read as floats (NaN for unknown)
            values = np.array([str(int(v)) if np.isfinite(v) else "" for v in values], object)
        targets = pred.landmark_symbols if name in _SYMBOL_COLUMNS else pred.landmark_ids
        out.append((str(col), np.asarray([str(v) for v in values], dtype=object), targets))
    return out


def map_landmarks(source: BlockSource, pred: Predictor) -> LandmarkMap:
    """Match the model's landmarks to input columns by id, else by an id/symbol column.

    The candidate (input ids, ``entrez``/``pr_gene_id``, ..., ``symbol``/``pr_gene_symbol``)
    matching the most landmarks wins; several input rows of one gene (probes) are averaged.
    """
    best: tuple[int, str, dict[str, list[int]], list] | None = None
    for key, values, targets in _candidate_keys(source, pred):
        wanted = set(targets)
        positions: dict[str, list[int]] = {}
        for i, v in enumerate(values):
            if v in wanted:
                positions.setdefault(v, []).append(i)
        n_found = sum(t in positions for t in targets)
        if best is None or n_found > best[0]:
            best = (n_found, key, positions, targets)
    assert best is not None
    _, key, positions, targets = best
    absent = np.array([t not in positions for t in targets], dtype=bool)
    read_cols = np.array(sorted({i for t in targets for i in positions.get(t, [])}), dtype=np.int64)
    where = {c: k for k, c in enumerate(read_cols)}
    dst, src, multi = [], [], []
    for li, t in enumerate(targets):
        cols = positions.get(t, [])
        if len(cols) == 1:
            dst.append(li)
            src.append(where[cols[0]])
        elif cols:
            multi.append((li, np.array([where[c] for c in cols])))
    return LandmarkMap(read_cols, np.array(dst, np.int64), np.array(src, np.int64), multi,
                       absent, key)


# ---------------------------------------------------------------------- the plan
@dataclass(eq=False)
class Plan:
    """Everything fixed for one prediction run (same in every worker)."""

    source: BlockSource
    pred: Predictor
    lmap: LandmarkMap
    target_idx: np.ndarray | None  # None = all targets
    gene_table: pd.DataFrame
    block_size: int
    batch_size: int
    missing_landmarks: str
    fingerprint: str
    n_imputed: int = 0

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
        raw = self.source.read(start, stop, self.lmap.read_cols)
        if raw.ndim != 2 or raw.shape != (stop - start, len(self.lmap.read_cols)):
            raise InputFormatError(
                self.source.path, f"block of samples {start}..{stop} has shape {raw.shape}",
                expected=f"({stop - start}, {len(self.lmap.read_cols)})",
            )
        X = self.lmap.assemble(raw)
        bad = np.isnan(X)
        bad[:, self.lmap.absent] = False  # absent landmarks were accepted (impute) up front
        if bad.any():
            if self.missing_landmarks != "impute":
                self._nan_error(bad, start)
            self.n_imputed += int(bad.sum())
        if bad.any() or self.lmap.absent.any():
            X = np.where(np.isnan(X), self.pred.landmark_means[None, :], X)
        return X

    def _nan_error(self, bad: np.ndarray, start: int) -> None:
        rows, cols = np.nonzero(bad)
        ids = self.source.sample_ids()
        shown = []
        for r, c in list(zip(rows, cols))[:5]:
            shown.append(f"{ids[start + r]} / {self.pred.landmark_ids[c]} "
                         f"({self.pred.landmark_symbols[c]})")
        n_samples = len(np.unique(rows))
        raise InputFormatError(
            self.source.path,
            f"{int(bad.sum())} missing (NaN) landmark values in {n_samples} samples, e.g. "
            + "; ".join(shown),
            where=f"samples {start}..{start + bad.shape[0]}",
            expected="finite log2 values, or --missing-landmarks impute",
        )

    def predict(self, X: np.ndarray) -> np.ndarray:
        Y = np.asarray(self.pred.predict_fn(X), dtype=np.float32)
        if Y.shape != (X.shape[0], len(self.pred.target_ids)):
            raise GeneinferError(
                f"model returned shape {Y.shape} for {X.shape[0]} samples, expected "
                f"({X.shape[0]}, {len(self.pred.target_ids)})"
            )
        if self.target_idx is not None:
            Y = Y[:, self.target_idx]
        return Y

    def batches(self, start: int, stop: int):
        """``(s, e, predictions)`` for the sub-batches of samples start..stop."""
        for s in range(start, stop, self.batch_size):
            e = min(stop, s + self.batch_size)
            yield s, e, self.predict(self.landmarks(s, e))


class _quiet_nanmean:
    def __enter__(self) -> None:
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._w.__exit__(*exc)


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
    _say(f"{len(keep)} of {len(r)} target genes pass valid_r >= {min_r}", progress=progress)
    return keep


def _gene_table(pred: Predictor, idx: np.ndarray | None, with_reliability: bool) -> pd.DataFrame:
    ids = pd.Index(pred.target_ids, name="gene_id")
    table = pd.DataFrame({"pr_gene_symbol": pred.target_symbols}, index=ids)
    if with_reliability:
        gm = pred.gene_metrics if pred.gene_metrics is not None else pd.DataFrame(index=ids)
        for col in ("valid_r", "valid_mae"):
            values = gm[col].reindex(ids) if col in gm else pd.Series(np.nan, index=ids)
            table[col] = values.to_numpy(dtype=np.float64)
    return table if idx is None else table.iloc[idx]


def make_plan(
    pred: Predictor,
    source: BlockSource,
    *,
    block_size: int,
    batch_size: int | None = None,
    missing_landmarks: str = "error",
    min_r: float | None = None,
    with_reliability: bool = False,
    fmt: str = "gctx",
    progress: bool = False,
) -> Plan:
    """Match genes, choose targets and compute the resume fingerprint (no data read yet)."""
    if missing_landmarks not in ("error", "impute"):
        raise ConfigError(
            f"missing_landmarks must be 'error' or 'impute', got {missing_landmarks!r}"
        )
    if block_size < 1:
        raise ConfigError(f"block size must be a positive number of samples, got {block_size}")
    if source.n_samples == 0:
        raise InputFormatError(source.path, "no samples", expected="at least one profile")
    lmap = map_landmarks(source, pred)
    n_abs = int(lmap.absent.sum())
    if n_abs:
        missing = [f"{pred.landmark_ids[i]} ({pred.landmark_symbols[i]})"
                   for i in np.flatnonzero(lmap.absent)]
        if missing_landmarks == "error":
            raise MissingGenesError(missing, what="landmark genes of the model",
                                    source=str(source.path))
        if pred.landmark_means is None:
            raise ConfigError("this model has no training means; cannot impute landmarks")
        _say(f"{n_abs} of {len(lmap.absent)} landmark genes missing in {source.path}; "
             "imputed from training means", progress=progress)
    if missing_landmarks == "impute" and pred.landmark_means is None:
        raise ConfigError("this model has no training means; cannot impute landmarks")
    target_idx = _select_targets(pred, min_r, progress)
    table = _gene_table(pred, target_idx, with_reliability)
    fp = {
        "layout": _LAYOUT_VERSION,
        "input": source.fingerprint(),
        "model": pred.checksum,
        "block_size": block_size,
        "format": fmt,
        "missing_landmarks": missing_landmarks,
        "min_r": min_r,
        "with_reliability": with_reliability,
    }
    fingerprint = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()
    return Plan(source, pred, lmap, target_idx, table, block_size,
                min(block_size, batch_size or DEFAULT_BATCH), missing_landmarks, fingerprint)


# ---------------------------------------------------------------------- running blocks
@dataclass
class PredictResult:
    """Summary of a finished :func:`predict_file` run."""

    output: Path
    n_samples: int
    n_genes: int
    n_imputed_values: int = 0
    n_imputed_landmarks: int = 0
    resumed_blocks: int = 0
    seconds: float = 0.0


def prepare_output(plan: Plan, output: Path, fmt: str, *, progress: bool) -> set[int]:
    """Create ``OUT.partial`` or reopen a matching one; return the blocks already finished."""
    part = W.partial_path(output)
    if part.exists():
        header = W.read_partial_header(part, fmt)
        if header is not None and header[0] == plan.fingerprint:
            done = W.ProgressLog.finished_blocks(output, plan.fingerprint)
            if done:
                _say(f"resuming {part}: {len(done)} of {plan.n_blocks} blocks already done",
                     progress=progress)
            return done
        _say(f"{part} is unfinished output of a different input, model or options (or is "
             "damaged); starting over", progress=progress)
    W.remove_partial(output)
    columns = plan.source.sample_columns()
    if fmt == "gctx" and "values" not in {name for name, _ in columns}:
        # the project's GCT/GCTX convention for the scale (read back by geneinfer.io)
        n = plan.n_samples
        columns.append(("values", lambda: np.full(n, b"log2", dtype="S4")))
    W.create_matrix_file(
        part, fmt=fmt, gene_table=plan.gene_table, sample_ids=plan.source.sample_ids(),
        sample_columns=columns, fingerprint=plan.fingerprint,
    )
    return set()


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
    part = W.partial_path(output)
    header = W.read_partial_header(part, fmt)
    if header is None or header[0] != plan.fingerprint:
        raise GeneinferError(f"{part}: unfinished output missing or not from this run")
    _, offset, shape = header
    log = W.ProgressLog(output, rank=rank, fingerprint=plan.fingerprint)
    pending: deque[Future] = deque()
    failed: list[BaseException] = []

    def write(writer: W.RowWriter, start: int, rows: np.ndarray) -> None:
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
        with W.RowWriter(part, offset=offset, shape=shape) as writer, \
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


def _progress_bar(total: int, *, enabled: bool, initial: int = 0, desc: str = "predict"):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="profiles", unit_scale=True, desc=desc,
                disable=not enabled, smoothing=0.1, dynamic_ncols=True)


def _check_scale(plan: Plan, *, progress: bool) -> None:
    """Warn once when values do not look like log2 expression."""
    n = min(plan.n_samples, 256)
    if n == 0:
        return
    X = plan.source.read(0, n, plan.lmap.read_cols)
    with np.errstate(all="ignore"):
        hi = np.nanmax(X) if np.isfinite(X).any() else 0.0
    if hi > 40:
        _say(f"values in {plan.source.path} reach {hi:.0f}; predict expects log2 expression "
             "(convert linear/count data to log2 first)", progress=progress)


def predict_file(
    model: Any,
    input_path: str | os.PathLike[str] | ExpressionData,
    output_path: str | os.PathLike[str],
    *,
    block_size: int = 10000,
    output_format: str | None = None,
    missing_landmarks: Literal["error", "impute"] = "error",
    min_r: float | None = None,
    with_reliability: bool = False,
    progress: bool = True,
    workers: int = 1,
    batch_size: int | None = None,
    threads: int | None = None,
) -> PredictResult:
    """Predict target genes for every profile of ``input_path`` into ``output_path``.

    Parameters
    ----------
    model
        A model directory, an :class:`~geneinfer.models.bundle.InferenceModel` or a
        :class:`Predictor`.
    input_path
        GCTX, h5ad, GCT, TSV/CSV (either orientation) or an in-memory ExpressionData. Genes
        are matched to the model's landmarks by id, else by an Entrez (``pr_gene_id``) or
        symbol (``pr_gene_symbol``) column; values must be log2.
    output_path
        ``.gctx`` or ``.h5ad`` are written block by block (resumable, any size); ``.gct``,
        ``.tsv`` and ``.csv`` are written at once from memory (small outputs).
    block_size
        Samples per block: the unit of resuming and of sharding.
    output_format
        Overrides the format implied by the extension.
    missing_landmarks
        ``"error"``: absent landmarks or NaN landmark values raise an error naming them;
        ``"impute"``: they are filled with the model's training means (reported).
    min_r
        Keep only target genes whose validation correlation ``valid_r`` is at least this.
    with_reliability
        Add ``valid_r`` and ``valid_mae`` to the gene (row) metadata.
    progress
        Show a progress bar (profiles/s, ETA) and messages on stderr.
    workers
        Processes on this machine, each predicting a contiguous range of blocks. Under
        ``torchrun`` (``RANK``/``WORLD_SIZE`` set) the ranks share the work instead.
    batch_size
        Samples predicted at once inside a block (memory bound); default 2048.
    threads
        BLAS/torch threads per process; default: all cores for one process, cores / N for
        N workers or ranks. Results are bit-identical between runs with the same threads per
        process (BLAS sums in a thread-count dependent order; otherwise they agree to ~1e-6).

    Returns
    -------
    PredictResult
    """
    from geneinfer.predict import sharded

    t0 = time.perf_counter()
    output = Path(output_path)
    fmt = W.output_format(output, output_format)
    rank, world = sharded.env_rank_world()
    if threads is None and world > 1:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        threads = max(1, (os.cpu_count() or 1) // local)
    with sharded.thread_limit(threads):
        return _predict_file(model, input_path, output, fmt=fmt, rank=rank, world=world,
                             block_size=block_size, missing_landmarks=missing_landmarks,
                             min_r=min_r, with_reliability=with_reliability, progress=progress,
                             workers=workers, batch_size=batch_size, threads=threads, t0=t0)


def _predict_file(model: Any, input_path: Any, output: Path, *, fmt: str, rank: int,
                  world: int, block_size: int, missing_landmarks: str, min_r: float | None,
                  with_reliability: bool, progress: bool, workers: int,
                  batch_size: int | None, threads: int | None, t0: float) -> PredictResult:
    from geneinfer.predict import sharded

    if world > 1 and fmt in W.STREAMING_FORMATS:
        return sharded.run_torchrun(
            model, input_path, output, fmt=fmt, rank=rank, world=world, block_size=block_size,
            missing_landmarks=missing_landmarks, min_r=min_r, with_reliability=with_reliability,
            progress=progress, batch_size=batch_size, t0=t0,
        )
    if world > 1 and rank != 0:
        return PredictResult(output, 0, 0)  # small in-memory outputs: rank 0 does everything
    pred = as_predictor(model)
    with open_source(input_path) as source:
        plan = make_plan(pred, source, block_size=block_size, batch_size=batch_size,
                         missing_landmarks=missing_landmarks, min_r=min_r,
                         with_reliability=with_reliability, fmt=fmt, progress=progress)
        _check_scale(plan, progress=progress)
        if fmt in W.MEMORY_FORMATS:
            return _predict_to_memory_format(plan, output, fmt, progress=progress, t0=t0)
        done = prepare_output(plan, output, fmt, progress=progress)
        todo = [b for b in range(plan.n_blocks) if b not in done]
        n_done = sum(plan.block_range(b)[1] - plan.block_range(b)[0] for b in done)
        try:
            if workers > 1 and len(todo) > 1:
                sharded.run_workers(plan, pred, input_path, output, fmt=fmt, todo=todo,
                                    workers=workers, progress=progress, n_done=n_done,
                                    batch_size=batch_size, with_reliability=with_reliability,
                                    min_r=min_r, threads=threads)
            else:
                with _progress_bar(plan.n_samples, enabled=progress, initial=n_done) as bar:
                    run_blocks(plan, output, fmt, todo, bar=bar)
        except InputFormatError:
            # bad input values: rerunning cannot resume past them, so leave nothing behind
            W.remove_partial(output)
            raise
        return _finish(plan, output, fmt, done, t0, progress=progress)


def _finish(plan: Plan, output: Path, fmt: str, done_before: set[int], t0: float, *,
            progress: bool) -> PredictResult:
    missing = set(range(plan.n_blocks)) - W.ProgressLog.finished_blocks(output, plan.fingerprint)
    if missing:
        raise GeneinferError(
            f"{W.partial_path(output)}: blocks {sorted(missing)[:10]} were not written; "
            "rerun the same command to resume"
        )
    W.finish(output)
    if plan.n_imputed:
        _say(f"{plan.n_imputed} missing landmark values imputed from training means",
             progress=progress)
    return PredictResult(output, plan.n_samples, len(plan.gene_table), plan.n_imputed,
                         int(plan.lmap.absent.sum()), len(done_before),
                         time.perf_counter() - t0)


def _predict_to_memory_format(plan: Plan, output: Path, fmt: str, *, progress: bool,
                              t0: float) -> PredictResult:
    n_bytes = plan.n_samples * len(plan.gene_table) * 4
    if n_bytes > _MAX_MEMORY_OUTPUT_BYTES:
        raise ConfigError(
            f"{output}: {plan.n_samples} x {len(plan.gene_table)} predictions are too large "
            f"for {fmt} ({n_bytes / 1e9:.1f} GB in memory); write .gctx or .h5ad instead"
        )
    data = predict_data(plan, progress=progress)
    W.write_in_memory(data, output, fmt=fmt)
    return PredictResult(output, plan.n_samples, len(plan.gene_table), plan.n_imputed,
                         int(plan.lmap.absent.sum()), 0, time.perf_counter() - t0)


def predict_data(plan: Plan, *, progress: bool = False) -> ExpressionData:
    """All predictions of ``plan`` in memory as samples x genes ExpressionData (log2)."""
    Y = np.empty((plan.n_samples, len(plan.gene_table)), dtype=np.float32)
    with _progress_bar(plan.n_samples, enabled=progress) as bar:
        for s, e, block in plan.batches(0, plan.n_samples):
            Y[s:e] = block
            bar.update(e - s)
    genes = plan.gene_table.rename(columns={"pr_gene_symbol": "symbol"})
    samples = pd.DataFrame(index=pd.Index(plan.source.sample_ids(), name="sample_id"))
    for name, get in plan.source.sample_columns():
        values = np.asarray(get())
        samples[name] = np.char.decode(values, "utf-8") if values.dtype.kind == "S" else values
    return ExpressionData(values=Y, gene_ids=plan.gene_table.index, sample_ids=samples.index,
                          genes=genes, samples=samples, scale="log2",
                          gene_id_kind=getattr(plan.pred.model, "gene_id_kind", "unknown"),
                          source=str(plan.source.path))
