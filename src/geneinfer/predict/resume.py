"""Unfinished prediction outputs: ``OUT.partial`` files and records of finished blocks.

A streamed prediction writes into ``OUT.partial`` (a preallocated GCTX/h5ad file, see
:mod:`geneinfer.io.preallocated`) whose root attributes say it is unfinished
(``geneinfer_complete = 0``) and what produced it (``geneinfer_fingerprint``: input, model
and options). Which blocks are finished is recorded in small append-only side files
``OUT.partial.done<rank>`` (one line per finished block, written after the block's bytes), so
a rerun of the same command resumes from the last finished block whatever the number of
ranks. When every block is recorded the file is marked complete and renamed to ``OUT``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from geneinfer.io.preallocated import matrix_layout, set_attrs

COMPLETE_ATTR = "geneinfer_complete"
FINGERPRINT_ATTR = "geneinfer_fingerprint"


def partial_path(path: str | os.PathLike[str]) -> Path:
    """Where an unfinished output is kept: ``OUT.partial``."""
    p = Path(path)
    return p.with_name(p.name + ".partial")


def done_paths(path: str | os.PathLike[str]) -> list[Path]:
    """The progress side files of ``OUT.partial`` (one per rank that wrote blocks)."""
    part = partial_path(path)
    return sorted(part.parent.glob(part.name + ".done*"))


def partial_attrs(fingerprint: str) -> dict[str, object]:
    """Root attributes of a new unfinished output."""
    return {COMPLETE_ATTR: np.int8(0), FINGERPRINT_ATTR: fingerprint}


def read_partial_header(path: str | os.PathLike[str], fmt: str
                        ) -> tuple[str, int, tuple[int, int]] | None:
    """``(fingerprint, matrix byte offset, matrix shape)`` of an unfinished output, or None
    when the file is absent, unreadable or not an unfinished geneinfer output."""
    layout = matrix_layout(path, fmt)
    if layout is None:
        return None
    offset, shape, attrs = layout
    fingerprint = attrs.get(FINGERPRINT_ATTR)
    if int(attrs.get(COMPLETE_ATTR, -1)) != 0 or fingerprint is None:
        return None
    if isinstance(fingerprint, bytes):
        fingerprint = fingerprint.decode()
    return str(fingerprint), offset, shape


class ProgressLog:
    """Append-only record of finished blocks: ``OUT.partial.done<rank>``.

    The first line is the fingerprint of the run; then one block number per line, appended
    after that block's rows are written. A torn last line (killed mid-append) is ignored.
    """

    def __init__(self, output: str | os.PathLike[str], *, rank: int, fingerprint: str) -> None:
        part = partial_path(output)
        self.path = part.with_name(f"{part.name}.done{rank}")
        self.fingerprint = fingerprint
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if fresh:
            os.write(self._fd, f"fp {fingerprint}\n".encode())

    def mark_done(self, block: int) -> None:
        os.write(self._fd, f"{block}\n".encode())

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    @staticmethod
    def finished_blocks(output: str | os.PathLike[str], fingerprint: str) -> set[int]:
        """Blocks recorded as finished by any rank for this fingerprint."""
        done: set[int] = set()
        for p in done_paths(output):
            try:
                lines = p.read_text().split("\n")
            except OSError:
                continue
            if not lines or lines[0] != f"fp {fingerprint}":
                continue
            # the last element is "" after a complete line, or a torn line: skip it
            for line in lines[1:-1]:
                if line.strip().isdigit():
                    done.add(int(line))
        return done


def remove_partial(output: str | os.PathLike[str]) -> None:
    """Delete ``OUT.partial`` and its progress files."""
    for p in [partial_path(output), *done_paths(output)]:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def finish(output: str | os.PathLike[str]) -> Path:
    """Mark ``OUT.partial`` complete, rename it to ``OUT`` and drop the progress files."""
    part = partial_path(output)
    set_attrs(part, **{COMPLETE_ATTR: np.int8(1)})
    os.replace(part, output)
    for p in done_paths(output):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return Path(output)
