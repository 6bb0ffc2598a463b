"""Microarray platform annotations: probe -> gene symbol and Entrez id.

``GPL96`` (Affymetrix HG-U133A) ships with geneinfer; other platforms come from the data
folder, the cache or GEO (``geneinfer data fetch geo_platform --accession GPLxxx``: the
platform's full table; ``geo_platform_annot``: GEO's ``.annot.gz``), or from a file the user
gives (``--annotation FILE``): a GEO SOFT platform table or full-table download, an
Affymetrix CSV, a GSEA ``.chip`` file, or two columns probe -> symbol / Entrez id (files
are read by :func:`geneinfer.io.annotation.read_probe_table`). Probes annotated to several
genes (``"780 /// 100616237"``) are marked ``ambiguous`` and later dropped and counted.
Collapsing probes to genes is :mod:`geneinfer.genes.mapping`.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from geneinfer.errors import DataUnavailableError, InputFormatError
from geneinfer.genes.annotation import clean_entrez, clean_symbol, find_column, looks_like
from geneinfer.io.annotation import read_probe_table
from geneinfer.public_data import locate

log = logging.getLogger(__name__)

#: Registry entries that hold a platform's probe table, searched in this order
PLATFORM_SOURCES = ("geo_platform", "geo_platform_annot")
_PLATFORM_RE = re.compile(r"GPL[0-9]+", flags=re.ASCII)
#: maps gene symbols to Entrez ids (None where unknown), e.g. a GeneIdMap look-up
SymbolMap = Callable[[pd.Series], pd.Series]


def is_platform_name(text: object) -> bool:
    """Whether ``text`` is a GEO platform accession (``GPL570``), not a file."""
    return isinstance(text, str) and bool(_PLATFORM_RE.fullmatch(text.strip().upper()))


def read_platform_annotation(path: str | os.PathLike[str], *,
                             symbols_to_entrez: SymbolMap | None = None) -> pd.DataFrame:
    """A probe annotation table: index = probe id, columns ``symbol``, ``entrez``,
    ``ambiguous`` (several genes).

    Reads every layout :func:`geneinfer.io.annotation.read_probe_table` knows. A file with
    gene symbols but no Entrez column (a ``.chip`` file, two columns probe -> symbol) needs
    ``symbols_to_entrez`` (e.g. ``lambda s: load_id_map().lookup(s, src="symbol",
    dst="entrez")``); symbols it cannot map leave the probe without a gene.
    """
    table = read_probe_table(path)
    fmt = table.attrs.get("format", "table")
    sym_col, ent_col = _gene_columns(table)
    if sym_col is None and ent_col is None:
        raise InputFormatError(
            path, f"no gene symbol or Entrez id column among {', '.join(map(str, table.columns))}",
            expected="columns like Gene Symbol / ENTREZ_GENE_ID / Entrez Gene",
        )
    symbol = (clean_symbol(table[sym_col]) if sym_col is not None
              else pd.Series([None] * len(table), dtype=object))
    if ent_col is not None:
        entrez, ambiguous = clean_entrez(table[ent_col])
    else:
        if symbols_to_entrez is None:
            raise InputFormatError(
                path, "gene symbols but no Entrez ids",
                expected="an Entrez id column, or symbols with a gene table to map them "
                "(the data folder's genes/ tables)",
            )
        entrez = pd.Series(symbols_to_entrez(symbol.fillna("")).to_numpy(), dtype=object)
        entrez = entrez.where(symbol.notna().to_numpy(), None)
        ambiguous = _several(table[sym_col])
    out = pd.DataFrame({"symbol": symbol.to_numpy(), "entrez": entrez.to_numpy(),
                        "ambiguous": np.asarray(ambiguous, dtype=bool)},
                       index=pd.Index(table.index, name="probe"))
    out.attrs["format"] = fmt
    log.info("%s: %s annotation of %d probes (%d with one Entrez gene)", path, fmt, len(out),
             int(out["entrez"].notna().sum()))
    return out


def _gene_columns(table: pd.DataFrame) -> tuple[str | None, str | None]:
    """(symbol column, Entrez column) of an annotation table; a two-column file's ``gene``
    column is whichever its content is."""
    if list(table.columns) == ["gene"]:
        if looks_like(table["gene"], "entrez"):
            return None, "gene"
        return "gene", None
    return find_column(table, "symbol"), find_column(table, "entrez")


def _several(texts: pd.Series) -> np.ndarray:
    """Cells naming several different genes (``"A /// B"``)."""
    text = texts.astype(str)
    multi = text.str.contains(r"//|;|\|", regex=True).to_numpy()
    return multi & clean_symbol(texts).isna().to_numpy()


@functools.lru_cache(maxsize=4)
def _cached_annotation(path: str) -> pd.DataFrame:
    return read_platform_annotation(path)


def platform_annotation_path(platform: str, *, data_dir: str | os.PathLike[str] | None = None
                             ) -> Path | None:
    """The local probe table of a GEO platform (data folder, then cache; GPL96 is
    embedded), or None when it has not been fetched."""
    acc = platform.strip().upper()
    if acc == "GPL96":
        return locate("gpl96_annotation", data_dir=data_dir)
    for name in PLATFORM_SOURCES:
        path = locate(name, accession=acc, data_dir=data_dir)
        if path is not None:
            return path
    return None


def load_probe_annotation(
    platform: str = "GPL96", *, data_dir: str | os.PathLike[str] | None = None
) -> pd.DataFrame:
    """The probe annotation of a platform (``GPL96`` is embedded; others from the data
    folder or cache, see ``geneinfer data fetch geo_platform --accession GPLxxx``)."""
    path = platform_annotation_path(platform, data_dir=data_dir)
    if path is None:
        acc = platform.strip().upper()
        raise DataUnavailableError(
            f"no annotation for platform {acc}: run `geneinfer data fetch geo_platform "
            f"--accession {acc}` (GEO's full platform table), or give the annotation file "
            "(--annotation FILE)"
        )
    return _cached_annotation(str(path)).copy()
