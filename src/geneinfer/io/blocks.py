"""Random access to the samples of an expression file, one block at a time.

A :class:`BlockReader` knows a file's gene ids and gene metadata, its sample ids and sample
metadata, the scale the file states and its gene id kind, and reads the values of any range
of samples for any genes: ``read(start, stop, cols)``. Random access (not only iteration) is
what lets a killed prediction resume at its last finished block and each rank of a sharded
run read only its own samples. Memory stays at about one block:

* GCTX and h5ad read slices of the on-disk matrix (:mod:`geneinfer.io.gctx`,
  :mod:`geneinfer.io.h5ad`);
* text has no random access, so GCT and TSV/CSV are parsed once, with the same parser as a
  whole-file read, into a float32 *spool* (:class:`Spool`): in memory when small, else a
  temporary file that is deleted on :meth:`BlockReader.close`. A large GCT (genes in rows,
  their number known from the header, e.g. GTEx's 56,200 x 17,382 TPM table) is stored
  transposed, samples x genes, with plain file writes and reads: a block of samples is one
  contiguous read and the process's memory stays at one parsed chunk plus one block
  (pages of a memory map would count as resident memory until the kernel drops them);
* SOFT and series-matrix files are read whole (:class:`MemoryBlocks`), as is data already in
  memory.

Readers are made by :func:`geneinfer.io.open_blocks` and used as context managers.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from geneinfer.errors import GeneinferError, InputFormatError, MissingGenesError
from geneinfer.expression import ExpressionData
from geneinfer.io.cells import NonFinite, as_nonfinite, nonfinite_cells

#: Spools larger than this go to a temporary file instead of RAM.
SPOOL_IN_MEMORY_BYTES = 256 * 1024 * 1024
#: rows gathered before a transposed spool writes them (one write per column per batch)
_TRANSPOSE_BATCH_BYTES = 64 * 1024 * 1024


class BlockReader:
    """Base class of random-access readers (see the module docstring).

    Attributes
    ----------
    source
        The file (or a description of in-memory data), for messages.
    n_samples
        Number of samples in the file.
    gene_ids
        Gene ids in file order.
    genes
        Gene metadata indexed by ``gene_ids`` (with derived ``symbol``/``entrez`` columns).
    scale
        The scale the file states, else ``"unknown"`` (see :mod:`geneinfer.scales`).
    gene_id_kind
        What the gene ids are (see :mod:`geneinfer.idkinds`).
    nonfinite
        The policy for infinite values (and numbers beyond float32) and the count of those
        read as missing (:class:`~geneinfer.io.cells.NonFinite`).
    """

    source: str
    path: Path | None = None
    n_samples: int
    gene_ids: pd.Index
    genes: pd.DataFrame
    scale: str = "unknown"
    gene_id_kind: str = "unknown"
    #: where the values live, for messages (an HDF5 dataset; None for text and memory)
    values_where: str | None = None

    @property
    def nonfinite(self) -> NonFinite:
        # a reader that never set a policy has the default one ("error"), so every caller
        # (and every reader written later) can count on the attribute
        found = self.__dict__.get("_nonfinite")
        if found is None:
            found = self.__dict__["_nonfinite"] = NonFinite()
        return found

    @nonfinite.setter
    def nonfinite(self, value: str | NonFinite | None) -> None:
        self.__dict__["_nonfinite"] = as_nonfinite(value)

    # -- subclasses -----------------------------------------------------------------------
    def read(self, start: int, stop: int, cols: np.ndarray | None = None) -> np.ndarray:
        """Float32 values of samples ``start .. stop`` (rows) for gene columns ``cols``
        (positions into :attr:`gene_ids`; None = all)."""
        raise NotImplementedError

    def sample_ids(self) -> pd.Index:
        """All sample ids, in file order."""
        raise NotImplementedError

    def sample_columns(self) -> list[tuple[str, Callable[[], np.ndarray]]]:
        """``(name, getter)`` of each sample-metadata column; a getter loads the column for
        all samples (one column at a time keeps memory bounded for millions of samples)."""
        return []

    def close(self) -> None:
        """Release open files and temporary spools."""

    # -- shared ---------------------------------------------------------------------------
    def finite(self, block: np.ndarray, rows: np.ndarray | range,
               cols: np.ndarray | None) -> np.ndarray:
        """``block`` (just read: samples ``rows`` x genes ``cols``) under the non-finite
        policy: an error naming the first infinite value's sample and gene, or the value
        read as missing (NaN) and counted. Every reader's :meth:`read` ends with it."""
        bad = nonfinite_cells(block)
        if not bad.any():
            return block
        if self.nonfinite.policy == "error":
            r, c = (int(i) for i in np.argwhere(bad)[0])
            gene = self.gene_ids[c if cols is None else int(cols[c])]
            sample = self.sample_ids()[int(rows[r])]
            raise InputFormatError(
                self.source, f"value {block[r, c]} of sample {str(sample)[:40]}, gene "
                f"{str(gene)[:40]} is infinite or beyond float32", where=self.values_where,
                expected="finite numbers (or --nonfinite missing to read them as missing)")
        block = np.array(block, dtype=np.float32)  # never change the caller's (or file's) data
        block[bad] = np.nan
        self.nonfinite.count += int(bad.sum())
        return block

    def columns_of(self, genes: Sequence[str]) -> np.ndarray:
        """Column positions of ``genes`` (all must be present)."""
        pos = self.gene_ids.get_indexer(pd.Index([str(g) for g in genes]))
        if (pos < 0).any():
            absent = [str(g) for g, p in zip(genes, pos) if p < 0]
            raise MissingGenesError(absent, what="genes", source=self.source)
        return pos

    def samples(self, start: int = 0, stop: int | None = None) -> pd.DataFrame:
        """Sample metadata of samples ``start .. stop`` (index = sample ids)."""
        stop = self.n_samples if stop is None else stop
        ids = self.sample_ids()[start:stop]
        frame = pd.DataFrame(index=pd.Index(ids, dtype=object))
        for name, get in self.sample_columns():
            values = np.asarray(get())[start:stop]
            if values.dtype.kind == "S":
                values = np.char.decode(values, "utf-8").astype(object)
            frame[name] = values
        return frame

    def read_rows(self, rows: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
        """Values of the samples at positions ``rows`` (any order); readers with random
        row access override this, the default reads the range that spans them."""
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return np.empty((0, len(self.gene_ids) if cols is None else len(cols)), np.float32)
        lo = int(rows.min())
        return self.read(lo, int(rows.max()) + 1, cols)[rows - lo]

    def block(self, start: int, stop: int, *, genes: Sequence[str] | None = None
              ) -> ExpressionData:
        """Samples ``start .. stop`` as :class:`ExpressionData` (only ``genes``, if given)."""
        stop = min(stop, self.n_samples)
        cols = None if genes is None else self.columns_of(genes)
        return self._data(self.read(start, stop, cols), self.sample_ids()[start:stop],
                          self.samples(start, stop), cols)

    def take(self, rows: Sequence[int] | np.ndarray, *, genes: Sequence[str] | None = None
             ) -> ExpressionData:
        """The samples at positions ``rows`` (in that order) as :class:`ExpressionData`."""
        rows = np.asarray(rows, dtype=np.int64)
        cols = None if genes is None else self.columns_of(genes)
        return self._data(self.read_rows(rows, cols), self.sample_ids()[rows],
                          self.samples().iloc[rows], cols)

    def _data(self, values: np.ndarray, sample_ids: pd.Index, samples: pd.DataFrame,
              cols: np.ndarray | None) -> ExpressionData:
        return ExpressionData(
            values=values,
            gene_ids=self.gene_ids if cols is None else self.gene_ids[cols],
            sample_ids=sample_ids,
            genes=self.genes if cols is None else self.genes.iloc[cols],
            samples=samples,
            scale=self.scale,
            gene_id_kind=self.gene_id_kind,
            source=self.source,
        )

    def iter_blocks(self, block_size: int, *, genes: Sequence[str] | None = None
                    ) -> Iterator[ExpressionData]:
        """Consecutive blocks of at most ``block_size`` samples."""
        if block_size < 1:
            raise GeneinferError(f"block size must be a positive number of samples, "
                                 f"got {block_size}")
        for start in range(0, self.n_samples, block_size):
            yield self.block(start, start + block_size, genes=genes)

    def fingerprint(self) -> dict[str, object]:
        """What identifies this input for resuming: path, size, mtime, shape."""
        size = mtime = None
        if self.path is not None:
            try:
                st = self.path.stat()
                size, mtime = st.st_size, st.st_mtime_ns
            except OSError:
                pass
        return {
            "input": str(self.path.resolve()) if self.path is not None else self.source,
            "size": size,
            "mtime_ns": mtime,
            "n_samples": self.n_samples,
            "n_genes": len(self.gene_ids),
        }

    def __enter__(self) -> BlockReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MemoryBlocks(BlockReader):
    """Blocks of an :class:`ExpressionData` that is already in memory."""

    def __init__(self, data: ExpressionData, *, path: str | os.PathLike[str] | None = None,
                 nonfinite: str | NonFinite | None = None) -> None:
        self.data = data
        self.nonfinite = as_nonfinite(nonfinite)
        self.path = Path(path) if path is not None else None
        self.source = str(path) if path is not None else (data.source or "<in-memory data>")
        self.n_samples = data.n_samples
        self.gene_ids = data.gene_ids
        self.genes = data.genes
        self.scale = data.scale
        self.gene_id_kind = data.gene_id_kind

    def read(self, start: int, stop: int, cols: np.ndarray | None = None) -> np.ndarray:
        block = self.data.values[start:stop]
        block = block if cols is None else block[:, cols]
        return self.finite(block, range(start, start + len(block)), cols)

    def sample_ids(self) -> pd.Index:
        return self.data.sample_ids

    def sample_columns(self) -> list[tuple[str, Callable[[], np.ndarray]]]:
        s = self.data.samples
        return [(str(c), (lambda c=c: s[c].to_numpy())) for c in s.columns]

    def samples(self, start: int = 0, stop: int | None = None) -> pd.DataFrame:
        return self.data.samples.iloc[start:stop]

    def fingerprint(self) -> dict[str, object]:
        if self.path is not None and self.path.is_file():
            return super().fingerprint()
        digest = hashlib.sha256(np.ascontiguousarray(self.data.values).tobytes())
        digest.update("\t".join(self.data.gene_ids).encode())
        return {"memory": digest.hexdigest(), "n_samples": self.n_samples,
                "n_genes": len(self.gene_ids)}


def finite_data(data: ExpressionData, nonfinite: str | NonFinite | None, *,
                where: str | None = None) -> ExpressionData:
    """``data`` (just read whole) under the non-finite policy, as a reader's blocks are."""
    reader = MemoryBlocks(data, nonfinite=nonfinite)
    reader.values_where = where
    values = reader.finite(data.values, range(data.n_samples), None)
    return data if values is data.values else data.replace(values=values)


class Spool:
    """A float32 matrix filled row chunk by row chunk while text is parsed.

    ``rows`` is the file's row axis (genes of a GCT, samples or genes of a table). Small
    spools live in memory. A large spool whose number of rows is known up front is stored
    *transposed* in a temporary file (columns x rows, written with ``pwrite`` in batches of
    rows, read with ``pread``), so that :meth:`read_columns` of a range of columns is one
    contiguous read and nothing is memory-mapped; a large spool of unknown length goes to a
    temporary ``.npy`` memory map that grows. Temporary files are deleted by :meth:`close`.
    """

    def __init__(self, n_cols: int, *, n_rows: int | None = None) -> None:
        self.n_cols = int(n_cols)
        self.n_rows = 0
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._fd: int | None = None
        self._pending: list[np.ndarray] = []
        self._capacity = n_rows
        if n_rows is not None and n_rows * self.n_cols * 4 > SPOOL_IN_MEMORY_BYTES:
            self._array = np.empty((0, self.n_cols), dtype=np.float32)
            self._open_transposed()
        else:
            self._array = self._new(n_rows if n_rows is not None else 1024)

    @property
    def transposed(self) -> bool:
        """Stored columns x rows in a temporary file (see the class docstring)."""
        return self._fd is not None

    def _tempdir(self) -> str:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="geneinfer-spool-")
        return self._tmp.name

    def _open_transposed(self) -> None:
        name = os.path.join(self._tempdir(), "spool-transposed.f32")
        self._fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)

    def _new(self, capacity: int) -> np.ndarray:
        if capacity * self.n_cols * 4 <= SPOOL_IN_MEMORY_BYTES:
            return np.empty((capacity, self.n_cols), dtype=np.float32)
        name = os.path.join(self._tempdir(), f"spool{capacity}.npy")
        return np.lib.format.open_memmap(name, mode="w+", dtype=np.float32,
                                         shape=(capacity, self.n_cols))

    def append(self, chunk: np.ndarray) -> None:
        """Add rows (``(k, n_cols)``)."""
        if self.transposed:
            self._append_transposed(np.asarray(chunk, dtype=np.float32))
            return
        k = len(chunk)
        if self.n_rows + k > len(self._array):
            grown = self._new(max(2 * len(self._array), self.n_rows + k))
            grown[: self.n_rows] = self._array[: self.n_rows]
            self._array = grown
        self._array[self.n_rows : self.n_rows + k] = chunk
        self.n_rows += k

    def _append_transposed(self, chunk: np.ndarray) -> None:
        if self.n_rows + len(chunk) + sum(map(len, self._pending)) > (self._capacity or 0):
            raise GeneinferError(f"spool of {self._capacity} rows got more rows")
        self._pending.append(chunk)
        if sum(p.nbytes for p in self._pending) >= _TRANSPOSE_BATCH_BYTES:
            self._flush()

    def _flush(self) -> None:
        """Write the pending rows: per column one ``pwrite`` of a run of rows."""
        if not self._pending:
            return
        rows = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending = []
        cols = np.ascontiguousarray(rows.T)  # (n_cols, k): each column's run is contiguous
        k, row_bytes = rows.shape[0], 4 * int(self._capacity or 0)
        for j in range(self.n_cols):
            os.pwrite(self._fd, memoryview(cols[j]).cast("B"), j * row_bytes + 4 * self.n_rows)
        self.n_rows += k

    def read_columns(self, start: int, stop: int, cols: np.ndarray | None = None
                     ) -> np.ndarray:
        """Columns ``start .. stop`` as rows of a new ``(stop - start, rows)`` float32 array
        (only ``cols`` of the rows if given)."""
        if not self.transposed:
            rows = self.array
            part = rows[:, start:stop] if cols is None else rows[cols, start:stop]
            return np.ascontiguousarray(part.T)
        self._flush()
        stop = min(stop, self.n_cols)
        n = int(self._capacity or 0)
        out = np.empty((max(0, stop - start), n), dtype=np.float32)
        want, offset = out.nbytes, 4 * n * start
        got = 0
        view = memoryview(out).cast("B")
        while got < want:  # pread may return less than asked
            k = os.preadv(self._fd, [view[got:]], offset + got)
            if k <= 0:
                raise GeneinferError("temporary spool file is shorter than written")
            got += k
        return out if cols is None else out[:, cols]

    @property
    def array(self) -> np.ndarray:
        if self.transposed:
            raise GeneinferError("a transposed spool is read with read_columns()")
        return self._array[: self.n_rows]

    def close(self) -> None:
        self._array = np.empty((0, self.n_cols), dtype=np.float32)
        self._pending = []
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


class SpooledBlocks(BlockReader):
    """Blocks of a text file parsed once into a :class:`Spool`.

    Subclasses parse (with their format's own parser) and set :attr:`spool` (rows as in the
    file), :attr:`genes_in_rows`, the gene ids and metadata and :attr:`sample_table`.
    """

    spool: Spool
    genes_in_rows: bool = True
    sample_table: pd.DataFrame

    def read(self, start: int, stop: int, cols: np.ndarray | None = None) -> np.ndarray:
        if self.genes_in_rows:  # genes x samples in the file: a block is a range of columns
            block = self.spool.read_columns(start, stop, cols)
        else:
            part = self.spool.array[start:stop]
            block = np.array(part if cols is None else part[:, cols], dtype=np.float32)
        # the parser refused infinite values unless the policy reads them as missing; they
        # are counted here, where they are read
        return self.finite(block, range(start, start + len(block)), cols)

    def sample_ids(self) -> pd.Index:
        return self.sample_table.index

    def sample_columns(self) -> list[tuple[str, Callable[[], np.ndarray]]]:
        s = self.sample_table
        return [(str(c), (lambda c=c: s[c].to_numpy())) for c in s.columns]

    def samples(self, start: int = 0, stop: int | None = None) -> pd.DataFrame:
        return self.sample_table.iloc[start:stop]

    def close(self) -> None:
        self.spool.close()
