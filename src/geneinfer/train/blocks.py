"""Reading training data in blocks: one input's harmonised landmark/target blocks, a
read-ahead thread, and the shuffled stream the neural trainer reads out of core.

* :class:`InputPlan` - one opened input (a :class:`~geneinfer.io.BlockReader`) with its
  :class:`~geneinfer.preprocess.Harmonizer`, the harmonised positions of the model's
  landmarks and targets, and its place in the global sample index of all inputs.
* :func:`prefetch` - apply a function to items in a background thread, a few items ahead,
  so that reading and decompressing the next block overlaps computing on this one.
* :class:`StreamedSource` - the training rows of all inputs served as preprocessed batches
  in a new random order every epoch: the rows are cut into chunks of consecutive samples
  (whole on-disk chunks where the file has them), each rank of a distributed run owns a
  seeded share of the chunks, every epoch visits its chunks in a new random order and
  shuffles the rows within windows of several chunks (the shuffle buffer). The order is a
  function of (seed, epoch, rank) alone, so an interrupted epoch resumes at its step.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch

from geneinfer.io import BlockReader
from geneinfer.preprocess import Harmonizer

T = TypeVar("T")
R = TypeVar("R")


# --------------------------------------------------------------------------- inputs
@dataclass(eq=False)
class InputPlan:
    """One training input: reader, harmoniser, and where its model genes are.

    Attributes
    ----------
    reader, harmonizer
        The opened input and how its blocks become log2 Entrez genes.
    outputs
        Positions among the harmonised genes of the landmarks, then the targets.
    n_landmarks
        How many of ``outputs`` are landmarks.
    read_cols
        Input columns to read (None = all; counts always need all, for library sizes).
    offset
        Global index of this input's first sample.
    group_labels
        Group of each sample (e.g. the series of an ARCHS4 sample; else the file).
    """

    reader: BlockReader
    harmonizer: Harmonizer
    outputs: np.ndarray
    n_landmarks: int
    read_cols: np.ndarray | None
    offset: int
    group_labels: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0, object))

    @property
    def n_samples(self) -> int:
        return int(self.reader.n_samples)

    @property
    def name(self) -> str:
        return self.reader.source

    @property
    def alignment(self) -> int:
        """Samples per on-disk chunk (blocks that are multiples read whole chunks)."""
        return max(1, int(getattr(self.reader, "chunk_samples", 1) or 1))

    def load(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """log2 landmark and target values (float32) of samples ``start .. stop``."""
        raw = self.reader.read(start, stop, self.read_cols)
        ids = self.reader.sample_ids()[start:stop]
        values = self.harmonizer.transform(raw, outputs=self.outputs, columns=self.read_cols,
                                           sample_ids=ids)
        del raw
        return values[:, : self.n_landmarks], values[:, self.n_landmarks:]


@dataclass(frozen=True)
class Block:
    """Samples ``start .. stop`` of input ``source`` (positions within that input)."""

    source: int
    start: int
    stop: int

    def rows(self, plans: list[InputPlan]) -> np.ndarray:
        """Global sample indices of the block."""
        off = plans[self.source].offset
        return np.arange(off + self.start, off + self.stop, dtype=np.int64)


def plan_blocks(plans: list[InputPlan], block_rows: int) -> list[Block]:
    """Consecutive blocks of about ``block_rows`` samples of every input, rounded to whole
    on-disk chunks of each input."""
    blocks = []
    for k, plan in enumerate(plans):
        step = max(plan.alignment, (block_rows // plan.alignment) * plan.alignment)
        blocks.extend(Block(k, s, min(s + step, plan.n_samples))
                      for s in range(0, plan.n_samples, step))
    return blocks


# --------------------------------------------------------------------------- read-ahead
_DONE = object()


def prefetch(produce: Callable[[T], R], items: Iterable[T], *, depth: int = 2
             ) -> Iterator[R]:
    """``produce(item)`` for each item, computed in a background thread at most ``depth``
    results ahead of the consumer.

    Reading and decompressing (h5py, gzip) and numpy work release the interpreter lock, so
    the next block is read while this one is used. An exception in ``produce`` is raised in
    the consumer; closing the generator (or an exception in the consumer) stops the thread.
    """
    results: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(value: object) -> bool:
        while not stop.is_set():
            try:
                results.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if stop.is_set() or not put(("ok", produce(item))):
                    return
            put(("end", _DONE))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(("error", exc))

    thread = threading.Thread(target=work, name="geneinfer-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = results.get()
            if kind == "end":
                return
            if kind == "error":
                raise value  # type: ignore[misc]
            yield value  # type: ignore[misc]
    finally:
        stop.set()
        while thread.is_alive():
            try:
                results.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()


# --------------------------------------------------------------------------- streaming
@dataclass(frozen=True)
class _Window:
    chunks: tuple[int, ...]
    order: np.ndarray  # permutation of the window's rows
    n_rows: int


class StreamedSource:
    """Training rows read from the inputs in shuffled chunks (see the module docstring).

    Parameters
    ----------
    plans
        The inputs.
    usable
        Boolean mask over the global sample index: complete training rows.
    transform
        ``(X log2, Y log2) -> (x, y)``: preprocessing and standardization of a window.
    n_in, n_out
        Widths of the transformed landmark and target blocks.
    chunk_rows
        Samples per chunk (rounded to whole on-disk chunks).
    window_rows
        Rows shuffled together (the shuffle buffer); at most two windows are in memory
        besides the one being read (and one chunk's temporaries).
    identity
        Text identifying the data and preprocessing, for the trainer's checkpoint
        fingerprint.
    """

    def __init__(self, plans: list[InputPlan], usable: np.ndarray, *,
                 transform: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
                 n_in: int, n_out: int, chunk_rows: int, window_rows: int,
                 identity: str) -> None:
        self.plans = plans
        self.transform = transform
        self.n_in, self.n_out = int(n_in), int(n_out)
        self.window_rows = max(1, int(window_rows))
        self._identity = identity
        self.chunks: list[Block] = []
        self.chunk_usable: list[np.ndarray] = []
        for block in plan_blocks(plans, chunk_rows):
            local = np.flatnonzero(usable[block.rows(plans)]).astype(np.int64) + block.start
            if len(local):
                self.chunks.append(block)
                self.chunk_usable.append(local)
        self.n_rows = int(sum(len(u) for u in self.chunk_usable))

    def __len__(self) -> int:
        return self.n_rows

    def fingerprint(self) -> str:
        h = hashlib.blake2b(digest_size=16)
        h.update(self._identity.encode())
        h.update(str((self.n_rows, self.n_in, self.n_out, len(self.chunks))).encode())
        for block, rows in zip(self.chunks, self.chunk_usable):
            h.update(np.array([block.source, block.start, block.stop, len(rows)]).tobytes())
        return h.hexdigest()

    # -- the order of an epoch ------------------------------------------------------------
    def _rank_chunks(self, rank: int, world_size: int, seed: int) -> np.ndarray:
        """The chunks a rank reads (a seeded share, the same every epoch)."""
        perm = np.random.default_rng([seed, 7]).permutation(len(self.chunks))
        return perm[rank::world_size]

    def _rank_rows(self, rank: int, world_size: int, seed: int) -> int:
        return int(sum(len(self.chunk_usable[c])
                       for c in self._rank_chunks(rank, world_size, seed)))

    def steps_per_epoch(self, batch_size: int, world_size: int, *, seed: int = 0) -> int:
        """Batches per epoch: the same on every rank (the fewest rows any rank owns)."""
        return min(self._rank_rows(r, world_size, seed) for r in range(world_size)) \
            // max(1, batch_size)

    def _windows(self, epoch: int, rank: int, world_size: int, seed: int) -> list[_Window]:
        rng = np.random.default_rng([seed, epoch, rank])
        mine = rng.permutation(self._rank_chunks(rank, world_size, seed))
        windows: list[_Window] = []
        current: list[int] = []
        n = 0
        for c in mine:
            current.append(int(c))
            n += len(self.chunk_usable[c])
            if n >= self.window_rows:
                windows.append(_Window(tuple(current), rng.permutation(n), n))
                current, n = [], 0
        if current:
            windows.append(_Window(tuple(current), rng.permutation(n), n))
        return windows

    # -- reading --------------------------------------------------------------------------
    def load_window(self, window: _Window) -> tuple[np.ndarray, np.ndarray]:
        """The window's rows, transformed, in its shuffled order.

        Each chunk is transformed on its own and its rows are written straight to their
        shuffled places in one preallocated pair of arrays: the window's memory is those
        arrays plus one chunk's temporaries (no stacked, transformed and permuted copies).
        """
        place = np.empty(window.n_rows, dtype=np.int64)
        place[window.order] = np.arange(window.n_rows)  # row k of the window goes to place[k]
        X_out = np.empty((window.n_rows, self.n_in), dtype=np.float32)
        Y_out = np.empty((window.n_rows, self.n_out), dtype=np.float32)
        done = 0
        for c in window.chunks:
            block = self.chunks[c]
            X, Y = self.plans[block.source].load(block.start, block.stop)
            local = self.chunk_usable[c] - block.start
            x, y = self.transform(X[local], Y[local])
            del X, Y
            at = place[done:done + len(local)]
            X_out[at], Y_out[at] = x, y
            done += len(local)
            del x, y
        return X_out, Y_out

    def epoch_batches(self, *, epoch: int, start_step: int, batch_size: int, rank: int = 0,
                      world_size: int = 1, seed: int = 0
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's batches of ``epoch`` from step ``start_step`` on (windows are read
        ahead in a background thread)."""
        windows = self._windows(epoch, rank, world_size, seed)
        left = self.steps_per_epoch(batch_size, world_size, seed=seed) - start_step
        skip = start_step * batch_size
        first = 0
        while first < len(windows) and skip >= windows[first].n_rows:
            skip -= windows[first].n_rows
            first += 1
        carry_x = np.empty((0, self.n_in), np.float32)
        carry_y = np.empty((0, self.n_out), np.float32)
        if left <= 0:
            return
        for X, Y in prefetch(self.load_window, windows[first:], depth=1):
            if skip:
                X, Y, skip = X[skip:], Y[skip:], 0
            if len(carry_x):
                X, Y = np.concatenate([carry_x, X]), np.concatenate([carry_y, Y])
            start = 0
            while len(X) - start >= batch_size and left > 0:
                yield (torch.from_numpy(X[start:start + batch_size]),
                       torch.from_numpy(Y[start:start + batch_size]))
                start += batch_size
                left -= 1
            if left <= 0:
                return
            carry_x, carry_y = X[start:].copy(), Y[start:].copy()
