"""GCT 1.2 / 1.3 text files (Broad / CMap), plain or gzip-compressed.

A GCT file is genes x samples; :class:`~geneinfer.expression.ExpressionData` is samples x genes,
so readers transpose. GCT 1.3 layout::

    #1.3
    <n_genes> <n_samples> <n_row_meta> <n_col_meta>
    id  <row meta names...>  <sample ids...>
    <col meta name>  na...  <value per sample>      (n_col_meta lines)
    <gene id>  <row meta values...>  <expression values...>

Metadata column names are kept verbatim; values stay text unless printing the number
reproduces the text exactly (so read -> write reproduces the file's metadata). A column
metadata row ``values`` naming the scale (``"RMA log2"``, ``"MAS5 linear"``) sets
:attr:`ExpressionData.scale`.
"""

from __future__ import annotations

import gzip
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from geneinfer.errors import GeneinferError, InputFormatError
from geneinfer.expression import ExpressionData
from geneinfer.idkinds import detect_id_kind
from geneinfer.io._common import (
    PathLike,
    add_derived_gene_columns,
    check_readable,
    check_unique,
    format_block,
    is_gzip,
    meta_frame,
    meta_strings,
    open_text,
    rows_per_block,
    samples_with_scale,
    strip_derived_gene_columns,
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
    longest,
)
from geneinfer.io.delimited import BodyLayout, iter_body
from geneinfer.scales import stated_scale
from geneinfer.utils.files import atomic_path

_CHUNK_ROWS = 2000
_DIGITS = re.compile("[0-9]+")  # ASCII only: str.isdigit would take '²' or Arabic digits
#: the most text one byte of gzip data can expand to (deflate's limit is about 1,032)
_GZIP_MAX_RATIO = 1100
#: values parsed at once: a wide file (GTEx: 17,382 samples) gets fewer rows per chunk, so
#: the parser's text and number buffers stay around 100 MB whatever the width
_CHUNK_VALUES = 10_000_000


@dataclass
class GCTHeader:
    """Everything before the data rows of a GCT file."""

    version: str
    n_genes: int
    n_samples: int
    row_meta_names: list[str]
    sample_ids: list[str]
    col_meta: dict[str, list[str]] = field(default_factory=dict)
    data_start: int = 0  # 1-based line number of the first data row

    @property
    def n_fields(self) -> int:
        return 1 + len(self.row_meta_names) + self.n_samples


def _ints(path: PathLike, line: str, n: int, lineno: int) -> list[int]:
    parts = line.split("\t") if "\t" in line else line.split()
    parts = [p for p in (x.strip() for x in parts) if p]
    if len(parts) != n or not all(_DIGITS.fullmatch(p) for p in parts):
        raise InputFormatError(
            path,
            f"bad dimension line {line.strip()[:60]!r}",
            where=lineno,
            expected=f"{n} non-negative integers",
        )
    return [int(p) for p in parts]


def _check_lengths(path: PathLike, fields: Sequence[str], *, where: int) -> None:
    if longest(fields) > MAX_FIELD_CHARS:
        raise InputFormatError(path, f"a field of {longest(fields)} characters", where=where,
                               expected=f"at most {MAX_FIELD_CHARS}")


def read_gct_header(path: PathLike) -> GCTHeader:
    """Parse and validate the header of a GCT file (cheap: reads only the header lines)."""
    path = check_readable(path)
    with translate_errors(path, what="GCT file"), open_text(path) as fh:
        first = fh.readline().rstrip("\r\n")
        version = first.strip().lstrip("#")
        if not first.startswith("#") or version not in ("1.2", "1.3"):
            raise InputFormatError(
                path, f"first line is {first[:40]!r}", where=1, expected="'#1.2' or '#1.3'"
            )
        dims_line = fh.readline()
        if version == "1.3":
            n_genes, n_samples, n_rmeta, n_cmeta = _ints(path, dims_line, 4, 2)
        else:
            n_genes, n_samples = _ints(path, dims_line, 2, 2)
            n_rmeta, n_cmeta = 1, 0
        head = fh.readline().rstrip("\r\n").split("\t")
        if len(head) != 1 + n_rmeta + n_samples:
            raise InputFormatError(
                path,
                f"header row has {len(head)} fields",
                where=3,
                expected=f"{1 + n_rmeta + n_samples} (id + {n_rmeta} row metadata + "
                f"{n_samples} samples, from line 2)",
            )
        row_names = head[1 : 1 + n_rmeta]
        samples = head[1 + n_rmeta :]
        check_unique(path, samples, what="sample", where=3)
        check_unique(path, row_names, what="row metadata", where=3)
        if any(not s.strip() for s in samples):
            raise InputFormatError(path, "empty sample id", where=3, expected="non-empty ids")
        for sample in samples:
            check_id_length(path, sample, what="sample", where=3)
        _check_lengths(path, row_names, where=3)
        col_meta: dict[str, list[str]] = {}
        for k in range(n_cmeta):
            lineno = 4 + k
            raw = fh.readline()
            if not raw:
                raise InputFormatError(
                    path,
                    "file ends inside the column metadata",
                    where=lineno,
                    expected=f"{n_cmeta} column metadata lines (from line 2)",
                )
            fields = raw.rstrip("\r\n").split("\t")
            if len(fields) != len(head):
                raise InputFormatError(
                    path,
                    f"column metadata row has {len(fields)} fields",
                    where=lineno,
                    expected=f"{len(head)} fields like the header row",
                )
            if fields[0] in col_meta:
                raise InputFormatError(
                    path,
                    f"duplicate column metadata {fields[0]!r}",
                    where=lineno,
                    expected="unique names",
                )
            _check_lengths(path, fields, where=lineno)
            col_meta[fields[0]] = fields[1 + n_rmeta :]
    return GCTHeader(
        version=version,
        n_genes=n_genes,
        n_samples=n_samples,
        row_meta_names=row_names,
        sample_ids=samples,
        col_meta=col_meta,
        data_start=4 + n_cmeta,
    )


def _check_declared_size(path: PathLike, hdr: GCTHeader) -> None:
    """Refuse dimensions the file cannot hold, before anything is sized by them.

    Every data row has at least one byte per field (its separator or line end); gzip packs
    at most about 1,032 bytes into one, so a compressed file bounds the text it holds too.
    """
    size = os.path.getsize(path)
    room = size * _GZIP_MAX_RATIO if is_gzip(path) else size
    need = hdr.n_genes * hdr.n_fields
    if need > room:
        raise InputFormatError(
            path, f"declares {hdr.n_genes} genes x {hdr.n_fields} fields, more than a file "
            f"of {size} bytes can hold", where=2,
            expected="the number of data rows and samples the file has")


def body_layout(path: PathLike, hdr: GCTHeader, *, sample_pos: Sequence[int] | None = None,
                with_meta: bool = True) -> BodyLayout:
    """The data rows of a GCT file for :func:`geneinfer.io.delimited.iter_body`."""
    n_meta = len(hdr.row_meta_names)
    pos = range(hdr.n_samples) if sample_pos is None else sample_pos
    return BodyLayout(
        sep="\t", quoted=False, n_fields=hdr.n_fields, first_line=hdr.data_start,
        text_cols=[0, *range(1, 1 + n_meta)] if with_meta else [0],
        value_cols=[1 + n_meta + p for p in pos],
        names=["id", *hdr.row_meta_names, *hdr.sample_ids],
        expected=f"{hdr.n_fields} (id + {n_meta} metadata + {hdr.n_samples} samples)",
    )


def _body_chunks(
    path: PathLike,
    hdr: GCTHeader,
    *,
    sample_pos: Sequence[int] | None = None,
    with_meta: bool = True,
    nonfinite: NonFinite,
    chunk_rows: int | None = None,
) -> Iterator[tuple[list[str], dict[str, list[str]], np.ndarray]]:
    """The data rows, parsed and checked, in chunks: ``(gene ids, row metadata texts,
    values)`` with ``values`` genes x selected samples, float32.

    This is the one GCT body parser: whole-file reads and block readers both use it.
    """
    _check_declared_size(path, hdr)
    layout = body_layout(path, hdr, sample_pos=sample_pos, with_meta=with_meta)
    n_cols = hdr.n_samples if sample_pos is None else len(sample_pos)
    chunk_rows = chunk_rows or max(64, min(_CHUNK_ROWS, _CHUNK_VALUES // max(1, n_cols)))
    names = hdr.row_meta_names if with_meta else []
    done = 0
    for chunk in iter_body(path, layout, nonfinite=nonfinite, chunk_rows=chunk_rows):
        n = len(chunk.lines)
        if done + n > hdr.n_genes:
            raise InputFormatError(
                path,
                f"more than {hdr.n_genes} data rows",
                where=int(chunk.lines[hdr.n_genes - done]),
                expected=f"{hdr.n_genes} genes (from line 2)",
            )
        meta = {name: chunk.texts[1 + k] for k, name in enumerate(names)}
        yield chunk.texts[0], meta, chunk.values
        done += n
    if done != hdr.n_genes:
        raise InputFormatError(
            path, f"{done} data rows", where=2, expected=f"{hdr.n_genes} genes as line 2 says"
        )


def _scale(hdr: GCTHeader) -> str:
    """The scale the ``values`` column-metadata row states (unknown without one)."""
    return stated_scale(hdr.col_meta.get("values", []))


def _genes(ids: list[str], meta: dict[str, list[str]]) -> pd.DataFrame:
    return add_derived_gene_columns(meta_frame(meta, pd.Index(ids, dtype=object)))


def _samples(hdr: GCTHeader, pos: Sequence[int]) -> pd.DataFrame:
    sample_ids = pd.Index([hdr.sample_ids[p] for p in pos], dtype=object)
    return meta_frame({k: [v[p] for p in pos] for k, v in hdr.col_meta.items()}, sample_ids)


def read_gct(path: PathLike, *, sample_ids: Sequence[str] | None = None,
             nonfinite: str | NonFinite | None = None) -> ExpressionData:
    """Read a GCT 1.2/1.3 file (optionally gzip-compressed) as samples x genes.

    Parameters
    ----------
    path
        The ``.gct`` or ``.gct.gz`` file.
    sample_ids
        Read only these samples (columns), in this order.
    nonfinite
        ``"error"`` (default) refuses infinite values and numbers beyond float32 naming the
        cell; ``"missing"`` reads them as NaN (pass a :class:`~geneinfer.io.cells.NonFinite`
        to learn how many).

    Raises
    ------
    InputFormatError
        Wrong version line, dimensions that disagree with the body, ragged rows,
        non-numeric or non-finite values, control characters, duplicate ids, truncated
        gzip, empty file (see :mod:`geneinfer.io.cells` for the rules).
    """
    with GCTBlocks(path, sample_ids=sample_ids, nonfinite=nonfinite) as reader:
        return reader.block(0, reader.n_samples)


def _positions(path: PathLike, hdr: GCTHeader, sample_ids: Sequence[str] | None) -> list[int]:
    if sample_ids is None:
        return list(range(hdr.n_samples))
    lookup = {s: i for i, s in enumerate(hdr.sample_ids)}
    absent = [s for s in sample_ids if s not in lookup]
    if absent:
        raise InputFormatError(path, f"unknown sample ids: {', '.join(absent[:5])}", where=3)
    return [lookup[s] for s in sample_ids]


class GCTBlocks(SpooledBlocks):
    """Random access to a GCT file: parsed once (the one GCT body parser) into a genes x
    samples spool, from which sample blocks are sliced.

    ``sample_ids`` keeps only those samples (in that order); ``nonfinite`` as for
    :func:`read_gct`.
    """

    def __init__(self, path: PathLike, *, sample_ids: Sequence[str] | None = None,
                 nonfinite: str | NonFinite | None = None) -> None:
        hdr = read_gct_header(path)
        pos = _positions(path, hdr, sample_ids)
        self.path = Path(path)
        self.source = str(path)
        self.nonfinite = as_nonfinite(nonfinite)
        # sized by the rows found, not by the declared count (a file may lie)
        self.spool = Spool(len(pos), n_rows=min(hdr.n_genes, 1 << 16))
        ids: list[str] = []
        meta: dict[str, list[str]] = {n: [] for n in hdr.row_meta_names}
        try:
            with translate_errors(path, what="GCT file"):
                for chunk_ids, chunk_meta, chunk in _body_chunks(
                        path, hdr, sample_pos=pos, nonfinite=self.nonfinite):
                    self.spool.append(chunk)
                    ids.extend(chunk_ids)
                    for name, texts in chunk_meta.items():
                        meta[name].extend(texts)
                self.genes = _genes(ids, meta)
                self.sample_table = _samples(hdr, pos)
        except BaseException:
            self.close()
            raise
        self.gene_ids = self.genes.index
        self.n_samples = len(pos)
        self.scale = _scale(hdr)
        self.gene_id_kind = detect_id_kind(ids)


def peek_gct(path: PathLike) -> tuple[int, int, list[str]]:
    """``(n_samples, n_genes, gene_ids)`` reading the header and the id column only."""
    hdr = read_gct_header(path)
    layout = body_layout(path, hdr, with_meta=False)
    layout.value_cols = []
    ids: list[str] = []
    with translate_errors(path, what="GCT file"):
        _check_declared_size(path, hdr)
        for chunk in iter_body(path, layout, nonfinite=NonFinite()):
            ids.extend(chunk.texts[0])
    if len(ids) != hdr.n_genes:
        raise InputFormatError(
            path, f"{len(ids)} data rows", where=2, expected=f"{hdr.n_genes} genes as line 2 says"
        )
    return hdr.n_samples, hdr.n_genes, ids


# --------------------------------------------------------------------------- writing
def _check_text(values: Sequence[str], what: str, *, limit: int = MAX_FIELD_CHARS) -> None:
    """What the GCT reader would refuse: tabs, control characters, over-long texts."""
    for v in values:
        if "\t" in v or "\n" in v or "\r" in v:
            raise GeneinferError(
                f"cannot write {what} {v[:40]!r} to GCT: contains a tab or newline"
            )
    check_writable_texts(values, what=what, limit=limit)


def write_gct(
    data: ExpressionData,
    path: PathLike,
    *,
    version: str = "1.3",
    chunk_rows: int | None = None,
    compresslevel: int = 6,
) -> None:
    """Write ``data`` as GCT (``.gz`` in the name -> gzip-compressed).

    Version 1.3 (default) keeps all gene metadata (row metadata) and sample metadata
    (column metadata). ``version="1.2"`` is allowed only without sample metadata; its
    ``Description`` column comes from gene metadata ``Description`` (else ``na``).
    Values are written so that reading them back as float32 reproduces them exactly; NaN is
    written as ``NaN``. The file appears only when complete (atomic write).
    """
    genes = strip_derived_gene_columns(data.genes)
    samples = samples_with_scale(data.samples, data.scale)
    if version == "1.2":
        if samples.shape[1] or set(genes.columns) - {"Description"}:
            raise GeneinferError("GCT 1.2 cannot hold sample or gene metadata; write 1.3")
        desc = (
            genes["Description"]
            if "Description" in genes
            else pd.Series(["na"] * data.n_genes, index=data.gene_ids)
        )
        genes = pd.DataFrame({"Description": desc}, index=data.gene_ids)
    elif version != "1.3":
        raise GeneinferError(f"unknown GCT version {version!r}; expected '1.2' or '1.3'")
    gene_ids = [str(g) for g in data.gene_ids]
    sample_ids = [str(s) for s in data.sample_ids]
    _check_text(gene_ids, "gene id", limit=MAX_ID_CHARS)
    _check_text(sample_ids, "sample id", limit=MAX_ID_CHARS)
    check_writable_values(data.values, gene_ids, sample_ids)
    if any(not g.strip() for g in [*gene_ids, *sample_ids]):
        raise GeneinferError("cannot write an empty gene or sample id to GCT")
    row_cols = {str(c): meta_strings(genes[c]) for c in genes.columns}
    col_cols = {str(c): meta_strings(samples[c]) for c in samples.columns}
    for name, vals in [*row_cols.items(), *col_cols.items()]:
        _check_text([name, *vals], "metadata")
    gz = str(path).endswith(".gz")
    with atomic_path(path) as tmp:
        fh = (
            gzip.open(tmp, "wt", encoding="utf-8", compresslevel=compresslevel, newline="")
            if gz
            else open(tmp, "w", encoding="utf-8", newline="")
        )
        with fh:
            _write_lines(fh, data, version, gene_ids, sample_ids, row_cols, col_cols, chunk_rows)


def _write_lines(
    fh,
    data: ExpressionData,
    version: str,
    gene_ids: list[str],
    sample_ids: list[str],
    row_cols: dict[str, list[str]],
    col_cols: dict[str, list[str]],
    chunk_rows: int | None,
) -> None:
    n_r = len(row_cols)
    if version == "1.3":
        fh.write(f"#1.3\n{data.n_genes}\t{data.n_samples}\t{n_r}\t{len(col_cols)}\n")
        fh.write("\t".join(["id", *row_cols, *sample_ids]) + "\n")
        for name, vals in col_cols.items():
            fh.write("\t".join([name, *(["na"] * n_r), *vals]) + "\n")
    else:
        fh.write(f"#1.2\n{data.n_genes}\t{data.n_samples}\n")
        fh.write("\t".join(["Name", "Description", *sample_ids]) + "\n")
    meta_lists = list(row_cols.values())
    step = chunk_rows or rows_per_block(data.n_samples)
    for start in range(0, data.n_genes, step):
        stop = min(start + step, data.n_genes)
        lines = format_block(data.values[:, start:stop].T)
        out = []
        for k, line in zip(range(start, stop), lines):
            prefix = "\t".join([gene_ids[k], *(m[k] for m in meta_lists)])
            out.append(f"{prefix}\t{line}\n" if data.n_samples else f"{prefix}\n")
        fh.write("".join(out))
