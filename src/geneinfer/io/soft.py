"""GEO SOFT family files and GEO series-matrix files (read only).

SOFT (``GSE*_family.soft.gz``): ``^PLATFORM`` / ``^SAMPLE`` blocks with ``!Key = value``
attributes and tables between ``!platform_table_begin`` / ``!sample_table_begin`` and the
matching ``_end`` line. :func:`read_soft` returns one :class:`ExpressionData` per platform:
genes = the platform table's ids (its columns, e.g. ``Gene Symbol``, ``ENTREZ_GENE_ID``,
become gene metadata), samples = the samples on that platform (``VALUE`` column), sample
attributes (title, source, characteristics, description, ...) become sample metadata.

Series matrix (``GSE*_series_matrix.txt.gz``): ``!Sample_*`` header lines (one value per
sample, quoted) and a genes x samples table between ``!series_matrix_table_begin`` and
``!series_matrix_table_end``.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from geneinfer.errors import InputFormatError
from geneinfer.expression import ExpressionData
from geneinfer.idkinds import detect_id_kind
from geneinfer.io._common import (
    NA_TOKENS,
    PathLike,
    add_derived_gene_columns,
    check_readable,
    check_unique,
    meta_frame,
    open_text,
    translate_errors,
)
from geneinfer.io.cells import (
    MAX_FIELD_CHARS,
    NonFinite,
    as_nonfinite,
    check_id_length,
    is_blank,
    longest,
    nonfinite_cells,
    parse_texts,
)
from geneinfer.io.delimited import BodyLayout, check_row_ids, iter_body
from geneinfer.scales import stated_scale

_NA = frozenset(NA_TOKENS)
_ENTITY = re.compile(r"^\^(\w+)\s*=\s*(.*)$")
_SKIP_SAMPLE_KEYS = re.compile(
    r"^(contact_|data_row_count|supplementary_file|status|"
    r"submission_date|last_update_date)"
)


@dataclass
class _Block:
    kind: str
    acc: str
    line: int
    attrs: dict[str, list[str]] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)  # "#COL = description"
    header: list[str] | None = None
    rows: list[list[str]] = field(default_factory=list)
    row_lines: list[int] = field(default_factory=list)  # file line of each table row
    table_line: int = 0


def _parse_blocks(path: PathLike, keep: set[str] | None) -> list[_Block]:
    """Stream the SOFT file into blocks; sample tables of unwanted platforms are skipped."""
    blocks: list[_Block] = []
    cur: _Block | None = None
    in_table = False
    skip_rows = False
    with open_text(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.rstrip("\r\n")
            if in_table:
                if line.startswith("!") and line.lower().endswith("_table_end"):
                    in_table = False
                elif is_blank(line):
                    continue  # blank lines are skipped, as in every table body
                elif cur.header is None:  # type: ignore[union-attr]
                    cur.header = line.split("\t")  # type: ignore[union-attr]
                    cur.table_line = lineno  # type: ignore[union-attr]
                elif not skip_rows:
                    cur.rows.append(_fields(path, line, lineno))  # type: ignore[union-attr]
                    cur.row_lines.append(lineno)  # type: ignore[union-attr]
                continue
            if not line.strip():
                continue
            if len(line) > MAX_FIELD_CHARS:
                raise InputFormatError(path, f"line of {len(line)} characters", where=lineno,
                                       expected=f"at most {MAX_FIELD_CHARS}")
            if lineno == 1 and not line.startswith(("^", "!", "#")):
                raise InputFormatError(
                    path,
                    f"first line is {line[:40]!r}",
                    where=1,
                    expected="a GEO SOFT file starting with '^'",
                )
            m = _ENTITY.match(line)
            if m:
                cur = _Block(kind=m.group(1).upper(), acc=m.group(2).strip(), line=lineno)
                blocks.append(cur)
            elif cur is None:
                raise InputFormatError(
                    path,
                    f"line {line[:40]!r} outside any block",
                    where=lineno,
                    expected="'^DATABASE', '^SERIES', '^PLATFORM' or '^SAMPLE'",
                )
            elif line.startswith("!") and line.lower().endswith("_table_begin"):
                in_table = True
                plat = (cur.attrs.get("platform_id") or [""])[0]
                skip_rows = keep is not None and (
                    (cur.kind == "SAMPLE" and plat not in keep)
                    or (cur.kind == "PLATFORM" and cur.acc not in keep)
                )
            elif line.startswith("!"):
                key, _, val = line[1:].partition("=")
                key = key.strip()
                key = key.split("_", 1)[1] if "_" in key else key
                cur.attrs.setdefault(key, []).append(val.strip())
            elif line.startswith("#"):
                key, _, val = line[1:].partition("=")
                cur.columns[key.strip()] = val.strip()
    if in_table:
        raise InputFormatError(
            path,
            "file ends inside a data table",
            where=cur.line if cur else None,
            expected="'!..._table_end'",
        )
    return blocks


def _fields(path: PathLike, line: str, lineno: int) -> list[str]:
    fields = line.split("\t")
    if longest(fields) > MAX_FIELD_CHARS:
        raise InputFormatError(path, f"a field of {longest(fields)} characters", where=lineno,
                               expected=f"at most {MAX_FIELD_CHARS}")
    return fields


def _table_frame(path: PathLike, block: _Block) -> pd.DataFrame:
    if not block.header:
        raise InputFormatError(
            path,
            f"{block.kind.lower()} {block.acc} has no table",
            where=block.line,
            expected="a header line after '_table_begin'",
        )
    check_unique(path, block.header, what=f"{block.acc} column", where=block.table_line)
    width = len(block.header)
    for k, row in enumerate(block.rows):
        if len(row) != width:
            raise InputFormatError(
                path,
                f"table row of {block.acc} has {len(row)} fields",
                where=block.row_lines[k],
                expected=f"{width} like its header",
            )
    frame = pd.DataFrame(block.rows, columns=block.header, dtype=object)
    ids = frame.iloc[:, 0].tolist()
    check_row_ids(path, ids, block.row_lines, set(), what=f"{block.acc} row")
    return frame


def _numbers(path: PathLike, texts: list[str], block: _Block, col: int,
             nonfinite: NonFinite) -> np.ndarray:
    """The sample's VALUE column by the one grammar (:mod:`geneinfer.io.cells`)."""
    values, bad = parse_texts(texts)
    if bad is not None:
        raise InputFormatError(
            path,
            f"non-numeric value {texts[bad][:30]!r} in {block.acc} column {col + 1}",
            where=block.row_lines[bad],
            expected="a number or NA/empty for missing",
        )
    inf = nonfinite_cells(values)
    if inf.any():
        if nonfinite.policy == "error":
            k = int(np.argmax(inf))
            raise InputFormatError(
                path, f"value {texts[k].strip()[:30]!r} of {block.acc} for "
                f"{block.rows[k][0][:40]} is infinite or beyond float32",
                where=block.row_lines[k],
                expected="finite numbers (or --nonfinite missing to read them as missing)")
        values[inf] = np.nan
        nonfinite.count += int(inf.sum())
    return values


def _sample_meta(samples: list[_Block]) -> pd.DataFrame:
    cols: dict[str, list[str]] = {}
    keys: list[str] = []
    for s in samples:
        for k in s.attrs:
            if k not in keys and not _SKIP_SAMPLE_KEYS.match(k):
                keys.append(k)
    for k in keys:
        cols[k] = ["; ".join(s.attrs.get(k, [])) for s in samples]
    index = pd.Index([s.acc for s in samples], dtype=object)
    return meta_frame(cols, index)


def _scale(samples: list[_Block]) -> str:
    """The scale the samples' VALUE column descriptions and data processing texts state."""
    texts = []
    for s in samples:
        texts.append(s.columns.get("VALUE", ""))
        texts.extend(s.attrs.get("data_processing", []))
    return stated_scale(texts)


def _platform_data(
    path: PathLike, plat: _Block | None, plat_id: str, samples: list[_Block],
    nonfinite: NonFinite,
) -> ExpressionData:
    genes_meta: pd.DataFrame | None = None
    order: list[str] = []
    if plat is not None and plat.header:
        table = _table_frame(path, plat)
        order = table.iloc[:, 0].tolist()
        genes_meta = meta_frame(
            {c: table[c].tolist() for c in table.columns[1:]}, pd.Index(order, dtype=object)
        )
    seen = set(order)
    per_sample: list[pd.Series] = []
    for s in samples:
        table = _table_frame(path, s)
        if "VALUE" not in table.columns:
            raise InputFormatError(
                path,
                f"sample {s.acc} table has no VALUE column",
                where=s.table_line,
                expected="columns ID_REF, VALUE, ...",
            )
        col = list(table.columns).index("VALUE")
        ids = table.iloc[:, 0].tolist()
        vals = _numbers(path, table["VALUE"].tolist(), s, col, nonfinite)
        for i in ids:
            if i not in seen:
                seen.add(i)
                order.append(i)
        per_sample.append(pd.Series(vals, index=pd.Index(ids, dtype=object)))
    gene_index = pd.Index(order, dtype=object)
    values = np.full((len(samples), len(order)), np.nan, dtype=np.float32)
    for k, ser in enumerate(per_sample):
        values[k, gene_index.get_indexer(ser.index)] = ser.to_numpy()
    genes_meta = (
        pd.DataFrame(index=gene_index) if genes_meta is None else genes_meta.reindex(gene_index)
    )
    return ExpressionData(
        values=values,
        gene_ids=gene_index,
        sample_ids=[s.acc for s in samples],
        genes=add_derived_gene_columns(genes_meta),
        samples=_sample_meta(samples),
        scale=_scale(samples),
        gene_id_kind=detect_id_kind(order),
        source=f"{path} [{plat_id}]",
    )


def soft_platforms(path: PathLike) -> list[str]:
    """Platform ids that have samples in a SOFT file (cheap scan of the ``^`` lines)."""
    check_readable(path)
    found: list[str] = []
    with translate_errors(path, what="GEO SOFT file"), open_text(path) as fh:
        for line in fh:
            if line.startswith("!Sample_platform_id"):
                pid = line.partition("=")[2].strip()
                if pid not in found:
                    found.append(pid)
    return found


def read_soft(
    path: PathLike, *, platforms: Iterable[str] | None = None,
    nonfinite: str | NonFinite | None = None,
) -> dict[str, ExpressionData]:
    """Read a GEO SOFT family file: ``{platform id: samples of that platform}``.

    Parameters
    ----------
    platforms
        Only build these platforms (other samples' tables are skipped while reading).
    nonfinite
        ``"error"`` (default) or ``"missing"``, as for :func:`geneinfer.io.read_gct`.
    """
    check_readable(path)
    nonfinite = as_nonfinite(nonfinite)
    keep = None if platforms is None else set(platforms)
    with translate_errors(path, what="GEO SOFT file"):
        blocks = _parse_blocks(path, keep)
        plats = {b.acc: b for b in blocks if b.kind == "PLATFORM"}
        samples = [b for b in blocks if b.kind == "SAMPLE"]
        if not samples:
            raise InputFormatError(path, "no ^SAMPLE blocks", expected="a GEO SOFT family file")
        check_unique(path, [s.acc for s in samples], what="sample", where="^SAMPLE lines")
        by_plat: dict[str, list[_Block]] = {}
        for s in samples:
            pid = (s.attrs.get("platform_id") or [""])[0]
            if not pid:
                raise InputFormatError(
                    path,
                    f"sample {s.acc} has no !Sample_platform_id",
                    where=s.line,
                    expected="a platform id per sample",
                )
            by_plat.setdefault(pid, []).append(s)
        if keep is not None:
            absent = keep - set(by_plat)
            if absent:
                raise InputFormatError(
                    path,
                    f"no samples on platform {', '.join(sorted(absent))}",
                    expected=f"one of {', '.join(by_plat)}",
                )
            by_plat = {k: v for k, v in by_plat.items() if k in keep}
        return {pid: _platform_data(path, plats.get(pid), pid, ss, nonfinite)
                for pid, ss in by_plat.items()}


def read_soft_platform(path: PathLike, *, platform: str | None = None,
                       nonfinite: str | NonFinite | None = None) -> ExpressionData:
    """One platform of a SOFT file; ``platform`` is required when there are several."""
    if platform is None:
        found = soft_platforms(path)
        if len(found) > 1:
            raise InputFormatError(
                path,
                f"has samples on {len(found)} platforms: {', '.join(found)}",
                expected="a platform choice (platform=... / --platform GPLxxx)",
            )
        if not found:
            raise InputFormatError(
                path, "no sample has a !Sample_platform_id", expected="a GEO SOFT family file"
            )
        platform = found[0]
    return read_soft(path, platforms=[platform], nonfinite=nonfinite)[platform]


# --------------------------------------------------------------------------- series matrix
_TABLE_BEGIN = "!series_matrix_table_begin"
_TABLE_END = "!series_matrix_table_end"


def _split_quoted(path: PathLike, line: str, lineno: int) -> list[str]:
    """Tab-separated fields, double quotes around whole fields (closed on the line)."""
    try:
        return next(csv.reader([line], delimiter="\t", quotechar='"', strict=True))
    except csv.Error as exc:
        raise InputFormatError(path, f"badly quoted field ({exc})", where=lineno,
                               expected="double quotes around whole fields, closed on the "
                               "same line") from None


def read_series_matrix(path: PathLike, *,
                       nonfinite: str | NonFinite | None = None) -> ExpressionData:
    """Read a GEO series-matrix file (``GSE*_series_matrix.txt[.gz]``) as samples x genes.

    ``nonfinite``: ``"error"`` (default) or ``"missing"``, as for
    :func:`geneinfer.io.read_gct`.
    """
    path = check_readable(path)
    nonfinite = as_nonfinite(nonfinite)
    with translate_errors(path, what="GEO series-matrix file"):
        scan = _scan_matrix(path)
        header = _split_quoted(path, scan.header, scan.header_line)
        _check_table_header(path, header, scan.header_line)
        layout = BodyLayout(
            sep="\t", quoted=True, n_fields=len(header), first_line=scan.header_line + 1,
            text_cols=[0], value_cols=list(range(1, len(header))), names=header,
            expected=f"{len(header)} fields like the header", last_line=scan.end - 1,
            n_rows=scan.n_rows,
        )
        ids: list[str] = []
        parts: list[np.ndarray] = []
        for chunk in iter_body(path, layout, nonfinite=nonfinite):
            ids.extend(chunk.texts[0])
            parts.append(chunk.values)
        values = np.concatenate(parts) if parts else np.empty((0, len(header) - 1), np.float32)
        inf = nonfinite_cells(values)
        if inf.any():  # refused by the parser unless they are read as missing
            values[inf] = np.nan
            nonfinite.count += int(inf.sum())
        return _matrix_data(path, ids, header[1:], values.T, scan.attrs)


@dataclass
class _MatrixScan:
    attrs: dict[str, list[list[str]]]
    header: str
    header_line: int
    end: int
    n_rows: int


def _scan_matrix(path: PathLike) -> _MatrixScan:
    """The ``!Sample_`` lines, the table's header line and where the table ends."""
    attrs: dict[str, list[list[str]]] = {}
    begin = end = header_line = n_rows = 0
    header = ""
    lineno = 0
    with open_text(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.rstrip("\r\n")
            if lineno == 1 and not line.startswith("!"):
                raise InputFormatError(
                    path,
                    f"first line is {line[:40]!r}",
                    where=1,
                    expected="'!Series_...' header lines",
                )
            if line.startswith(_TABLE_END):
                end = lineno
                break
            if begin:
                if is_blank(line):
                    continue
                if header_line:
                    n_rows += 1
                else:
                    header, header_line = line, lineno
            elif line.startswith(_TABLE_BEGIN):
                begin = lineno
            elif line.startswith("!Sample_"):
                fields = _split_quoted(path, line, lineno)
                attrs.setdefault(fields[0][len("!Sample_") :], []).append(fields[1:])
    if not begin:
        raise InputFormatError(path, "no data table", expected=f"a '{_TABLE_BEGIN}' line")
    if not end:
        raise InputFormatError(
            path,
            "file ends inside the data table",
            where=lineno,
            expected=f"a '{_TABLE_END}' line",
        )
    if not header_line:
        raise InputFormatError(path, "the data table has no header", where=end,
                               expected='"ID_REF" then one GSM id per sample')
    return _MatrixScan(attrs, header, header_line, end, n_rows)


def _check_table_header(path: PathLike, header: list[str], line: int) -> None:
    if not header or header[0] != "ID_REF":
        raise InputFormatError(
            path,
            "table header does not start with ID_REF",
            where=line,
            expected='"ID_REF" then one GSM id per sample',
        )
    check_unique(path, header[1:], what="sample", where=line)
    for name in header[1:]:
        if not name.strip():
            raise InputFormatError(path, "empty sample id", where=line,
                                   expected="one GSM id per sample")
        check_id_length(path, name, what="sample", where=line)


def _matrix_data(
    path: PathLike, ids: list[str], sample_ids: list[str], values: np.ndarray,
    attrs: dict[str, list[list[str]]],
) -> ExpressionData:
    meta: dict[str, list[str]] = {}
    for key, rows in attrs.items():
        for row in rows:
            if len(row) != len(sample_ids):
                raise InputFormatError(
                    path,
                    f"!Sample_{key} has {len(row)} values",
                    expected=f"{len(sample_ids)} (one per sample in the table)",
                )
        if _SKIP_SAMPLE_KEYS.match(key):
            continue
        meta[key] = ["; ".join(parts) for parts in zip(*rows)]
    samples = meta_frame(meta, pd.Index(sample_ids, dtype=object))
    scale = stated_scale(meta.get("data_processing", []))
    return ExpressionData(
        values=values,
        gene_ids=ids,
        sample_ids=sample_ids,
        samples=samples,
        scale=scale,
        gene_id_kind=detect_id_kind(ids),
        source=str(path),
    )
