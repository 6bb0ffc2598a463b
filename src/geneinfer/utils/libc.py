"""Access to a few C library functions that Python's ``os`` module does not offer."""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable


@functools.lru_cache(maxsize=8)
def libc_function(name: str, *argtypes: type) -> Callable | None:
    """A C library function returning ``int`` (errno kept), or None where there is none.

    E.g. ``fallocate`` and ``sync_file_range`` exist on Linux only, ``mallopt`` in glibc.
    """
    try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = list(argtypes)
    fn.restype = ctypes.c_int
    return fn
