"""Let glibc reuse large freed blocks instead of returning them to the kernel at once.

A training step on CPU allocates and frees the same large tensors every step (a D-GEX
1x3000 output layer's gradient is 114 MB). glibc serves blocks above ``M_MMAP_THRESHOLD``
(at most 32 MB by its own adaptation) with a fresh ``mmap`` and unmaps them on ``free``, so
every step page-faults and zero-fills the same memory again. Raising the threshold keeps
those blocks in the heap, where the next step reuses them. Measured on 2 cores
(``benchmarks/bench_neural.py``): DGEX 1x3000 training 461 -> 583 samples/s with the paper
recipe, 359 -> 502 with the modern one.

The setting is process-wide and cannot be undone for blocks already placed; freed memory
above ``M_TRIM_THRESHOLD`` at the top of the heap is still given back. Set
``GENEINFER_MALLOC_TUNING=0`` to leave the allocator alone. Elsewhere than glibc (macOS,
musl, Windows) this does nothing.
"""

from __future__ import annotations

import ctypes
import os
import platform

from geneinfer.utils.libc import libc_function

#: mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: blocks up to this size come from the heap (a 9,000 x 9,000 float32 layer is 324 MB)
MMAP_THRESHOLD = 512 * 2**20
#: free memory kept at the top of the heap before it is returned to the kernel
TRIM_THRESHOLD = 1024 * 2**20

_applied: bool | None = None


def reuse_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; whether it took effect."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("GENEINFER_MALLOC_TUNING", "1").strip() in ("0", "false", "no", "off"):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = libc_function("mallopt", ctypes.c_int, ctypes.c_int)
    if mallopt is None:
        return False
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    return _applied
