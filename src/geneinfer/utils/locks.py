"""Advisory locks that stop two geneinfer processes from writing the same file at once.

:func:`exclusive_lock` guards one *target* path (a download, a prediction output, a model
folder, a converted file) with an ``fcntl.flock`` lock on the sidecar file
``<target>.lock``. It never waits: a second writer fails at once with a one-line
:class:`LockHeldError` that names the target and the pid of the process holding it, which the
CLI prints and turns into exit code 2.

Why this cannot leave a lock that blocks forever: the kernel drops an ``flock`` lock when the
process holding it exits, however it exits (``SIGKILL`` included). A sidecar file left behind
by a killed process is therefore only a file; the next :func:`exclusive_lock` takes the lock
on it and overwrites the pid it records. On a normal exit (or an exception) the sidecar file
is removed while the lock is still held.

The lock is advisory: it only stops code that also calls :func:`exclusive_lock`. It is not
re-entrant (taking it twice in one process fails like a second process would), and it is held
per open file, so two threads of one process exclude each other as well.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from geneinfer.errors import GeneinferError

#: Suffix of the sidecar lock file: ``out.h5`` is guarded by ``out.h5.lock``.
LOCK_SUFFIX = ".lock"

# How often to retry when the lock file we opened was removed by its previous holder before
# we locked it (a window of microseconds; more than one retry means something is wrong).
_OPEN_ATTEMPTS = 5


class LockError(GeneinferError):
    """A lock file cannot be created or locked (permissions, missing folder, ...)."""


class LockHeldError(LockError):
    """Another process (or another thread of this one) holds the lock on ``target``.

    Parameters
    ----------
    target
        The path the lock guards.
    holder
        The pid recorded by the holder, or ``None`` if it could not be read.
    host
        The host name recorded by the holder, or ``None`` if it is this host / unknown.
    what
        What the holder is doing, as a present participle (``"downloading"``), as the holder
        recorded it in the sidecar file.
    """

    def __init__(
        self, target: Path, *, holder: int | None, host: str | None, what: str
    ) -> None:
        self.target = target
        self.holder_pid = holder
        who = f"pid {holder}" if holder is not None else "pid unknown"
        if host:
            who += f" on host {host}"
        super().__init__(
            f"another geneinfer process ({who}) is {what} {target}; wait for it or stop it"
        )


def lock_path(target: str | os.PathLike[str]) -> Path:
    """The sidecar lock file of ``target``: ``<target>.lock`` in the same folder."""
    target = Path(target)
    return target.with_name(target.name + LOCK_SUFFIX)


@contextlib.contextmanager
def exclusive_lock(target: str | os.PathLike[str], *, what: str = "writing") -> Iterator[Path]:
    """Hold an exclusive advisory lock on ``target`` for the duration of a ``with`` block.

    Parameters
    ----------
    target
        The file or folder about to be written. It need not exist; its parent folder must.
    what
        What this process does to ``target``, as a present participle: ``"downloading"``,
        ``"writing"``, ``"converting"``. It is recorded in the sidecar file, so that a second
        process that finds the lock taken can say what the holder is doing.

    Yields
    ------
    Path
        The sidecar lock file (``<target>.lock``); while locked it holds one line
        ``"<pid> <host> <what>"``.

    Raises
    ------
    LockHeldError
        At once (never waits) if another process or thread holds the lock. The message is
        one line naming ``target`` and the holder's pid.
    LockError
        If the lock file cannot be created or locked (e.g. a read-only folder).

    Examples
    --------
    >>> with exclusive_lock(path, what="downloading"):  # doctest: +SKIP
    ...     write_part_file_then_rename()
    """
    target = Path(target)
    sidecar = lock_path(target)
    fd = _acquire(sidecar, target, what)
    try:
        yield sidecar
    finally:
        _release(sidecar, fd)


def _acquire(sidecar: Path, target: Path, what: str) -> int:
    """Open and lock ``sidecar``; return its descriptor (the lock lives as long as it)."""
    for _ in range(_OPEN_ATTEMPTS):
        fd = _open(sidecar)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, host, doing = _read_holder(fd)
            os.close(fd)
            raise LockHeldError(target, holder=pid, host=host, what=doing or what) from None
        except OSError as exc:
            os.close(fd)
            raise LockError(f"cannot lock {sidecar}: {exc.strerror}") from exc
        # The previous holder removes the file just before it lets go: if that happened
        # between our open() and flock(), we locked an orphan. Start again on the new file.
        if _is_current(fd, sidecar):
            _write_holder(fd, what)
            return fd
        os.close(fd)
    raise LockError(f"cannot lock {sidecar}: it keeps being replaced by other processes")


def _open(sidecar: Path) -> int:
    # O_NOFOLLOW: never write a pid through a symlink planted at the lock's name.
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        return os.open(sidecar, flags, 0o644)
    except OSError as exc:
        raise LockError(f"cannot create lock file {sidecar}: {exc.strerror}") from exc


def _is_current(fd: int, sidecar: Path) -> bool:
    try:
        st = os.stat(sidecar, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _write_holder(fd: int, what: str) -> None:
    # One line "<pid> <host> <what>": the host tells a pid on a shared (NFS) folder apart,
    # and "what" lets a waiting process say what the holder is doing.
    os.ftruncate(fd, 0)
    line = f"{os.getpid()} {socket.gethostname()} {' '.join(what.split())}\n"
    os.pwrite(fd, line.encode(), 0)


def _read_holder(fd: int) -> tuple[int | None, str | None, str | None]:
    """Pid, host (only when it is another host) and activity recorded in a sidecar file."""
    text = ""
    for _ in range(2):  # the holder writes its pid just after locking: give it a moment
        text = os.pread(fd, 256, 0).decode("utf-8", "replace")
        if text.strip():
            break
        time.sleep(0.05)
    parts = text.split(maxsplit=2)
    pid = int(parts[0]) if parts and parts[0].isdigit() else None
    host = parts[1] if len(parts) > 1 and parts[1] != socket.gethostname() else None
    doing = parts[2].strip() if len(parts) > 2 else None
    return pid, host, doing


def _release(sidecar: Path, fd: int) -> None:
    """Remove the sidecar file (only if it is still ours), then drop the lock."""
    try:
        if _is_current(fd, sidecar):
            with contextlib.suppress(FileNotFoundError):
                sidecar.unlink()
    finally:
        os.close(fd)  # closing the last descriptor releases the flock
