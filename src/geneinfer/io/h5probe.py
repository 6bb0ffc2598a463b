"""A first look at an HDF5 file's structure in a throw-away child process.

The HDF5 library trusts the bytes of a file's metadata. A damaged file can make it loop for
ever (the fuzz harness found a one-byte change in a global heap that makes reading an
attribute spin) or crash the process; neither can be interrupted from Python. So before a
reader touches a file, :func:`probe` walks its structure (every object, every attribute, the
text datasets and the chunk index of the others) in a forked copy of this process. The child
only reads; if it does not finish within :data:`PROBE_SECONDS` or dies of a signal, the file is
refused with one :class:`~geneinfer.errors.InputFormatError` line, and the process that asked
never entered the loop or the crash. Errors the child meets are left to the real read, which
reports them precisely.

A file is probed once per (size, modification time). Where ``fork`` does not exist the probe
is skipped. ``GENEINFER_HDF5_PROBE_SECONDS`` changes the base time limit (0 turns the probe
off); the limit grows with the file's size.
"""

from __future__ import annotations

import os
import signal
import time
import warnings
from pathlib import Path

import h5py
import numpy as np

from geneinfer.errors import InputFormatError

#: Seconds a structure walk may take (real files: well under a second; large obs/var tables:
#: a few seconds).
PROBE_SECONDS = 60.0
#: and this many more per GiB of file (the text datasets are read whole)
PROBE_SECONDS_PER_GB = 15.0
#: elements of a text dataset read at once by the walk
_SLICE = 1 << 18
_probed: dict[tuple[str, int, int], None] = {}


def probe(path: str | os.PathLike[str], *, what: str) -> None:
    """Refuse ``path`` if walking its HDF5 structure hangs or crashes (see the module)."""
    limit = float(os.environ.get("GENEINFER_HDF5_PROBE_SECONDS", PROBE_SECONDS))
    if limit <= 0 or not hasattr(os, "fork"):
        return
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key in _probed:
        return
    # large files (ARCHS4: ~40 GB with ~1M text rows per metadata field) take longer to walk
    limit += PROBE_SECONDS_PER_GB * st.st_size / 2**30
    with warnings.catch_warnings():  # (Python 3.12 warns about fork in threaded processes)
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: walk, then leave without running any of the parent's exit code
        try:
            _walk(path)
        finally:
            os._exit(0)
    status = _wait(pid, limit)
    if status is None:
        raise InputFormatError(path, f"reading its HDF5 structure did not finish in "
                               f"{limit:.0f} s (the HDF5 library loops on damaged metadata)",
                               expected=what)
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        raise InputFormatError(path, f"its HDF5 structure crashes the HDF5 library ({name}); "
                               "the file is damaged", expected=what)
    _probed[key] = None


def _wait(pid: int, limit: float) -> int | None:
    """The child's exit status, or None after killing it at the time limit."""
    deadline = time.monotonic() + limit
    delay = 0.001
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(delay)
        delay = min(0.05, delay * 2)


def _walk(path: str | os.PathLike[str]) -> None:
    """Touch everything the readers touch, except the values of numeric matrices."""
    try:
        with h5py.File(path, "r") as f:
            _attrs(f)
            f.visititems(_visit)
    except Exception:  # the real read reports it, precisely
        pass


def _visit(name: str, obj: object) -> None:
    try:
        _attrs(obj)
        if isinstance(obj, h5py.Dataset):
            _dataset(obj)
    except Exception:
        pass


def _attrs(obj) -> None:
    for key in obj.attrs:
        obj.attrs[key]


def _dataset(ds: h5py.Dataset) -> None:
    n = int(np.prod(ds.shape)) if ds.shape else 1
    stored = ds.id.get_storage_size()
    if n * ds.dtype.itemsize > 1100 * stored + (1 << 20):
        return  # a declared size the file cannot back: the reader refuses it without reading
    if ds.dtype.kind in "OSU" and ds.ndim == 1:
        for start in range(0, n, _SLICE):
            ds[start:start + _SLICE]
    elif ds.ndim == 0:
        ds[()]
    elif ds.chunks is not None and hasattr(ds.id, "chunk_iter"):
        ds.id.chunk_iter(_ignore)  # the chunk index, not the values


def _ignore(_info: object) -> None:
    return None
