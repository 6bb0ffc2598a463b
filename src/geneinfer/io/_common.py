"""Helpers shared by the format readers and writers.

* :func:`open_text` opens plain or gzip text; :func:`translate_errors` turns the low-level
  exceptions of a malformed file (truncated gzip, bad HDF5, parser errors) into
  :class:`~geneinfer.errors.InputFormatError`.
* :func:`meta_frame` / :func:`meta_strings` convert metadata between text and typed columns
  such that text -> typed -> text reproduces the original strings exactly.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import os
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from geneinfer.errors import GeneinferError, InputFormatError
from geneinfer.io.cells import NA_TOKENS, is_na_token, open_guarded_text
from geneinfer.scales import scale_from_text

__all__ = ["NA_TOKENS", "is_na_token"]  # re-exported: readers import them from here

PathLike = str | os.PathLike[str]

#: Well-known gene metadata columns derived on read from format-specific source columns.
#: Writers omit a derived column when it is exactly what the source column derives, so a
#: read -> write round trip reproduces the original columns verbatim.
DERIVED_GENE_COLUMNS: dict[str, tuple[str, ...]] = {
    "symbol": ("pr_gene_symbol", "Gene Symbol", "gene_symbol", "GENE_SYMBOL"),
    "entrez": ("pr_gene_id", "ENTREZ_GENE_ID", "entrez_id", "ENTREZ_ID"),
}
#: Texts (compared in lower case) that mean "no id" in annotation columns: empty cells, NA
#: markers, CMap's ``-666`` and GEO's ``---``.
MISSING_ID_TEXTS = frozenset({"", "na", "nan", "none", "null", "-666", "---", "-", "n/a",
                              "#n/a"})


def is_gzip(path: PathLike) -> bool:
    """True if the file starts with the gzip magic bytes."""
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def open_text(path: PathLike) -> IO[str]:
    """Open ``path`` for reading text, decompressing gzip transparently; a control
    character anywhere raises :class:`InputFormatError` naming its line
    (:mod:`geneinfer.io.cells`)."""
    return open_guarded_text(path)


def check_readable(path: PathLike) -> Path:
    """Raise a one-line error for a missing, non-regular or empty file."""
    p = Path(path)
    if not p.exists():
        raise InputFormatError(p, "file not found")
    if p.is_dir():
        raise InputFormatError(p, "is a directory", expected="a file")
    if p.stat().st_size == 0:
        raise InputFormatError(p, "file is empty")
    return p


_LOW_LEVEL = (
    csv.Error,
    RuntimeError,
    OverflowError,
    EOFError,
    gzip.BadGzipFile,
    zlib.error,
    UnicodeDecodeError,
    pd.errors.ParserError,
    pd.errors.EmptyDataError,
    ValueError,
    IndexError,
    KeyError,
    TypeError,
    OSError,
)


@contextlib.contextmanager
def translate_errors(path: PathLike, *, what: str = "file") -> Iterator[None]:
    """Re-raise low-level parse/IO failures of ``path`` as :class:`InputFormatError`.

    Readers check the format explicitly and raise precise errors; this is the safety net
    for everything a corrupted file can still trigger (truncated gzip, bad HDF5 headers,
    parser errors), so the user never sees a traceback.
    """
    try:
        yield
    except InputFormatError:
        raise
    except GeneinferError as exc:
        if type(exc) is not GeneinferError:  # MissingGenesError etc. are already precise
            raise
        # e.g. duplicate ids found by ExpressionData
        raise InputFormatError(path, str(exc)) from exc
    except FileNotFoundError as exc:
        raise InputFormatError(path, "file not found") from exc
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise InputFormatError(
            path, f"compressed data is truncated or corrupt ({exc})", expected=f"a complete {what}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise InputFormatError(path, f"not UTF-8 text ({exc.reason})", expected=what) from exc
    except MemoryError:
        raise InputFormatError(path, "not enough memory to read it", expected=what) from None
    except _LOW_LEVEL as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputFormatError(path, f"cannot parse: {msg}", expected=what) from exc


#: The most bytes of data one stored byte can stand for (gzip/deflate packs at most about
#: 1,032 into one): a dataset declaring more than this times its storage cannot be real.
MAX_COMPRESSION_RATIO = 1100


@contextlib.contextmanager
def translate_hdf5(path: PathLike, where: str, *, what: str) -> Iterator[None]:
    """Any failure while reading HDF5 object ``where`` of ``path`` (h5py, HDF5, anndata:
    damaged bytes, link loops, bad encodings) as an :class:`InputFormatError` naming both.

    HDF5 libraries raise many exception types for damaged files, so everything but
    geneinfer's own errors (already precise) is translated.
    """
    try:
        yield
    except GeneinferError:
        raise
    except MemoryError:
        raise InputFormatError(path, "not enough memory to read it", where=where,
                               expected=what) from None
    except Exception as exc:  # everything: see the docstring
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputFormatError(path, f"cannot read ({text[:200]})", where=where,
                               expected=what) from None


def check_declared_size(path: PathLike, dataset, where: str) -> None:
    """Refuse an HDF5 dataset whose declared shape needs more bytes than it can store
    (checked before anything is read or allocated by that shape). Virtual and external
    datasets keep their values elsewhere and are not checked."""
    if dataset.is_virtual or dataset.external:
        return
    n = 1
    for dim in dataset.shape:
        n *= int(dim)
    logical = n * dataset.dtype.itemsize
    stored = dataset.id.get_storage_size()
    if logical > MAX_COMPRESSION_RATIO * stored + (1 << 20):
        raise InputFormatError(
            path, f"declares shape {tuple(dataset.shape)} ({logical} bytes) but stores only "
            f"{stored} bytes", where=where, expected="a dataset whose values are in the file")


# --------------------------------------------------------------------------- metadata
def _typed_column(texts: Sequence[str]) -> np.ndarray | list[str]:
    """Integers or floats when every text is exactly how that number prints, else strings."""
    if not len(texts):
        return list(texts)
    try:
        ints = [int(t) for t in texts]
        if all(str(i) == t for i, t in zip(ints, texts)):
            arr = np.array(ints)
            if arr.dtype.kind == "i":
                return arr.astype(np.int64)
    except (ValueError, OverflowError):
        pass
    try:
        floats = [float(t) for t in texts]
        if all(repr(f) == t for f, t in zip(floats, texts)):
            return np.array(floats, dtype=np.float64)
    except ValueError:
        pass
    return list(texts)


def meta_frame(columns: dict[str, Sequence[str]], index: pd.Index) -> pd.DataFrame:
    """Metadata table from text columns, typed only where printing reproduces the text."""
    data = {name: _typed_column(list(vals)) for name, vals in columns.items()}
    frame = pd.DataFrame(data, index=index)
    for name, vals in data.items():  # keep text columns as object dtype (not pandas' str)
        if isinstance(vals, list):
            frame[name] = pd.Series(vals, index=index, dtype=object)
    return frame


def meta_strings(col: pd.Series) -> list[str]:
    """Text form of a metadata column (inverse of :func:`meta_frame`); missing -> ``"na"``."""
    out: list[str] = []
    for v in col.tolist():
        if v is None or (isinstance(v, float) and np.isnan(v)):
            out.append("na")
        elif isinstance(v, bytes):
            out.append(v.decode("utf-8"))
        elif isinstance(v, (float, np.floating)):
            out.append(repr(float(v)))
        elif isinstance(v, (bool, np.bool_)):
            out.append(str(bool(v)))
        elif isinstance(v, (int, np.integer)):
            out.append(str(int(v)))
        else:
            out.append(str(v))
    return out


def _derive(col: pd.Series, kind: str) -> pd.Series:
    texts = pd.Series(meta_strings(col), index=col.index, dtype=object)
    if kind == "entrez":
        # An Entrez id is a plain integer; "780 /// 100616237" keeps its first id.
        first = texts.str.split("///").str[0].str.strip()
        ok = first.str.fullmatch(r"\d+") & ~texts.str.lower().isin(MISSING_ID_TEXTS)
        return first.where(ok, None).astype(object)
    out = texts.str.strip()
    return out.where(~out.str.lower().isin(MISSING_ID_TEXTS), None).astype(object)


def add_derived_gene_columns(genes: pd.DataFrame) -> pd.DataFrame:
    """Add ``symbol`` / ``entrez`` columns (strings, None = unknown) from known sources."""
    genes = genes.copy()
    for target, sources in DERIVED_GENE_COLUMNS.items():
        if target in genes.columns:
            continue
        src = next((s for s in sources if s in genes.columns), None)
        if src is not None:
            genes[target] = _derive(genes[src], target)
    return genes


def strip_derived_gene_columns(genes: pd.DataFrame) -> pd.DataFrame:
    """Drop derived columns that exactly equal what their source column derives."""
    drop = []
    for target, sources in DERIVED_GENE_COLUMNS.items():
        if target not in genes.columns:
            continue
        src = next((s for s in sources if s in genes.columns), None)
        if src is None:
            continue
        derived = _derive(genes[src], target)
        current = genes[target].astype(object).where(genes[target].notna(), None)
        if current.tolist() == derived.tolist():
            drop.append(target)
    return genes.drop(columns=drop)


def samples_with_scale(samples: pd.DataFrame, scale: str) -> pd.DataFrame:
    """Sample metadata plus a ``values`` column naming a known scale, if it has none.

    GCT/GCTX have no header field for the scale; CMap-style files say it in a ``values``
    column-metadata row, which readers turn back into :attr:`ExpressionData.scale`.
    """
    if scale == "unknown":
        return samples
    out = samples.copy()
    if "values" not in samples.columns:
        out["values"] = pd.Series([scale] * len(out), index=out.index, dtype=object)
        return out
    # a stale scale note (e.g. "MAS5 linear" on data since put on log2) would make the file
    # read back on the wrong scale: restate it, keeping the original words
    old = samples["values"].astype(object)
    stale = [scale_from_text(None if pd.isna(v) else str(v)) != scale for v in old]
    out["values"] = [
        (f"{scale} (from {v})" if pd.notna(v) and str(v).strip() else scale) if bad else v
        for v, bad in zip(old, stale)
    ]
    return out


def check_unique(path: PathLike, ids: Sequence[str], *, what: str, where: int | str | None) -> None:
    """Raise :class:`InputFormatError` naming the first duplicated id."""
    idx = pd.Index(ids)
    if not idx.is_unique:
        dups = idx[idx.duplicated()].unique()[:5].tolist()
        raise InputFormatError(
            path,
            f"duplicate {what} ids: {', '.join(map(str, dups))}",
            where=where,
            expected=f"unique {what} ids",
        )


def format_block(values: np.ndarray) -> Iterator[str]:
    """Tab-joined text lines of a 2-D float32 block, reproducing every float32 exactly.

    Uses 7 significant digits when that already identifies each value (typical for data
    read from text, keeping files readable), else 9 (enough for any float32). Missing
    values are written as ``NaN``, infinities as ``inf`` / ``-inf``. Lines are produced
    one at a time (one C-level ``%`` format per row, like :func:`numpy.savetxt`), so a
    writer's memory stays at one block of numbers.
    """
    block = np.asarray(values, dtype=np.float32)
    if block.shape[1] == 0:
        yield from ("" for _ in range(block.shape[0]))
        return
    row_fmt = "\t".join([("%.7g" if _fits_7_digits(block) else "%.9g")] * block.shape[1])
    has_nan = np.isnan(block).any(axis=1)
    for row, nan in zip(block.astype(np.float64).tolist(), has_nan.tolist()):
        line = row_fmt % tuple(row)
        yield line.replace("nan", "NaN") if nan else line


def rows_per_block(n_values_per_row: int, *, target: int = 1_000_000) -> int:
    """Rows per formatting block so that a block holds about ``target`` numbers."""
    return max(1, target // max(1, n_values_per_row))


def _fits_7_digits(block: np.ndarray) -> bool:
    x = block.astype(np.float64)
    finite = np.isfinite(x) & (x != 0)
    xf = x[finite]
    if xf.size == 0:
        return True
    exp = np.floor(np.log10(np.abs(xf)))
    scale = 10.0 ** (6 - exp)
    rounded = np.round(xf * scale) / scale
    return bool(np.array_equal(rounded.astype(np.float32), xf.astype(np.float32)))
