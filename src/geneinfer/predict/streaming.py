"""Streaming, resumable prediction of target genes for inputs of any size.

:func:`predict_file` is ``geneinfer predict``: the input is read in blocks of samples
(:func:`geneinfer.io.open_blocks`), harmonised and matched to the model's landmarks
(:mod:`geneinfer.predict.plan`), predicted, and each block written straight into a
preallocated GCTX/h5ad output (:mod:`geneinfer.io.preallocated`); memory is bounded by one
sub-batch, whatever the number of profiles. A killed run resumes from its last finished block
when the same command is run again; with ``workers``/``torchrun`` each rank handles a
contiguous range of blocks (:mod:`geneinfer.predict.sharded`).

:func:`predict_data` runs the same plan in memory and returns the predictions; the study
(:mod:`geneinfer.study`) uses it, so what it measures is what ``geneinfer predict`` writes.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from geneinfer.errors import ConfigError, InputFormatError
from geneinfer.expression import ExpressionData
from geneinfer.io import STREAMED, open_blocks, output_format, write
from geneinfer.predict import resume
from geneinfer.predict.plan import (
    Plan,
    PlanOptions,
    PredictResult,
    as_predictor,
    finish_output,
    make_plan,
    output_values,
    prepare_output,
    progress_bar,
    report_counts,
    run_blocks,
)
from geneinfer.predict.sharded import env_rank_world, run_torchrun, run_workers, thread_limit
from geneinfer.utils.files import output_errors
from geneinfer.utils.locks import exclusive_lock

#: in-memory outputs (GCT/TSV/CSV) larger than this must go to GCTX/h5ad instead
MAX_MEMORY_OUTPUT_BYTES = 2 * 1024**3


def predict_file(
    model: Any,
    input_path: str | os.PathLike[str] | ExpressionData,
    output_path: str | os.PathLike[str],
    *,
    options: PlanOptions | None = None,
    output_format: str | None = None,
    progress: bool = True,
    workers: int = 1,
    threads: int | None = None,
    **option_values: Any,
) -> PredictResult:
    """Predict target genes for every profile of ``input_path`` into ``output_path``.

    Parameters
    ----------
    model
        A model directory, an :class:`~geneinfer.models.bundle.InferenceModel` or a
        :class:`~geneinfer.predict.plan.Predictor`.
    input_path
        Any format :func:`geneinfer.io.open_blocks` reads, or an in-memory ExpressionData.
        Values on any scale and genes with any ids are harmonised as in training
        (:func:`geneinfer.preprocess.harmonize`).
    output_path
        ``.gctx`` or ``.h5ad`` are written block by block (resumable, any size); ``.gct``,
        ``.tsv`` and ``.csv`` are written at once from memory (small outputs).
    options
        A :class:`~geneinfer.predict.plan.PlanOptions` (block and batch size, missing
        landmarks, ``min_r``, reliability columns, input scale/annotation/data folder), or
        its fields as keywords (``block_size=...``).
    output_format
        Overrides the format implied by the extension.
    progress
        Show a progress bar (profiles/s, time left) and messages on stderr.
    workers
        Processes on this machine, each predicting a contiguous range of blocks. Under
        ``torchrun`` (``RANK``/``WORLD_SIZE`` set) the ranks share the work instead.
    threads
        BLAS/torch threads per process; default: all cores for one process, cores / N for
        N workers or ranks. Results are bit-identical between runs with the same threads per
        process (BLAS sums in a thread-count dependent order; otherwise they agree to ~1e-6).
    """
    t0 = time.perf_counter()
    output = Path(output_path)
    options = options or PlanOptions(**option_values)
    options.fmt = output_format_of(output, output_format)
    _check_processes(workers, threads)
    rank, world = env_rank_world()
    if threads is None and world > 1:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        threads = max(1, (os.cpu_count() or 1) // local)
    with output_errors(output.parent, what="create the folder"):
        output.parent.mkdir(parents=True, exist_ok=True)  # for every format (and the lock)
    # one run per output: rank 0 (or the only process) holds the lock for the whole run
    lock = exclusive_lock(output, what="predicting into") if rank == 0 \
        else contextlib.nullcontext()
    with lock, thread_limit(threads):
        if world > 1 and options.fmt in STREAMED:
            return run_torchrun(model, input_path, output, options, rank=rank, world=world,
                                progress=progress, t0=t0)
        if world > 1 and rank != 0:
            return PredictResult(output, 0, 0)  # small in-memory outputs: rank 0 does all
        return _predict_here(model, input_path, output, options, progress=progress,
                             workers=workers, threads=threads, t0=t0)


def _check_processes(workers: int, threads: int | None) -> None:
    """Whole numbers of at least 1 (``--workers``, ``--threads``), for API callers too."""
    for name, value in (("workers", workers), ("threads", threads)):
        if value is None and name == "threads":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a whole number of at least 1, got {value!r}")


def output_format_of(output: Path, requested: str | None) -> str:
    """The output format (from ``requested`` or the name), checked to be writable."""
    return output_format(output, format=requested)


def _predict_here(model: Any, input_path: Any, output: Path, options: PlanOptions, *,
                  progress: bool, workers: int, threads: int | None, t0: float
                  ) -> PredictResult:
    pred = as_predictor(model)
    with open_blocks(input_path, nonfinite=options.nonfinite) as source:
        plan = make_plan(pred, source, options, progress=progress)
        if options.fmt not in STREAMED:
            return _predict_to_memory_format(plan, output, options.fmt, progress=progress,
                                             t0=t0)
        done = prepare_output(plan, output, options.fmt, progress=progress)
        todo = [b for b in range(plan.n_blocks) if b not in done]
        n_done = sum(plan.block_range(b)[1] - plan.block_range(b)[0] for b in done)
        t_predict = time.perf_counter()
        try:
            if workers > 1 and len(todo) > 1:
                run_workers(plan, pred, input_path, output, options, todo=todo,
                            workers=workers, progress=progress, n_done=n_done,
                            threads=threads)
            else:
                with progress_bar(plan.n_samples, enabled=progress, initial=n_done) as bar:
                    run_blocks(plan, output, options.fmt, todo, bar=bar)
        except InputFormatError:
            # bad input values: rerunning cannot resume past them, so leave nothing behind
            resume.remove_partial(output)
            raise
        return finish_output(plan, output, done, t0=t0, t_predict=t_predict, progress=progress)


def _predict_to_memory_format(plan: Plan, output: Path, fmt: str, *, progress: bool,
                              t0: float) -> PredictResult:
    n_bytes = plan.n_samples * len(plan.gene_table) * 4
    if n_bytes > MAX_MEMORY_OUTPUT_BYTES:
        raise ConfigError(
            f"{output}: {plan.n_samples} x {len(plan.gene_table)} predictions are too large "
            f"for {fmt} ({n_bytes / 1e9:.1f} GB in memory); write .gctx or .h5ad instead"
        )
    t_predict = time.perf_counter()
    data = plan_predictions(plan, progress=progress)
    write(data, output, format=fmt)
    report_counts(plan, progress=progress)
    now = time.perf_counter()
    return PredictResult(output, plan.n_samples, len(plan.gene_table), plan.n_imputed,
                         plan.inputs.n_absent, 0, now - t0, n_predicted=plan.n_samples,
                         predict_seconds=now - t_predict, n_nonfinite=plan.n_nonfinite)


def plan_predictions(plan: Plan, *, progress: bool = False) -> ExpressionData:
    """All predictions of ``plan`` in memory as samples x genes ExpressionData (log2)."""
    Y = np.empty((plan.n_samples, len(plan.gene_table)), dtype=np.float32)
    with progress_bar(plan.n_samples, enabled=progress) as bar:
        for s, e, block in plan.batches(0, plan.n_samples):
            Y[s:e] = block
            bar.update(e - s)
    genes = plan.gene_table.copy()
    # what readers derive from pr_gene_symbol; writers leave it out again
    genes["symbol"] = genes["pr_gene_symbol"]
    samples = plan.source.samples().copy()
    samples["values"] = output_values(plan)
    return ExpressionData(values=Y, gene_ids=plan.gene_table.index, sample_ids=samples.index,
                          genes=genes, samples=samples, scale="log2",
                          gene_id_kind=plan.pred.gene_id_kind, source=plan.source.source)


def predict_data(model: Any, data: ExpressionData | str | os.PathLike[str], *,
                 options: PlanOptions | None = None, progress: bool = False,
                 **option_values: Any) -> ExpressionData:
    """Predictions for ``data`` (in memory or a file) as :class:`ExpressionData`, computed
    exactly as :func:`predict_file` computes them."""
    pred = as_predictor(model)
    options = options or PlanOptions(**option_values)
    with open_blocks(data, nonfinite=options.nonfinite) as source:
        return plan_predictions(make_plan(pred, source, options, progress=progress),
                                progress=progress)
