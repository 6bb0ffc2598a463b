"""Sharded prediction: several processes on one machine (``workers``) or ``torchrun`` ranks.

Samples are split into blocks (``block_size``) and each rank takes a contiguous range of
blocks. All ranks write into the *same* preallocated output file ``OUT.partial``: its matrix
is a contiguous HDF5 dataset whose structure and metadata rank 0 (or the parent process)
writes before any rank starts, so each rank only writes raw bytes into its own disjoint rows
(see :mod:`geneinfer.io.preallocated`). This was chosen over the two usual alternatives:

* one shard file per rank + a merge by rank 0: the merge re-reads and re-writes the whole
  output (~18 GB for 200k x 22,268), doubling the disk traffic that bounds the run time;
* an HDF5 virtual dataset over shard files: no copy, but the result is only readable while
  the shard files stay next to it (moving or copying the .gctx breaks it) and HDF5 < 1.10
  readers cannot open it.

Each rank records finished blocks in its own ``OUT.partial.done<rank>``, so a rerun after a
killed worker redoes only unfinished blocks (whatever the number of ranks); the result is
renamed to ``OUT`` by rank 0 once every block is recorded.

Under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) ranks synchronise with
``torch.distributed.barrier`` when a process group is initialised or can be (``gloo``,
``MASTER_ADDR``/``MASTER_PORT`` set by torchrun); otherwise by polling the output files.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import pickle
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from geneinfer.errors import ConfigError, GeneinferError
from geneinfer.io import open_blocks
from geneinfer.predict import resume
from geneinfer.predict.plan import (
    Plan,
    PlanOptions,
    Predictor,
    PredictResult,
    as_predictor,
    finish_output,
    make_plan,
    prepare_output,
    progress_bar,
    run_blocks,
)
from geneinfer.utils.libc import libc_function

_POLL_S = 0.5


def env_rank_world() -> tuple[int, int]:
    """``(rank, world)`` from torch.distributed if initialised, else ``RANK``/``WORLD_SIZE``."""
    # only look at torch when it is already imported: importing it costs seconds
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError("RANK and WORLD_SIZE must be integers") from None
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE={world})")
    return rank, world


def shard(blocks: list[int] | range, world: int, rank: int) -> list[int]:
    """The contiguous part of ``blocks`` that ``rank`` of ``world`` handles."""
    parts = np.array_split(np.asarray(list(blocks), dtype=np.int64), world)
    return [int(b) for b in parts[rank]]


# ---------------------------------------------------------------------- local workers
@contextlib.contextmanager
def thread_limit(n: int | None) -> Iterator[None]:
    """Use ``n`` BLAS (and, if torch is loaded, torch) threads inside the block."""
    if n is None:
        yield
        return
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(n)
    try:
        with threadpool_limits(n):
            yield
    finally:
        if torch is not None and before is not None:
            torch.set_num_threads(before)


def _limit_threads(n: int) -> None:
    """For a worker process: ``n`` threads for its whole life (torch too, if the model uses it).

    torch is not imported here when the model did not import it (that costs seconds).
    """
    os.environ["OMP_NUM_THREADS"] = str(n)  # read by torch when it is imported later
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    with contextlib.suppress(Exception):
        threadpool_limits(n)


#: prctl(2) option: the signal this process gets when the thread that started it dies
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Have the kernel kill this (worker) process when its parent dies, even by ``kill -9``.

    Worker processes write into the shared output; left running after their parent is gone
    they would be orphans nobody waits for. Linux ``prctl(PR_SET_PDEATHSIG)`` does it; the
    parent may have died before this call, so that is checked after it.
    """
    prctl = libc_function("prctl", ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong,
                          ctypes.c_ulong, ctypes.c_ulong)
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _worker_main(spec: dict[str, Any], rank: int, blocks: list[int], errors: Any) -> None:
    die_with_parent(spec["parent"])
    try:
        _limit_threads(spec["threads"])
        with open_blocks(spec["input"], nonfinite=spec["options"].nonfinite) as source:
            plan = make_plan(spec["pred"], source, spec["options"])
            if plan.fingerprint != spec["fingerprint"]:
                raise GeneinferError("worker sees a different input or model than the parent")
            parsed = plan.n_nonfinite  # the parent counts a text input's once
            run_blocks(plan, spec["output"], spec["options"].fmt, blocks, rank=rank)
            errors.put((rank, None, plan.n_imputed, plan.n_nonfinite - parsed))
    except GeneinferError as exc:
        errors.put((rank, str(exc), 0, 0))
        raise SystemExit(2) from None
    except BaseException:
        errors.put((rank, traceback.format_exc(limit=5), 0, 0))
        raise SystemExit(1) from None


def run_workers(
    plan: Plan,
    pred: Predictor,
    input_path: Any,
    output: Path,
    options: PlanOptions,
    *,
    todo: list[int],
    workers: int,
    progress: bool,
    n_done: int,
    threads: int | None = None,
) -> None:
    """Predict ``todo`` blocks with ``workers`` spawned processes; block until all finish."""
    spec = {
        "pred": pred,
        "input": str(input_path) if isinstance(input_path, (str, os.PathLike)) else input_path,
        "output": output,
        "options": options,
        "fingerprint": plan.fingerprint,
        "threads": threads or max(1, (os.cpu_count() or 1) // workers),
        "parent": os.getpid(),
    }
    try:
        pickle.dumps(spec)
    except Exception as exc:
        raise ConfigError(
            f"workers > 1 needs a model that can be sent to worker processes ({exc}); pass a "
            "model directory or an InferenceModel"
        ) from None
    ctx = mp.get_context("spawn")
    errors = ctx.Queue()
    procs = []
    for rank, blocks in enumerate(np.array_split(np.asarray(todo), workers)):
        if len(blocks):
            p = ctx.Process(target=_worker_main, args=(spec, rank, [int(b) for b in blocks],
                                                       errors), daemon=True)
            p.start()
            procs.append(p)
    messages: list[str] = []
    try:
        with progress_bar(plan.n_samples, enabled=progress, initial=n_done) as bar:
            while any(p.is_alive() for p in procs):
                time.sleep(_POLL_S)
                _update_bar(bar, plan, output)
                while not errors.empty():
                    _collect(errors.get(), messages, plan)
            _update_bar(bar, plan, output)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
    while not errors.empty():
        _collect(errors.get(), messages, plan)
    failed = [p for p in procs if p.exitcode != 0]
    if failed or messages:
        detail = "; ".join(messages) or f"exit code {failed[0].exitcode}"
        raise GeneinferError(f"{len(failed)} of {len(procs)} workers failed: {detail}; "
                             "rerun the same command to resume")


def _collect(item: tuple[int, str | None, int, int], messages: list[str], plan: Any) -> None:
    rank, message, n_imputed, n_nonfinite = item
    if message:
        messages.append(f"worker {rank}: {message.strip().splitlines()[-1]}")
    plan.n_imputed += n_imputed
    plan.n_nonfinite += n_nonfinite


def _update_bar(bar: Any, plan: Plan, output: Path) -> None:
    done = resume.ProgressLog.finished_blocks(output, plan.fingerprint)
    n = sum(plan.block_range(b)[1] - plan.block_range(b)[0] for b in done)
    if n > bar.n:
        bar.update(n - bar.n)


# ---------------------------------------------------------------------- torchrun
class _Sync:
    """Barrier across torchrun ranks: torch.distributed if possible, else file polling."""

    def __init__(self) -> None:
        self.dist = None
        self.owned = False
        # torch is imported only under torchrun: a linear model's prediction never needs
        # it, and importing it costs seconds
        import torch.distributed as dist

        if not dist.is_available():
            return
        if not dist.is_initialized() and "MASTER_ADDR" in os.environ and \
                "MASTER_PORT" in os.environ:
            # prediction exchanges no tensors; gloo only provides the barrier, with a long
            # timeout because ranks wait for the slowest one at the end
            dist.init_process_group("gloo", timeout=timedelta(hours=48))
            self.owned = True
        if dist.is_initialized():
            self.dist = dist

    def barrier(self) -> bool:
        """Wait for all ranks; False when no process group is available (caller polls)."""
        if self.dist is None:
            return False
        self.dist.barrier()
        return True

    def close(self) -> None:
        if self.owned and self.dist is not None:
            self.dist.destroy_process_group()


def run_torchrun(
    model: Any,
    input_path: Any,
    output: Path,
    options: PlanOptions,
    *,
    rank: int,
    world: int,
    progress: bool,
    t0: float,
) -> PredictResult:
    """One rank of ``torchrun -m geneinfer predict ...``: its blocks, then rank 0 finishes."""
    lead = rank == 0
    pred = as_predictor(model)
    sync = _Sync()
    try:
        with open_blocks(input_path, nonfinite=options.nonfinite) as source:
            plan = make_plan(pred, source, options, progress=progress and lead)
            done_before: set[int] = set()
            if lead:
                done_before = prepare_output(plan, output, options.fmt, progress=progress)
            if not sync.barrier():
                _wait_for_partial(output, options.fmt, plan.fingerprint)
            done = resume.ProgressLog.finished_blocks(output, plan.fingerprint)
            mine = [b for b in shard(range(plan.n_blocks), world, rank) if b not in done]
            n_mine = sum(plan.block_range(b)[1] - plan.block_range(b)[0] for b in mine)
            t_predict = time.perf_counter()
            with progress_bar(n_mine, enabled=progress and lead,
                              desc=f"predict rank 0/{world}") as bar:
                run_blocks(plan, output, options.fmt, mine, rank=rank, bar=bar)
            if not sync.barrier() and lead:
                _wait_for_blocks(output, plan)
            if lead:
                return finish_output(plan, output, done_before, t0=t0, t_predict=t_predict,
                                     progress=progress)
            return PredictResult(output, plan.n_samples, len(plan.gene_table), plan.n_imputed)
    finally:
        sync.close()


def _wait_for_partial(output: Path, fmt: str, fingerprint: str) -> None:
    part = resume.partial_path(output)
    while True:
        header = resume.read_partial_header(part, fmt)
        if header is not None and header[0] == fingerprint:
            return
        time.sleep(_POLL_S)


def _wait_for_blocks(output: Path, plan: Plan) -> None:
    want = set(range(plan.n_blocks))
    while not want <= resume.ProgressLog.finished_blocks(output, plan.fingerprint):
        time.sleep(_POLL_S)
