"""Multi-process (DistributedDataParallel) training support.

When a script that fits a torch estimator is launched with ``torchrun --nproc-per-node N``
(environment ``WORLD_SIZE > 1``), :class:`geneinfer.models.nn.trainer.Trainer` joins the process
group (gloo on CPU, NCCL on GPU), wraps the network in ``DistributedDataParallel`` and splits each
global batch across the ranks. Only rank 0 writes checkpoints and shows progress; every rank
ends with the same weights.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """Rank, world size and local rank from the ``torchrun`` environment variables."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return DistInfo()
    return DistInfo(
        rank=int(os.environ.get("RANK", "0")),
        world_size=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def setup(device: torch.device) -> DistInfo:
    """Join the process group if launched under torchrun; a no-op for a single process."""
    info = env_info()
    if not info.enabled:
        return info
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available")
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://")
        atexit.register(_teardown)
    return DistInfo(
        rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=info.local_rank
    )


def _teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def finish() -> None:
    """End a ``torchrun`` job together: wait for every rank, then leave the process group.

    Called by every rank once nothing else is communicated (rank 0 has written the model).
    A rank that exits while another still works leaves its connections to be torn down at
    interpreter exit, where gloo can abort the process on a closed peer; leaving together
    avoids that window. A no-op outside a process group.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Average ``values`` over ranks (identity for a single process)."""
    if not info.enabled:
        return values
    out = values.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / info.world_size


def broadcast_flag(flag: bool, info: DistInfo) -> bool:
    """Rank 0's ``flag`` on every rank (keeps control flow, e.g. early stopping, in step)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.broadcast(t, src=0)
    return bool(t.item())


def barrier(info: DistInfo) -> None:
    """Wait for all ranks (no-op for a single process)."""
    if info.enabled:
        dist.barrier()
