"""Random-access sample blocks from expression files, with memory bounded by one block.

A :class:`BlockSource` gives the input's gene ids and gene metadata, its sample ids and sample
metadata columns, and ``read(start, stop, cols)``: the values of samples ``start..stop`` for the
gene columns ``cols``. Random access (not just iteration) is what lets a killed run resume at
its last finished block and lets each rank of a sharded run read only its own samples.

* GCTX: h5py slices of ``/0/DATA/0/matrix`` (samples x genes on disk in the CMap layout).
* h5ad: anndata backed mode (dense or sparse ``X``).
* GCT (optionally gzipped): text has no random access, so it is parsed once, line by line
  (one gene at a time), into a float32 spool — in memory when small, else a temporary
  memory-mapped file — from which blocks are then sliced.
* TSV/CSV (either orientation, detected by :func:`geneinfer.io.read`) and anything else
  ``geneinfer.io`` reads are read whole: such files are small in practice.
  (:class:`TextSource` can also spool a genes-in-rows TSV/CSV.)
"""

from __future__ import annotations

import contextlib
import gzip
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from geneinfer.errors import GeneinferError, InputFormatError
from geneinfer.expression import ExpressionData

# spools larger than this go to a memory-mapped temporary file instead of RAM
_SPOOL_IN_MEMORY_BYTES = 256 * 1024 * 1024
_NA_TOKENS = {"", "na", "nan", "null", "none", "#n/a", "n/a", "-nan"}


def _decode(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "S":
        return np.char.decode(values, "utf-8").astype(object)
    return values


class BlockSource:
    """Base class of random-access sample-block readers (see the module docstring)."""

    path: Path
    n_samples: int
    gene_ids: pd.Index
    gene_meta: pd.DataFrame

    def read(self, start: int, stop: int, cols: np.ndarray) -> np.ndarray:
        """``(stop - start, len(cols))`` float32 values of samples ``start..stop``."""
        raise NotImplementedError

    def sample_ids(self) -> np.ndarray:
        """All sample ids, in file order."""
        raise NotImplementedError

    def sample_columns(self) -> list[tuple[str, Callable[[], np.ndarray]]]:
        """``(name, getter)`` of each sample-metadata column (getter loads all samples)."""
        return []

    def fingerprint(self) -> dict[str, object]:
        """What identifies this input for resuming: path, size, mtime, shape."""
        try:
            st = self.path.stat()
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size, mtime = None, None
        return {
            "input": str(self.path.resolve()) if self.path else None,
            "size": size,
            "mtime_ns": mtime,
            "n_samples": self.n_samples,
            "n_genes": len(self.gene_ids),
        }

    def close(self) -> None:
        """Release open files and temporary spools."""

    def __enter__(self) -> BlockSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GCTXSource(BlockSource):
    """CMap GCTX: ``/0/DATA/0/matrix`` is samples x genes, metadata under ``/0/META``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import h5py

        self.path = Path(path)
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise InputFormatError(self.path, f"not a readable HDF5/GCTX file ({exc})") from None
        f = self._file
        for name in ("0/DATA/0/matrix", "0/META/ROW/id", "0/META/COL/id"):
            if name not in f:
                self.close()
                raise InputFormatError(
                    self.path, "dataset missing", where=f"/{name}", expected="CMap GCTX layout"
                )
        self._matrix = f["0/DATA/0/matrix"]
        row = f["0/META/ROW"]
        self.gene_ids = pd.Index(_decode(row["id"][:]).astype(str), name="gene_id")
        self.gene_meta = pd.DataFrame(
            {k: _decode(row[k][:]) for k in row if k != "id" and row[k].ndim == 1},
            index=self.gene_ids,
        )
        self._col = f["0/META/COL"]
        self.n_samples = int(self._col["id"].shape[0])
        expected = (self.n_samples, len(self.gene_ids))
        if self._matrix.ndim != 2 or tuple(self._matrix.shape) != expected:
            shape = tuple(self._matrix.shape)
            self.close()
            raise InputFormatError(
                self.path,
                f"matrix has shape {shape}",
                where="/0/DATA/0/matrix",
                expected=f"{expected} (samples x genes, from /0/META/COL/id and /0/META/ROW/id)",
            )

    def read(self, start: int, stop: int, cols: np.ndarray) -> np.ndarray:
        block = np.asarray(self._matrix[start:stop], dtype=np.float32)
        if len(cols) == block.shape[1] and np.array_equal(cols, np.arange(block.shape[1])):
            return block
        return block[:, cols]

    def sample_ids(self) -> np.ndarray:
        return _decode(self._col["id"][:]).astype(str)

    def sample_columns(self) -> list[tuple[str, Callable[[], np.ndarray]]]:
        col = self._col
        return [
            (name, (lambda n=name: col[n][:]))
            for name in col
            if name != "id" and col[name].ndim == 1 and col[name].shape[0] == self.n_samples
        ]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._file.close()


class H5adSource(BlockSource):
    """AnnData ``.h5ad`` (obs = samples, var = genes) in backed (on-disk) mode."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import anndata

        self.path = Path(path)
        try:
            self._ad = anndata.read_h5ad(self.path, backed="r")
        except (OSError, KeyError, ValueError) as exc:
            raise InputFormatError(self.path, f"not a readable h5ad file ({exc})") from None
        self.gene_ids = pd.Index(self._ad.var_names.astype(str), name="gene_id")
        self.gene_meta = self._ad.var.set_axis(self.gene_ids, axis=0)
        self.n_samples = int(self._ad.n_obs)

    def read(self, start: int, stop: int, cols: np.ndarray) -> np.ndarray:
        block = self._ad.X[start:stop]
        if hasattr(block, "toarray"):
            block = block.toarray()
        return np.asarray(block, dtype=np.float32)[:, cols]

    def sample_ids(self) -> np.ndarray:
        return np.asarray(self._ad.obs_names, dtype=str)

    def sample_columns(self) -> list[tuple[str, Callable[[], np.ndarray]]]:
        obs = self._ad.obs
        return [(str(c), (lambda c=c: obs[c].to_numpy())) for c in obs.columns]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._ad.file.close()


class MemorySource(BlockSource):
    """An :class:`~geneinfer.expression.ExpressionData` already in memory."""

    def __init__(self, data: ExpressionData, *, path: str | os.PathLike[str] | None = None) -> None:
        self.data = data
        self.path = Path(path or data.source or "<memory>")
        self.gene_ids = data.gene_ids
        self.gene_meta = data.genes
        self.n_samples = data.n_samples

    def read(self, start: int, stop: int, cols: np.ndarray) -> np.ndarray:
        return self.data.values[start:stop][:, cols]

    def sample_ids(self) -> np.ndarray:
        return np.asarray(self.data.sample_ids, dtype=str)

    def sample_columns(self) -> list[tuple[str, Callable[[], np.ndarray]]]:
        s = self.data.samples
        return [(str(c), (lambda c=c: s[c].to_numpy())) for c in s.columns]

    def fingerprint(self) -> dict[str, object]:
        if self.path.is_file():
            return super().fingerprint()
        import hashlib

        digest = hashlib.sha256(np.ascontiguousarray(self.data.values).tobytes()).hexdigest()
        return {"memory": digest, "n_samples": self.n_samples, "n_genes": len(self.gene_ids)}


class TextSource(BlockSource):
    """GCT 1.2/1.3 or a genes-in-rows TSV/CSV, parsed once into a float32 spool.

    TSV/CSV layout: a header line ``gene_id<sep>sample1<sep>...`` then one line per gene.
    """

    def __init__(self, path: str | os.PathLike[str], *, fmt: str) -> None:
        self.path = Path(path)
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._sep = "," if fmt == "csv" else "\t"
        opener = gzip.open if self.path.suffix == ".gz" else open
        try:
            with opener(self.path, "rt", encoding="utf-8", newline="") as fh:
                self._parse(fh, fmt)
        except (OSError, UnicodeDecodeError, EOFError) as exc:
            self.close()
            raise InputFormatError(self.path, f"cannot read file ({exc})") from None

    # -- header ---------------------------------------------------------------
    def _fields(self, line: str) -> list[str]:
        return line.rstrip("\r\n").split(self._sep)

    def _parse(self, fh, fmt: str) -> None:
        lineno = 0
        n_rows = None
        n_rmeta, n_cmeta = 0, 0
        if fmt == "gct":
            version = fh.readline().strip()
            dims = self._fields(fh.readline())
            lineno = 2
            try:
                if version == "#1.3":
                    n_rows, _, n_rmeta, n_cmeta = (int(x) for x in dims[:4])
                elif version == "#1.2":
                    n_rows, n_rmeta = int(dims[0]), 1
                else:
                    raise InputFormatError(self.path, f"version line {version!r}", where=1,
                                           expected="#1.2 or #1.3")
            except ValueError:
                raise InputFormatError(
                    self.path, "bad dimension line", where=2, expected="integers"
                ) from None
        header = self._fields(fh.readline())
        lineno += 1
        meta_names = header[1 : 1 + n_rmeta]
        self._sample_ids = np.asarray(header[1 + n_rmeta :], dtype=object)
        n_samples = len(self._sample_ids)
        if n_samples == 0:
            raise InputFormatError(self.path, "no sample columns", where=lineno)
        self.n_samples = n_samples
        self._col_meta: dict[str, np.ndarray] = {}
        width = 1 + n_rmeta + n_samples
        for _ in range(n_cmeta):
            fields = self._fields(fh.readline())
            lineno += 1
            self._check_width(fields, width, lineno)
            self._col_meta[fields[0]] = np.asarray(fields[1 + n_rmeta :], dtype=object)
        self._spool_rows(fh, lineno, n_rows, n_rmeta, meta_names, width)

    def _check_width(self, fields: list[str], width: int, lineno: int) -> None:
        if len(fields) != width:
            raise InputFormatError(
                self.path, f"row has {len(fields)} fields", where=lineno,
                expected=f"{width} fields (gene id + metadata + {self.n_samples} samples)",
            )

    # -- values ---------------------------------------------------------------
    def _new_spool(self, n_rows: int) -> np.ndarray:
        nbytes = n_rows * self.n_samples * 4
        if nbytes <= _SPOOL_IN_MEMORY_BYTES:
            return np.empty((n_rows, self.n_samples), dtype=np.float32)
        self._tmp = tempfile.TemporaryDirectory(prefix="geneinfer-spool-")
        return np.lib.format.open_memmap(
            os.path.join(self._tmp.name, "spool.npy"), mode="w+", dtype=np.float32,
            shape=(n_rows, self.n_samples),
        )

    def _parse_values(self, tokens: list[str], lineno: int, first_col: int) -> np.ndarray:
        try:
            return np.asarray(tokens, dtype=np.float32)
        except ValueError:
            out = np.empty(len(tokens), dtype=np.float32)
            for i, tok in enumerate(tokens):
                t = tok.strip()
                if t.lower() in _NA_TOKENS:
                    out[i] = np.nan
                    continue
                try:
                    out[i] = float(t)
                except ValueError:
                    raise InputFormatError(
                        self.path, f"value {tok!r} in column {first_col + i + 1} is not a number",
                        where=lineno, expected="a number or NaN",
                    ) from None
            return out

    def _spool_rows(self, fh, lineno: int, n_rows: int | None, n_rmeta: int,
                    meta_names: list[str], width: int) -> None:
        ids: list[str] = []
        meta: list[list[str]] = []
        capacity = n_rows if n_rows is not None else 1024
        spool = self._new_spool(capacity)
        for line in fh:
            lineno += 1
            if not line.strip():
                continue
            fields = self._fields(line)
            self._check_width(fields, width, lineno)
            if len(ids) == capacity:
                if n_rows is not None:
                    raise InputFormatError(self.path, f"more than {n_rows} gene rows",
                                           where=lineno, expected=f"{n_rows} as declared on line 2")
                capacity *= 2
                grown = self._new_spool(capacity)
                grown[: len(ids)] = spool[: len(ids)]
                spool = grown
            spool[len(ids)] = self._parse_values(fields[1 + n_rmeta :], lineno, 1 + n_rmeta)
            ids.append(fields[0])
            meta.append(fields[1 : 1 + n_rmeta])
        if n_rows is not None and len(ids) != n_rows:
            raise InputFormatError(self.path, f"{len(ids)} gene rows", where=lineno,
                                   expected=f"{n_rows} as declared on line 2")
        self._spool = spool[: len(ids)]
        self.gene_ids = pd.Index(ids, name="gene_id")
        if not self.gene_ids.is_unique:
            dup = self.gene_ids[self.gene_ids.duplicated()][:5].tolist()
            raise InputFormatError(self.path, f"duplicate gene ids {dup}", expected="unique ids")
        self.gene_meta = pd.DataFrame(meta, index=self.gene_ids, columns=meta_names)

    def read(self, start: int, stop: int, cols: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self._spool[cols, start:stop].T)

    def sample_ids(self) -> np.ndarray:
        return self._sample_ids.astype(str)

    def sample_columns(self) -> list[tuple[str, Callable[[], np.ndarray]]]:
        return [(k, (lambda v=v: v)) for k, v in self._col_meta.items()]

    def close(self) -> None:
        self._spool = None  # type: ignore[assignment]
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def input_format(path: str | os.PathLike[str]) -> str:
    """``gctx``, ``h5ad``, ``gct``, ``tsv``, ``csv`` or ``other`` from the file name."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    return {".gctx": "gctx", ".h5": "gctx", ".h5ad": "h5ad", ".gct": "gct", ".tsv": "tsv",
            ".txt": "tsv", ".csv": "csv"}.get(last, "other")


def open_source(source: str | os.PathLike[str] | ExpressionData) -> BlockSource:
    """A :class:`BlockSource` for a file path or an in-memory ExpressionData."""
    if isinstance(source, ExpressionData):
        return MemorySource(source)
    path = Path(source)
    if not path.is_file():
        raise GeneinferError(f"{path}: no such input file")
    fmt = input_format(path)
    if fmt == "gctx":
        return GCTXSource(path)
    if fmt == "h5ad":
        return H5adSource(path)
    if fmt == "gct":
        return TextSource(path, fmt=fmt)
    from geneinfer import io as gio

    reader = getattr(gio, "read", None)
    if reader is None:
        raise GeneinferError(f"{path}: unsupported input format (use GCTX, h5ad, GCT, TSV or CSV)")
    return MemorySource(reader(path), path=path)
