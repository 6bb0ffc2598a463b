"""Small file helpers shared by writers: atomic writes so no partial output is ever left.

Every output is first written under a hidden temporary name next to it,
``.<name>.<pid>-<random>.part<suffix>``, and renamed onto its final name only when complete.
The writer's pid in the name lets a later run tell its own leftovers (from a run that was
killed, so never cleaned up) from another process's files in progress: before writing a
target, :func:`atomic_path` and :func:`atomic_dir` remove the stale temporary files and
folders *of that target* whose process no longer exists.

Temporary files are created like any new file (mode 0666 less the umask, so typically 0644),
never with :func:`tempfile.mkstemp`'s private 0600, so what is renamed into place has the
permissions a user expects. A write that fails for a reason of the disk (read-only folder,
full disk, file-size limit) raises one :class:`OutputError` line and leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from geneinfer.errors import GeneinferError
from geneinfer.utils.libc import libc_function

_TEMP_KINDS = ("part", "old")


class OutputError(GeneinferError):
    """An output cannot be written (permissions, full disk, file-size limit, ...)."""


def os_reason(exc: BaseException) -> str:
    """A one-line reason for an I/O failure, naming a full disk or a file size limit."""
    err = getattr(exc, "errno", None)
    if err in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return f"disk full or file size limit reached: {os.strerror(err)}"
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if "No space" in text or "File too large" in text or "file size limit" in text.lower():
        return f"disk full or file size limit reached: {text}"
    if err is not None and getattr(exc, "strerror", None):
        return str(exc.strerror)
    return text


@contextlib.contextmanager
def output_errors(path: str | os.PathLike[str], *, what: str = "write") -> Iterator[None]:
    """Turn an ``OSError`` while writing ``path`` into one :class:`OutputError` line."""
    try:
        yield
    except OSError as exc:
        raise OutputError(f"cannot {what} {path}: {os_reason(exc)}") from None


def temp_name(final: Path, kind: str = "part", suffix: str = "") -> Path:
    """A fresh hidden name next to ``final`` that records this process's pid."""
    return final.with_name(f".{final.name}.{os.getpid()}-{secrets.token_hex(4)}.{kind}{suffix}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def stale_temps(final: Path) -> list[Path]:
    """Temporary files and folders of ``final`` left by processes that no longer exist."""
    pattern = re.compile(rf"\.{re.escape(final.name)}\.(\d+)-[0-9a-f]+\.({'|'.join(_TEMP_KINDS)})")
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(final.parent):
            m = pattern.match(entry.name)
            if m and not _pid_alive(int(m.group(1))):
                found.append(Path(entry.path))
    return found


def remove_stale_temps(final: Path) -> None:
    """Remove what :func:`stale_temps` finds (best effort: a file in use stays)."""
    for path in stale_temps(final):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()


def _make_parent(final: Path) -> None:
    with output_errors(final.parent, what="create the folder"):
        final.parent.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    On any exception (including KeyboardInterrupt) the temporary file is removed, so a
    reader never sees a half-written file under the final name. An ``OSError`` (read-only
    folder, full disk, file-size limit) becomes one :class:`OutputError` line.
    """
    final = Path(path)
    _make_parent(final)
    remove_stale_temps(final)
    sfx = suffix if suffix is not None else "".join(final.suffixes) or ".tmp"
    tmp = temp_name(final, "part", sfx)
    try:
        with output_errors(final):
            # created by us, like any new file: 0666 less the umask (mkstemp would give 0600)
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            yield tmp
            os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Like :func:`atomic_path` for a folder: yield a new empty temporary folder next to
    ``path`` to fill; it replaces ``path`` (which may exist) only on success.

    The swap is one atomic exchange where the system has it (Linux ``renameat2``), so a kill
    at any moment leaves either the old or the new folder at ``path`` and a stale temporary
    folder that the next write of ``path`` removes.
    """
    final = Path(path)
    _make_parent(final)
    restore_orphan(final)
    remove_stale_temps(final)
    tmp = temp_name(final, "part")
    with output_errors(final, what="create"):
        os.mkdir(tmp, 0o777)  # the umask applies, as to any new folder
    try:
        with output_errors(final):
            yield tmp
            replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def restore_orphan(final: Path) -> None:
    """A folder moved aside by a killed :func:`replace_dir` (no exchange available) goes
    back to ``final`` if nothing took its place."""
    if final.exists():
        return
    for path in stale_temps(final):
        if path.name.endswith(".old") and path.is_dir():
            with contextlib.suppress(OSError):
                os.replace(path, final)
                return


def replace_dir(tmp: Path, final: Path) -> None:
    """Move folder ``tmp`` onto ``final``; an old ``final`` is deleted after the swap."""
    if final.exists() and _exchange(tmp, final):
        shutil.rmtree(tmp, ignore_errors=True)  # now holds the old content
        return
    old: Path | None = None
    if final.exists():
        old = temp_name(final, "old")
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        if old is not None:
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    fn = libc_function("renameat2", ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                       ctypes.c_char_p, ctypes.c_uint)
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))
