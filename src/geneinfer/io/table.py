"""Delimited text tables (TSV / CSV, plain or gzip) of expression values.

The first column holds ids; the header row holds the other axis' ids. Tables come either
way round, so ``orientation`` says which: ``"genes-in-rows"`` (e.g. GEUVADIS counts:
``gene_id`` then one column per sample) or ``"samples-in-rows"``. Without it the
orientation is detected only when it is safe: one axis clearly holds gene ids (probe,
Entrez or Ensembl ids, or gene symbols when the other axis does not look like symbols);
otherwise an :class:`~geneinfer.errors.InputFormatError` asks for ``--orientation``.

Leading non-numeric columns after the id column are metadata of the row items (e.g. a
``symbol`` column in a genes-in-rows table). A table states no scale, so it is read as
``"unknown"``; :func:`geneinfer.scales.resolve_scale` decides it where it matters.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from geneinfer.errors import GeneinferError, InputFormatError
from geneinfer.expression import ExpressionData
from geneinfer.idkinds import detect_id_kind
from geneinfer.io._common import (
    PathLike,
    check_readable,
    check_unique,
    format_block,
    meta_frame,
    open_text,
    rows_per_block,
    translate_errors,
)
from geneinfer.io.blocks import Spool, SpooledBlocks
from geneinfer.io.cells import (
    MAX_FIELD_CHARS,
    MAX_ID_CHARS,
    NonFinite,
    as_nonfinite,
    check_id_length,
    check_writable_texts,
    check_writable_values,
    is_na_token,
    is_number_text,
)
from geneinfer.io.delimited import BodyLayout, iter_body
from geneinfer.utils.files import atomic_path

ORIENTATIONS = ("genes-in-rows", "samples-in-rows")
_GENE_HEADERS = {
    "gene",
    "gene_id",
    "geneid",
    "genes",
    "probe",
    "probe_id",
    "id_ref",
    "probeset",
    "symbol",
    "gene_symbol",
    "ensembl",
    "ensembl_id",
    "entrez",
    "entrez_id",
}
_SAMPLE_HEADERS = {"sample", "sample_id", "samples", "gsm", "cell", "barcode"}
#: headers of leading columns that hold gene metadata even where a few cells are numbers
_META_HEADERS = {"symbol", "gene_symbol", "description", "gene_name", "name", "gene_title",
                 "chr", "chrom", "chromosome", "biotype", "gene_biotype", "gene_type",
                 "strand", "entrez", "entrez_id", "ensembl", "ensembl_id"}
_SNIFF_ROWS = 200


@dataclass
class _Layout:
    sep: str
    header: list[str]
    first_col: list[str]
    n_meta: int
    genes_in_rows: bool


def _sep_for(path: PathLike, sep: str | None) -> str:
    if sep:
        return sep
    name = str(path).lower().removesuffix(".gz")
    return "," if name.endswith(".csv") else "\t"


def _read_header(path: PathLike, sep: str) -> list[str]:
    with open_text(path) as fh:
        line = fh.readline()
    if not line.strip():
        raise InputFormatError(path, "first line is empty", where=1, expected="a header row")
    try:
        return next(csv.reader([line.rstrip("\r\n")], delimiter=sep, quotechar='"',
                               strict=True))
    except csv.Error as exc:
        raise InputFormatError(path, f"cannot split the header ({exc})", where=1,
                               expected=f"fields of at most {MAX_FIELD_CHARS} characters, "
                               "double quotes around whole fields") from None


def _sniff(path: PathLike, sep: str) -> tuple[list[str], list[list[str]]]:
    """The header and up to :data:`_SNIFF_ROWS` non-blank rows after it."""
    header = _read_header(path, sep)
    rows: list[list[str]] = []
    with open_text(path) as fh:
        fh.readline()
        reader = csv.reader(fh, delimiter=sep, quotechar='"')
        try:
            for row in reader:
                if any(f.strip(" ") for f in row):
                    rows.append(row)
                if len(rows) >= _SNIFF_ROWS:
                    break
        except csv.Error as exc:
            raise InputFormatError(path, f"cannot split the row ({exc})", where=reader.line_num + 1,
                                   expected=f"fields of at most {MAX_FIELD_CHARS} characters"
                                   ) from None
    return header, rows


def _is_metadata(name: str, texts: Sequence[str]) -> bool:
    """A leading column holds metadata (text) rather than a sample's values.

    Decided on the first rows: mostly non-numbers, or a metadata header (``symbol``,
    ``chromosome``...) over any non-number. A sample column with a few bad cells stays a
    sample column, so the bad cells are named instead of the whole sample becoming text.
    """
    cells = [t for t in texts if not is_na_token(t)]
    n_text = sum(not is_number_text(t) for t in cells)
    if not n_text:
        return False
    return 2 * n_text > len(cells) or name.strip().lower() in _META_HEADERS


def _orientation(
    path: PathLike, header: list[str], first_col: list[str], n_meta: int, requested: str | None
) -> bool:
    """True for genes-in-rows; checks a requested orientation against clear evidence."""
    col_ids = header[1 + n_meta :]
    row_kind = detect_id_kind(first_col)
    col_kind = detect_id_kind(col_ids)
    strong = ("probe", "entrez", "ensembl")
    detected: bool | None = None
    if row_kind in strong and col_kind not in strong:
        detected = True
    elif col_kind in strong and row_kind not in strong:
        detected = False
    elif row_kind == "symbol" and col_kind == "unknown":
        detected = True
    elif col_kind == "symbol" and row_kind == "unknown":
        detected = False
    elif row_kind == col_kind:  # both unknown or both symbol-like: trust a clear id header
        name = header[0].strip().lower()
        if name in _GENE_HEADERS:
            detected = True
        elif name in _SAMPLE_HEADERS:
            detected = False
    if requested is None:
        if detected is None:
            raise InputFormatError(
                path,
                "cannot tell whether genes are rows or columns",
                expected="orientation='genes-in-rows' or 'samples-in-rows' "
                "(--orientation on the command line)",
            )
        return detected
    if requested not in ORIENTATIONS:
        raise GeneinferError(f"orientation must be one of {ORIENTATIONS}, not {requested!r}")
    wanted = requested == "genes-in-rows"
    # Contradict the user only on overwhelming evidence: many ids of a strong kind on one
    # axis (a handful of integers could be sample numbers), none on the other.
    n_strong = len(first_col) if row_kind in strong else len(col_ids)
    clear = (row_kind in strong) != (col_kind in strong) and n_strong >= 5
    if clear and detected is not None and detected != wanted:
        where, kind = ("the first column", row_kind) if detected else ("the header", col_kind)
        raise InputFormatError(
            path,
            f"orientation {requested!r} contradicts the file: {where} holds {kind} gene ids",
            expected=f"orientation={ORIENTATIONS[0] if detected else ORIENTATIONS[1]!r}",
        )
    return wanted


def _layout(path: PathLike, sep: str | None, orientation: str | None) -> _Layout:
    path = check_readable(path)
    sep = _sep_for(path, sep)
    header, rows = _sniff(path, sep)
    check_unique(path, header, what="column", where=1)
    if len(header) < 2:
        raise InputFormatError(
            path,
            f"header has {len(header)} field",
            where=1,
            expected=f"an id column and value columns separated by {sep!r}",
        )
    if not rows:
        raise InputFormatError(path, "no data rows", where=2, expected="one row per gene or sample")
    n_meta = 0
    for j in range(1, len(header) - 1):
        if not _is_metadata(header[j], [r[j] for r in rows if len(r) > j]):
            break
        n_meta += 1
    _check_header(path, header, n_meta)
    first_col = [r[0] for r in rows if r]
    genes_in_rows = _orientation(path, header, first_col, n_meta, orientation)
    return _Layout(sep, header, first_col, n_meta, genes_in_rows)


def _check_header(path: PathLike, header: list[str], n_meta: int) -> None:
    """The column ids (after the id and metadata columns) are non-empty and not too long."""
    for j, name in enumerate(header):
        if j > n_meta and not name.strip():
            raise InputFormatError(path, f"field {j + 1} of the header is empty", where=1,
                                   expected="an id for every value column")
        check_id_length(path, name, what="column", where=1)


def _body(path: PathLike, lay: _Layout) -> BodyLayout:
    """The rows after the header, for :func:`geneinfer.io.delimited.iter_body`."""
    n = len(lay.header)
    return BodyLayout(
        sep=lay.sep, quoted=True, n_fields=n, first_line=2,
        text_cols=list(range(1 + lay.n_meta)), value_cols=list(range(1 + lay.n_meta, n)),
        names=lay.header, expected=f"{n} like the header",
        row_what="gene" if lay.genes_in_rows else "sample",
        col_what="sample" if lay.genes_in_rows else "gene",
    )


_CHUNK_ROWS = 5000


def read_table(
    path: PathLike, *, sep: str | None = None, orientation: str | None = None,
    nonfinite: str | NonFinite | None = None,
) -> ExpressionData:
    """Read a TSV/CSV expression table (plain or gzip).

    Parameters
    ----------
    sep
        Field separator (default: ``,`` for ``.csv``, else tab).
    orientation
        ``"genes-in-rows"``, ``"samples-in-rows"`` or None to detect (only when safe).
    nonfinite
        ``"error"`` (default) or ``"missing"``, as for :func:`geneinfer.io.read_gct`.
    """
    with TableBlocks(path, sep=sep, orientation=orientation, nonfinite=nonfinite) as reader:
        return reader.block(0, reader.n_samples)


class TableBlocks(SpooledBlocks):
    """Random access to a TSV/CSV table: parsed once into a spool (rows as in the file),
    from which sample blocks are sliced."""

    def __init__(self, path: PathLike, *, sep: str | None = None,
                 orientation: str | None = None,
                 nonfinite: str | NonFinite | None = None) -> None:
        self.path = Path(path)
        self.source = str(path)
        self.nonfinite = as_nonfinite(nonfinite)
        with translate_errors(path, what="delimited table"):
            lay = _layout(path, sep, orientation)
        self.spool = Spool(len(lay.header) - 1 - lay.n_meta)
        ids: list[str] = []
        meta: dict[str, list[str]] = {lay.header[c]: [] for c in range(1, 1 + lay.n_meta)}
        try:
            with translate_errors(path, what="delimited table"):
                for chunk in iter_body(path, _body(path, lay), nonfinite=self.nonfinite,
                                       chunk_rows=_CHUNK_ROWS):
                    self.spool.append(chunk.values)
                    ids.extend(chunk.texts[0])
                    for c in range(1, 1 + lay.n_meta):
                        meta[lay.header[c]].extend(chunk.texts[c])
        except BaseException:
            self.close()
            raise
        rows = pd.Index(ids, dtype=object)
        row_meta = meta_frame(meta, rows)
        cols = pd.Index(lay.header[1 + lay.n_meta:], dtype=object)
        self.genes_in_rows = lay.genes_in_rows
        if lay.genes_in_rows:
            self.gene_ids, self.genes = rows, row_meta
            self.sample_table = pd.DataFrame(index=cols)
        else:
            self.gene_ids, self.genes = cols, pd.DataFrame(index=cols)
            self.sample_table = row_meta
        self.n_samples = len(self.sample_table)
        self.gene_id_kind = detect_id_kind(self.gene_ids)


def peek_table(
    path: PathLike, *, sep: str | None = None, orientation: str | None = None
) -> tuple[int, int, list[str]]:
    """``(n_samples, n_genes, gene_ids)`` reading the header and the id column only."""
    first_col: list[str] = []
    with translate_errors(path, what="delimited table"):
        lay = _layout(path, sep, orientation)
        body = _body(path, lay)
        body.text_cols, body.value_cols = [0], []
        for chunk in iter_body(path, body, nonfinite=NonFinite()):
            first_col.extend(chunk.texts[0])
    col_ids = lay.header[1 + lay.n_meta :]
    if lay.genes_in_rows:
        return len(col_ids), len(first_col), first_col
    return len(first_col), len(col_ids), col_ids


# --------------------------------------------------------------------------- writing
def _quote(text: str, sep: str) -> str:
    if "\n" in text or "\r" in text:
        raise GeneinferError(f"cannot write id {text[:40]!r}: contains a newline")
    if sep in text or '"' in text or text != text.strip():
        return '"' + text.replace('"', '""') + '"'
    return text


def write_table(
    data: ExpressionData,
    path: PathLike,
    *,
    sep: str | None = None,
    orientation: str = "genes-in-rows",
    chunk_rows: int | None = None,
) -> None:
    """Write the values as a TSV/CSV table (``.gz`` -> gzip); metadata is not written.

    ``orientation="genes-in-rows"`` writes ``gene_id`` then one column per sample;
    ``"samples-in-rows"`` writes ``sample_id`` then one column per gene. Values round-trip
    exactly as float32; NaN is written as ``NaN``. Atomic: no partial file is left.
    """
    if orientation not in ORIENTATIONS:
        raise GeneinferError(f"orientation must be one of {ORIENTATIONS}, not {orientation!r}")
    sep = _sep_for(path, sep)
    genes_in_rows = orientation == "genes-in-rows"
    row_ids = data.gene_ids if genes_in_rows else data.sample_ids
    col_ids = data.sample_ids if genes_in_rows else data.gene_ids
    for ids in (row_ids, col_ids):
        if any(not str(i).strip() for i in ids):
            raise GeneinferError("cannot write an empty id to a table")
        check_writable_texts([str(i) for i in ids], what="id", limit=MAX_ID_CHARS)
    check_writable_values(data.values, data.gene_ids, data.sample_ids)
    matrix = data.values.T if genes_in_rows else data.values
    head = [("gene_id" if genes_in_rows else "sample_id"), *map(str, col_ids)]
    gz = str(path).endswith(".gz")
    with atomic_path(path) as tmp:
        fh = (
            gzip.open(tmp, "wt", encoding="utf-8", newline="")
            if gz
            else open(tmp, "w", encoding="utf-8", newline="")
        )
        with fh:
            fh.write(sep.join(_quote(h, sep) for h in head) + "\n")
            rid = [_quote(str(i), sep) for i in row_ids]
            step = chunk_rows or rows_per_block(matrix.shape[1])
            for start in range(0, matrix.shape[0], step):
                stop = min(start + step, matrix.shape[0])
                lines = format_block(matrix[start:stop])
                fh.write(
                    "".join(
                        f"{rid[k]}{sep}{ln if sep == chr(9) else ln.replace(chr(9), sep)}\n"
                        if matrix.shape[1]
                        else f"{rid[k]}\n"
                        for k, ln in zip(range(start, stop), lines)
                    )
                )
