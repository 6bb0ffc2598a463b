"""ARCHS4 gene-level count files (``human_gene_v2.latest.h5``, v2 layout), read in sample blocks.

Layout, as archs4py reads it (checked with the search tool against MaayanLab/archs4py
``data.py`` / ``meta.py``; h5py alone is enough here)::

    /data/expression                 uint32 counts, genes x samples, chunked + gzip
    /meta/genes/gene_symbol          gene symbols (older files: /meta/genes/symbol); bytes
    /meta/genes/ensembl_gene         Ensembl gene ids, where present
    /meta/samples/geo_accession      GSM id of every sample (column)
    /meta/samples/series_id          GSE id(s) of the sample ("GSE100,GSE101" when several)
    /meta/samples/singlecellprobability   float: predicted single-cell library (> 0.5)
    /meta/samples/source_name_ch1, characteristics_ch1, title, ...   free text

The matrix is genes x samples on disk, so a block of samples is ``[:, start:stop]``
transposed; ARCHS4 chunks whole columns of genes, so reads are aligned to the chunk width
along samples (:attr:`Archs4Blocks.chunk_samples`) and the HDF5 chunk cache holds one column
of chunks (a chunk read by two consecutive blocks is decompressed once).

Which samples a reader serves is an :class:`Archs4Selection`: by series, by a metadata
search, by a list of GSM ids, and bulk samples only (``singlecellprobability < 0.5``)
unless single-cell libraries are asked for. The values are read counts (the harmoniser
turns them into log2 CPM); the series id is the sample's group (``group_column``).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from geneinfer.errors import GeneinferError, InputFormatError
from geneinfer.expression import ExpressionData
from geneinfer.idkinds import detect_id_kind
from geneinfer.io._common import PathLike, check_readable, open_text, translate_errors
from geneinfer.io.blocks import BlockReader
from geneinfer.utils.files import atomic_path

log = logging.getLogger(__name__)

MATRIX = "data/expression"
GENES = "meta/genes"
SAMPLES = "meta/samples"
#: gene symbol datasets, in the order archs4py looks for them
SYMBOL_FIELDS = ("gene_symbol", "symbol")
ENSEMBL_FIELD = "ensembl_gene"
ACCESSION = "geo_accession"
SERIES = "series_id"
SINGLE_CELL = "singlecellprobability"
#: metadata searched by ``Archs4Selection.search`` (archs4py searches these and more)
SEARCH_FIELDS = ("source_name_ch1", "characteristics_ch1", "title")
#: a library with a predicted single-cell probability at or above this is single-cell
SINGLE_CELL_THRESHOLD = 0.5
#: upper bound of the HDF5 chunk cache (one column of chunks is cached)
_MAX_CACHE_BYTES = 512 * 2**20
#: below this share of a spanned range, selected columns are read by point selection
_DENSE_SHARE = 0.25
# archs4py's normalisation of search terms and fields: no case, no _ - ' / space .
_SEARCH_STRIP = re.compile(r"[_\-'/ .]")


@dataclass(frozen=True)
class Archs4Selection:
    """Which samples of an ARCHS4 file to use. Filters of different kinds combine with AND;
    the values of one kind with OR.

    Parameters
    ----------
    series
        GEO series (``GSE...``): samples of any of them (a sample listed with several
        series matches each).
    search
        Texts searched in ``source_name_ch1``, ``characteristics_ch1`` and ``title``; a
        sample matches when any field contains any text, ignoring case, spaces and
        ``_ - ' / .`` (as archs4py's ``meta`` search does, but not as a regular expression).
    samples
        GSM ids; ids not in the file are counted and reported.
    include_single_cell
        Keep libraries that ARCHS4 predicts to be single-cell (``singlecellprobability >=
        0.5``); by default only bulk samples are used.
    """

    series: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    samples: tuple[str, ...] = ()
    include_single_cell: bool = False

    def __post_init__(self) -> None:
        for name in ("series", "search", "samples"):
            values = getattr(self, name)
            if isinstance(values, str):
                values = (values,)
            cleaned = tuple(str(v).strip() for v in values if str(v).strip())
            object.__setattr__(self, name, cleaned)

    @property
    def is_everything(self) -> bool:
        """No filter at all (single-cell libraries included)."""
        return not (self.series or self.search or self.samples) and self.include_single_cell

    def describe(self) -> str:
        parts = []
        if self.series:
            parts.append(f"series {', '.join(self.series[:5])}"
                         + (f" (+{len(self.series) - 5})" if len(self.series) > 5 else ""))
        if self.search:
            parts.append(f"metadata matching {' or '.join(map(repr, self.search))}")
        if self.samples:
            parts.append(f"{len(self.samples)} listed GSM ids")
        parts.append("single-cell libraries included" if self.include_single_cell
                     else f"bulk only ({SINGLE_CELL} < {SINGLE_CELL_THRESHOLD:g})")
        return "; ".join(parts)

    def to_json(self) -> dict[str, object]:
        return {"series": list(self.series), "search": list(self.search),
                "n_samples_listed": len(self.samples),
                "include_single_cell": self.include_single_cell}


def read_sample_list(path: PathLike) -> tuple[str, ...]:
    """GSM ids from a file: one per line, or the first column of a table (a header line
    and ``#`` comment lines are skipped)."""
    path = check_readable(path)
    ids: list[str] = []
    with translate_errors(path, what="list of sample ids"), open_text(path) as fh:
        for line in fh:
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            first = re.split(r"[\t,; ]", text, maxsplit=1)[0].strip().strip('"')
            if first:
                ids.append(first)
    if ids and not re.fullmatch(r"GSM\d+", ids[0]) and all(
            re.fullmatch(r"GSM\d+", i) for i in ids[1:]):
        ids = ids[1:]  # a header line
    if not ids:
        raise InputFormatError(path, "no sample ids", expected="one GSM id per line")
    return tuple(ids)


# --------------------------------------------------------------------------- checks
def _open(path: PathLike, cache_bytes: int | None = None) -> h5py.File:
    check_readable(path)
    kwargs = {} if cache_bytes is None else {"rdcc_nbytes": int(cache_bytes),
                                             "rdcc_nslots": 100_003}
    try:
        return h5py.File(path, "r", **kwargs)
    except OSError as exc:
        raise InputFormatError(
            path, f"not a readable HDF5 file ({str(exc).splitlines()[0]})",
            expected="a complete ARCHS4 .h5 file",
        ) from exc


def _dataset(path: PathLike, f: h5py.File, name: str) -> h5py.Dataset:
    obj = f.get(name)
    if not isinstance(obj, h5py.Dataset):
        raise InputFormatError(
            path, "missing dataset", where=f"/{name}",
            expected="the ARCHS4 layout (/data/expression genes x samples, /meta/genes/"
            "gene_symbol, /meta/samples/geo_accession)",
        )
    return obj


def _texts(values: np.ndarray) -> np.ndarray:
    """Decoded strings (object array) of a bytes or str dataset's values."""
    if values.dtype.kind == "S":
        return np.char.decode(values, "utf-8", errors="replace").astype(object)
    if values.dtype.kind == "O":
        return np.array([v.decode("utf-8", errors="replace") if isinstance(v, bytes)
                         else str(v) for v in values], dtype=object)
    return values.astype(str).astype(object)


def _column(path: PathLike, f: h5py.File, group: str, name: str, n: int, what: str
            ) -> np.ndarray:
    """A 1-D metadata dataset of length ``n`` (text decoded), checked."""
    ds = _dataset(path, f, f"{group}/{name}")
    if ds.shape != (n,):
        raise InputFormatError(
            path, f"{ds.shape[0] if ds.ndim == 1 else ds.shape} entries", where=f"/{group}/{name}",
            expected=f"{n} = the {what} of /{MATRIX} (shape {f[MATRIX].shape})",
        )
    values = ds[()]
    return _texts(values) if values.dtype.kind in "SOU" else values


def _check_matrix(path: PathLike, ds: h5py.Dataset) -> None:
    if ds.ndim != 2:
        raise InputFormatError(path, f"matrix has shape {ds.shape}", where=f"/{MATRIX}",
                               expected="a 2-D genes x samples matrix")
    if ds.dtype.kind not in "ui":
        raise InputFormatError(
            path, f"matrix has dtype {ds.dtype}", where=f"/{MATRIX}",
            expected="integer read counts (uint32), as ARCHS4 stores them",
        )


def _search_key(texts: np.ndarray) -> pd.Series:
    return pd.Series(texts, dtype=object).astype(str).str.upper().str.replace(
        _SEARCH_STRIP, "", regex=True)


# --------------------------------------------------------------------------- reader
@dataclass
class _Selected:
    positions: np.ndarray  # sorted file columns
    n_in_file: int
    n_single_cell_dropped: int = 0
    n_listed_absent: int = 0
    absent_examples: list[str] = field(default_factory=list)


class Archs4Blocks(BlockReader):
    """Random access to the selected samples of an ARCHS4 gene-level ``.h5`` file.

    Parameters
    ----------
    path
        The ``.h5`` file.
    selection
        Which samples (default: every bulk sample, see :class:`Archs4Selection`).

    Attributes
    ----------
    group_column
        ``"series_id"``: the sample-metadata column that names each sample's group (its
        study) for training.
    chunk_samples
        Width of the on-disk chunks along samples; blocks that are multiples of it read
        whole chunks.
    selection_report
        Counts of the selection (file samples, single-cell libraries dropped, listed ids
        absent).
    """

    group_column = SERIES
    scale = "counts"

    def __init__(self, path: PathLike, selection: Archs4Selection | None = None) -> None:
        self.path = Path(path)
        self.source = str(path)
        self.selection = selection if selection is not None else Archs4Selection()
        self._file = _open(path)
        try:
            with translate_errors(path, what="ARCHS4 (HDF5) file"):
                self._setup()
        except BaseException:
            self.close()
            raise

    # -- set-up ---------------------------------------------------------------------------
    def _setup(self) -> None:
        f, path = self._file, self.path
        matrix = _dataset(path, f, MATRIX)
        _check_matrix(path, matrix)
        n_genes, n_file = matrix.shape
        self._read_genes(f, n_genes)
        accessions = _column(path, f, SAMPLES, ACCESSION, n_file, "columns")
        self._sample_names = [name for name, ds in f[SAMPLES].items()
                              if isinstance(ds, h5py.Dataset) and ds.shape == (n_file,)]
        chosen = self._select(f, accessions, n_file)
        self._positions = chosen.positions
        self.selection_report = chosen
        self.n_samples = len(chosen.positions)
        self._sample_ids = pd.Index(_unique_ids(accessions[chosen.positions]), dtype=object)
        chunks = matrix.chunks or (n_genes, 1)
        self.chunk_samples = int(chunks[1])
        # reopen with a chunk cache that holds one column of chunks (whole genes axis)
        column_bytes = matrix.dtype.itemsize * n_genes * chunks[1]
        self._file.close()
        self._file = _open(path, cache_bytes=min(_MAX_CACHE_BYTES, 2 * column_bytes + 2**20))
        self.matrix = self._file[MATRIX]

    def _read_genes(self, f: h5py.File, n_genes: int) -> None:
        path = self.path
        group = f.get(GENES)
        if not isinstance(group, h5py.Group):
            raise InputFormatError(path, "missing group", where=f"/{GENES}",
                                   expected="gene names in /meta/genes/gene_symbol")
        symbol_field = next((s for s in SYMBOL_FIELDS if s in group), None)
        if symbol_field is None:
            raise InputFormatError(path, "missing dataset", where=f"/{GENES}/gene_symbol",
                                   expected="gene symbols in /meta/genes/gene_symbol or "
                                   "/meta/genes/symbol")
        meta: dict[str, np.ndarray] = {}
        for name, ds in group.items():
            if isinstance(ds, h5py.Dataset) and ds.ndim == 1:
                meta[name] = _column(path, f, GENES, name, n_genes, "rows")
        symbols = meta[symbol_field]
        genes = pd.DataFrame({k: v for k, v in meta.items()})
        genes["symbol"] = symbols
        ensembl = meta.get(ENSEMBL_FIELD)
        if ensembl is not None and pd.Index(ensembl).is_unique:
            ids, kind = list(ensembl), "ensembl"
            genes["ensembl"] = ensembl
        elif pd.Index(symbols).is_unique:
            ids, kind = list(symbols), "symbol"
        else:
            # repeated symbols (ARCHS4 has some): neutral row ids, genes found through the
            # symbol column; reads of one gene are summed by the harmoniser
            ids, kind = [f"row{i + 1}" for i in range(n_genes)], "unknown"
        genes.index = pd.Index(ids, dtype=object)
        self.genes = genes
        self.gene_ids = genes.index
        self.gene_id_kind = kind if kind != "unknown" else detect_id_kind(ids)

    def _select(self, f: h5py.File, accessions: np.ndarray, n_file: int) -> _Selected:
        sel, path = self.selection, self.path
        keep = np.ones(n_file, dtype=bool)
        if sel.series:
            series = _column(path, f, SAMPLES, SERIES, n_file, "columns")
            wanted = set(sel.series)
            keep &= np.fromiter((bool(wanted & set(str(s).split(","))) for s in series),
                                dtype=bool, count=n_file)
        if sel.search:
            keep &= self._search_mask(f, n_file)
        absent: list[str] = []
        if sel.samples:
            listed = pd.Index(sel.samples)
            keep &= pd.Index(accessions).isin(listed)
            absent = list(listed[~listed.isin(accessions)])
        n_sc = 0
        if not sel.include_single_cell and f"{SAMPLES}/{SINGLE_CELL}" in f:
            prob = np.asarray(_column(path, f, SAMPLES, SINGLE_CELL, n_file, "columns"),
                              dtype=np.float64)
            single = prob >= SINGLE_CELL_THRESHOLD
            n_sc = int((keep & single).sum())
            keep &= ~single
        positions = np.flatnonzero(keep).astype(np.int64)
        if absent:
            log.warning("%s: %d of the %d listed samples are not in the file, e.g. %s",
                        path, len(absent), len(sel.samples), ", ".join(absent[:5]))
        if not len(positions):
            raise InputFormatError(
                path, f"no sample is selected ({sel.describe()})",
                expected=f"at least one of its {n_file} samples",
            )
        return _Selected(positions, n_file, n_sc, len(absent), absent[:5])

    def _search_mask(self, f: h5py.File, n_file: int) -> np.ndarray:
        terms = [_SEARCH_STRIP.sub("", t.upper()) for t in self.selection.search]
        mask = np.zeros(n_file, dtype=bool)
        fields = [name for name in SEARCH_FIELDS if f"{SAMPLES}/{name}" in f]
        if not fields:
            raise InputFormatError(self.path, "no sample descriptions to search",
                                   where=f"/{SAMPLES}",
                                   expected=f"one of {', '.join(SEARCH_FIELDS)}")
        for name in fields:
            key = _search_key(_column(self.path, f, SAMPLES, name, n_file, "columns"))
            for term in terms:
                mask |= key.str.contains(term, regex=False).to_numpy()
        return mask

    # -- reading --------------------------------------------------------------------------
    @property
    def positions(self) -> np.ndarray:
        """File columns of the selected samples (sorted)."""
        return self._positions

    def read(self, start: int, stop: int, cols: np.ndarray | None = None) -> np.ndarray:
        with translate_errors(self.path, what="ARCHS4 (HDF5) file"):
            return self._read_columns(self._positions[start:stop], cols)

    def read_rows(self, rows: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        with translate_errors(self.path, what="ARCHS4 (HDF5) file"):
            block = self._read_columns(self._positions[rows[order]], cols)
        out = np.empty_like(block)
        out[order] = block
        return out

    def _read_columns(self, pos: np.ndarray, cols: np.ndarray | None) -> np.ndarray:
        """Samples at sorted file columns ``pos`` as a float32 (samples x genes) block."""
        n_genes = self.matrix.shape[0]
        if not len(pos):
            return np.empty((0, n_genes if cols is None else len(cols)), np.float32)
        lo, hi = int(pos[0]), int(pos[-1]) + 1
        if hi - lo == len(pos):
            raw = self.matrix[:, lo:hi]
        elif len(pos) >= _DENSE_SHARE * (hi - lo):
            raw = self.matrix[:, lo:hi][:, pos - lo]  # a range then a pick: whole chunks
        else:
            uniq, inverse = np.unique(pos, return_inverse=True)
            raw = self.matrix[:, uniq.tolist()][:, inverse]
        # genes x samples on disk: transpose and convert in one copy (C order, float32)
        block = np.empty((raw.shape[1], n_genes), dtype=np.float32)
        block[...] = raw.T
        return block if cols is None else block[:, cols]

    def sample_ids(self) -> pd.Index:
        return self._sample_ids

    def sample_columns(self) -> list[tuple[str, Callable[[], np.ndarray]]]:
        return [(name, (lambda n=name: self._sample_values(n, self._positions)))
                for name in self._sample_names if name != ACCESSION]

    def _sample_values(self, name: str, pos: np.ndarray) -> np.ndarray:
        with translate_errors(self.path, what="ARCHS4 (HDF5) file"):
            ds = self._file[f"{SAMPLES}/{name}"]
            if not len(pos):
                values = ds[:0]
            else:
                lo, hi = int(pos[0]), int(pos[-1]) + 1
                values = ds[lo:hi][pos - lo]
        return _texts(values) if values.dtype.kind in "SOU" else values

    def samples(self, start: int = 0, stop: int | None = None) -> pd.DataFrame:
        """Sample metadata of the selected samples ``start .. stop`` (only their rows are
        read from each metadata dataset)."""
        stop = self.n_samples if stop is None else min(stop, self.n_samples)
        pos = self._positions[start:stop]
        frame = pd.DataFrame(index=pd.Index(self._sample_ids[start:stop], dtype=object))
        for name in self._sample_names:
            if name != ACCESSION:
                frame[name] = self._sample_values(name, pos)
        return frame

    def fingerprint(self) -> dict[str, object]:
        out = super().fingerprint()
        out["selection"] = self.selection.to_json()
        out["selected"] = int(self.n_samples)
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._file.close()


def _unique_ids(ids: Iterable[str]) -> list[str]:
    """Sample ids made unique (``GSM1``, ``GSM1.2``, ...) should a GSM appear twice."""
    seen: dict[str, int] = {}
    out = []
    for i in ids:
        i = str(i)
        if i in seen:
            seen[i] += 1
            out.append(f"{i}.{seen[i]}")
        else:
            seen[i] = 1
            out.append(i)
    return out


def read_archs4(path: PathLike, *, selection: Archs4Selection | None = None) -> ExpressionData:
    """The selected samples of an ARCHS4 file, in memory (counts, genes x samples on disk
    read as samples x genes). For many samples use :class:`Archs4Blocks` instead."""
    with Archs4Blocks(path, selection) as reader:
        return reader.block(0, reader.n_samples)


def peek_archs4(path: PathLike, *, selection: Archs4Selection | None = None
                ) -> tuple[int, int, list[str]]:
    """``(n_samples selected, n_genes, gene_ids)`` without reading the matrix."""
    with Archs4Blocks(path, selection) as reader:
        return reader.n_samples, len(reader.gene_ids), list(reader.gene_ids)


def is_archs4(f: h5py.File) -> bool:
    """Whether an open HDF5 file is laid out like an ARCHS4 file (the reader checks the
    rest and names what is missing)."""
    return MATRIX in f or GENES in f


def check_selection(selection: object) -> Archs4Selection | None:
    """``selection`` as an :class:`Archs4Selection` (None stays None)."""
    if selection is None or isinstance(selection, Archs4Selection):
        return selection
    raise GeneinferError(f"selection must be an Archs4Selection, got {type(selection).__name__}")


def selection_from_options(
    *,
    series: Sequence[str] = (),
    search: Sequence[str] = (),
    samples_file: PathLike | None = None,
    include_single_cell: bool = False,
) -> Archs4Selection:
    """An :class:`Archs4Selection` from command-line options (``--select-samples FILE``)."""
    listed = read_sample_list(samples_file) if samples_file else ()
    return Archs4Selection(series=tuple(series), search=tuple(search), samples=listed,
                           include_single_cell=include_single_cell)


# --------------------------------------------------------------------------- writing
def write_archs4(
    path: PathLike,
    *,
    genes: pd.DataFrame,
    samples: pd.DataFrame,
    blocks: Iterable[np.ndarray],
    chunk_samples: int = 100,
    compression: str | None = "gzip",
    compression_opts: int | None = 1,
) -> None:
    """Write counts in the ARCHS4 v2 layout (e.g. a subset of an ARCHS4 file, or test data).

    Parameters
    ----------
    genes
        One row per gene; columns become ``/meta/genes/<column>`` (``gene_symbol`` and
        ``ensembl_gene`` as ARCHS4 names them).
    samples
        One row per sample; columns become ``/meta/samples/<column>`` (``geo_accession``,
        ``series_id``, ``singlecellprobability``, ...).
    blocks
        Consecutive samples x genes blocks of counts (cast to uint32), in sample order.
    chunk_samples, compression, compression_opts
        Chunks hold every gene of ``chunk_samples`` samples, compressed (as ARCHS4 does).
    """
    n_genes, n_samples = len(genes), len(samples)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for group, table in ((GENES, genes), (SAMPLES, samples)):
            for name in table.columns:
                values = table[name].to_numpy()
                if values.dtype.kind in "OUS":
                    values = np.array([str(v).encode("utf-8") for v in values], dtype=object)
                    f.create_dataset(f"{group}/{name}", data=values,
                                     dtype=h5py.string_dtype("utf-8"))
                else:
                    f.create_dataset(f"{group}/{name}", data=values)
        ds = f.create_dataset(MATRIX, shape=(n_genes, n_samples), dtype=np.uint32,
                              chunks=(n_genes, max(1, min(chunk_samples, n_samples))),
                              compression=compression, compression_opts=compression_opts)
        done = 0
        for block in blocks:
            block = np.asarray(block)
            if block.ndim != 2 or block.shape[1] != n_genes:
                raise GeneinferError(f"count block of shape {block.shape}; expected "
                                     f"(samples, {n_genes})")
            ds[:, done:done + len(block)] = block.T.astype(np.uint32)
            done += len(block)
        if done != n_samples:
            raise GeneinferError(f"{done} samples of counts for {n_samples} sample rows")
