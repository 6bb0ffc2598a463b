"""Probe annotation files of microarray platforms, in the layouts they are published in.

:func:`read_probe_table` returns the table as text (index = probe id, one column per
annotation column); which columns hold symbols and Entrez ids, and turning them into a
probe -> gene table, is :mod:`geneinfer.genes.probes`. Layouts (recognised from the content):

``geo-soft``
    A GEO SOFT platform record (``^PLATFORM``, the full table GEO's ``acc.cgi?...&view=full``
    serves, or a family file): the table between ``!platform_table_begin`` and
    ``!platform_table_end`` (``ID``, ..., ``Gene Symbol``, ``ENTREZ_GENE_ID``). GEO's
    ``GPLxxx.annot.gz`` has the same frame (``ID``, ``Gene symbol``, ``Gene ID``). The file
    is streamed: the sample tables of a family file are never held in memory.
``geo-table``
    GEO's "full table" download: ``#COLUMN = description`` lines, then a tab-separated table.
``affymetrix-csv``
    Affymetrix NetAffx CSV: ``#%key=value`` comment lines, then quoted comma-separated
    fields (``"Probe Set ID"``, ``"Gene Symbol"``, ``"Entrez Gene"``; ``---`` = none,
    ``" /// "`` between several genes).
``chip``
    GSEA / MSigDB ``.chip``: tab-separated ``Probe Set ID``, ``Gene Symbol``, ``Gene Title``.
``two-column``
    Two columns, probe id then gene symbol or Entrez id, with or without a header line
    (tab or comma separated).
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pandas as pd

from geneinfer.errors import InputFormatError
from geneinfer.io._common import PathLike, check_readable, open_text, translate_errors

_TABLE_BEGIN = "!platform_table_begin"
_TABLE_END = "!platform_table_end"
#: header names of a probe id column (compared in lower case without spaces / _ / .)
ID_HEADERS = ("id", "idref", "probe", "probeid", "probesetid", "probeset", "probename",
              "illuminaid", "arrayaddressid", "rid", "reporterid", "spotid", "name")
_GENE_HEADERS = ("symbol", "genesymbol", "gene", "genename", "entrez", "entrezid",
                 "entrezgene", "entrezgeneid", "geneid", "hgncsymbol")
#: read at most this many lines looking for the start of a table
_MAX_PREAMBLE = 10_000


def _norm(name: object) -> str:
    return re.sub(r"[\s_.\-]+", "", str(name).strip().strip('"').lower())


def _frame(path: Path, text: str, *, sep: str, where: int, header: bool = True,
           fmt: str) -> pd.DataFrame:
    try:
        table = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False,
                            header=0 if header else None, quotechar='"',
                            quoting=csv.QUOTE_MINIMAL, skipinitialspace=False)
    except (ValueError, pd.errors.ParserError) as exc:
        raise InputFormatError(path, f"cannot read the annotation table ({exc})",
                               where=where, expected=f"a {fmt} annotation table") from exc
    table = table.loc[:, [c for c in table.columns if not str(c).startswith("Unnamed:")
                          or table[c].astype(str).str.strip().ne("").any()]]
    table.attrs["format"] = fmt
    return table


def _soft_table(path: Path) -> tuple[str, int]:
    """Text of the platform table of a SOFT / annot file, streamed (first table only)."""
    lines: list[str] = []
    begin = 0
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            if not begin:
                if line.lower().startswith(_TABLE_BEGIN):
                    begin = lineno
                continue
            if line.lower().startswith(_TABLE_END):
                return "".join(lines), begin + 1
            lines.append(line)
    if not begin:
        raise InputFormatError(path, "no platform table", expected=f"a '{_TABLE_BEGIN}' line "
                               "(GEO SOFT platform or annot file)")
    raise InputFormatError(path, "file ends inside the platform table",
                           expected=f"a '{_TABLE_END}' line")


def _preamble(path: Path) -> tuple[list[str], str, int]:
    """Comment lines at the top, the first table line and its 1-based number."""
    comments: list[str] = []
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            text = line.rstrip("\r\n")
            if lineno > _MAX_PREAMBLE:
                break
            if not text.strip() or text.startswith(("#", "!", "^")):
                comments.append(text)
                continue
            return comments, text, lineno
    raise InputFormatError(path, "no table", expected="a probe annotation table")


def _two_columns(path: Path, first: str, lineno: int, sep: str) -> pd.DataFrame:
    with open_text(path) as fh:
        body = "".join(line for k, line in enumerate(fh, start=1) if k >= lineno)
    fields = [f.strip().strip('"') for f in first.split(sep)]
    header = _norm(fields[0]) in ID_HEADERS or _norm(fields[1]) in _GENE_HEADERS
    table = _frame(path, body, sep=sep, where=lineno, header=header, fmt="two-column")
    table.columns = ["probe", "gene"]
    return table


def read_probe_table(path: PathLike) -> pd.DataFrame:
    """A platform annotation file as a text table indexed by probe id (see the module
    docstring for the layouts); ``attrs["format"]`` names the layout found.

    Raises
    ------
    InputFormatError
        No table, an unreadable table, no probe id column, or repeated probe ids.
    """
    path = check_readable(path)
    with translate_errors(path, what="probe annotation file"):
        comments, first, lineno = _preamble(path)
        if any(c.lower().startswith(_TABLE_BEGIN) for c in comments) or any(
                c.startswith("^") for c in comments):
            text, where = _soft_table(path)
            table = _frame(path, text, sep="\t", where=where, fmt="geo-soft")
        else:
            sep = "\t" if "\t" in first else ","
            with open_text(path) as fh:
                body = "".join(line for k, line in enumerate(fh, start=1) if k >= lineno)
            n_fields = len(next(csv.reader([first], delimiter=sep, quotechar='"')))
            if n_fields == 2:
                table = _two_columns(path, first, lineno, sep)
            else:
                fmt = ("affymetrix-csv" if sep == "," and any(c.startswith("#%") for c in comments)
                       else "chip" if _norm(first.split(sep)[0]) == "probesetid"
                       and sep == "\t" else "geo-table" if comments else "table")
                table = _frame(path, body, sep=sep, where=lineno, fmt=fmt)
            where = lineno
    return _indexed(path, table, where)


def _indexed(path: Path, table: pd.DataFrame, where: int) -> pd.DataFrame:
    fmt = table.attrs.get("format", "table")
    by_norm = {_norm(c): c for c in table.columns}
    id_col = next((by_norm[h] for h in ID_HEADERS if h in by_norm), table.columns[0])
    ids = table[id_col].astype(str).str.strip()
    keep = ids.ne("") & ~ids.str.startswith("#")
    table, ids = table.loc[keep], ids[keep]
    if table.empty:
        raise InputFormatError(path, "the annotation table has no rows", where=where,
                               expected="one row per probe")
    dup = ids[ids.duplicated()]
    if len(dup):
        raise InputFormatError(path, f"probe {dup.iloc[0]!r} is listed twice", where=where,
                               expected="one row per probe")
    out = table.drop(columns=[id_col]).set_axis(pd.Index(ids, name="probe", dtype=object))
    out.attrs["format"] = fmt
    return out
