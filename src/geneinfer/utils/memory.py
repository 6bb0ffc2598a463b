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
import re

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


# ---------------------------------------------------------------------------- budgets
_SIZE_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "KIB": 2**10, "M": 2**20, "MB": 2**20,
               "MIB": 2**20, "G": 2**30, "GB": 2**30, "GIB": 2**30, "T": 2**40, "TB": 2**40,
               "TIB": 2**40}


def physical_memory() -> int | None:
    """Bytes of memory this process may use: the machine's RAM, or a smaller cgroup (v2 or
    v1) limit; None where neither can be read."""
    total = None
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as fh:
                text = fh.read().strip()
        except OSError:
            continue
        if text.isdigit() and (total is None or int(text) < total):
            total = int(text)
    return total


def parse_size(text: str | int | float, *, total: int | None = None) -> int:
    """Bytes from ``"8G"``, ``"512M"``, ``"1.5GB"``, ``"4000000"`` or ``"50%"`` (of
    ``total``, default :func:`physical_memory`). Raises ``ValueError`` with the reason."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        raw = str(text).strip().upper().replace(" ", "")
        if raw.endswith("%"):
            total = total if total is not None else physical_memory()
            if total is None:
                raise ValueError(f"{text!r}: the machine's memory is unknown; give a size")
            share = float(raw[:-1])
            if not 0 < share <= 100:
                raise ValueError(f"{text!r}: a share of memory must be in (0, 100] %")
            return int(total * share / 100)
        m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)([A-Z]*)", raw)
        if m is None or m.group(2) not in _SIZE_UNITS:
            raise ValueError(f"{text!r}: expected a size such as 8G, 512M or 50%")
        value = float(m.group(1)) * _SIZE_UNITS[m.group(2)]
    if not value > 0:
        raise ValueError(f"{text!r}: a size must be positive")
    return int(value)


def format_size(n_bytes: float) -> str:
    """``1536 * 2**20`` -> ``"1.5 GB"`` (binary units)."""
    for unit, size in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if abs(n_bytes) >= size:
            return f"{n_bytes / size:.1f} {unit}"
    return f"{int(n_bytes)} B"
