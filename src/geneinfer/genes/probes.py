"""Microarray platform annotations: probe -> gene symbol and Entrez id.

``GPL96`` (Affymetrix HG-U133A) ships with geneinfer; other platforms come from the data
folder, the cache or GEO (``geneinfer data fetch geo_platform_annot --accession GPLxxx``).
Collapsing probes to genes is :mod:`geneinfer.genes.mapping`.
"""

from __future__ import annotations

import functools
import io
import logging
import os
from pathlib import Path

import pandas as pd

from geneinfer.errors import DataUnavailableError, InputFormatError
from geneinfer.genes.annotation import clean_entrez, clean_symbol, find_column, normalise_name
from geneinfer.io import open_text, translate_errors
from geneinfer.public_data import locate

log = logging.getLogger(__name__)

_ID_ALIASES = ("id", "id_ref", "probe", "probe_id", "probeset_id", "probe_set_id", "rid")
_BLOCK_ROWS = 2048  # rows aggregated at once: bounds float64 temporaries on big compendia


def read_platform_annotation(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A probe annotation table: index = probe id, columns ``symbol``, ``entrez``, ``ambiguous``.

    Reads a plain TSV (e.g. ``GPL96_annotation.tsv.gz``: ``ID``, ``Gene Symbol``,
    ``ENTREZ_GENE_ID``), a GEO ``.annot.gz`` file or a SOFT platform table (the part between
    ``!platform_table_begin`` and ``!platform_table_end``; ``Gene symbol`` / ``Gene ID``).
    """
    path = Path(path)
    with translate_errors(path, what="platform annotation"), open_text(path) as fh:
        lines = fh.read().splitlines()
    start = next((i + 1 for i, ln in enumerate(lines) if ln.startswith("!platform_table_begin")),
                 None)
    if start is None:
        start = next((i for i, ln in enumerate(lines) if ln and ln[0] not in "#!^"), 0)
        end = len(lines)
    else:
        end = next((i for i in range(start, len(lines))
                    if lines[i].startswith("!platform_table_end")), len(lines))
    try:
        table = pd.read_csv(io.StringIO("\n".join(lines[start:end])), sep="\t", dtype=str,
                            keep_default_na=False, na_values=[""])
    except (ValueError, pd.errors.ParserError) as exc:
        raise InputFormatError(path, f"cannot read annotation table: {exc}",
                               where=start + 1) from exc
    by_norm = {normalise_name(c): c for c in table.columns}
    id_col = next((by_norm[a] for a in _ID_ALIASES if a in by_norm), None)
    sym_col = find_column(table, "symbol")
    ent_col = find_column(table, "entrez")
    if id_col is None or ent_col is None:
        raise InputFormatError(path, "no probe id or Entrez id column", where=start + 1,
                               expected="columns like ID, Gene Symbol, ENTREZ_GENE_ID")
    entrez, ambiguous = clean_entrez(table[ent_col])
    symbol = clean_symbol(table[sym_col]) if sym_col else pd.Series([None] * len(table))
    out = pd.DataFrame({"symbol": symbol.to_numpy(), "entrez": entrez.to_numpy(),
                        "ambiguous": ambiguous.to_numpy()},
                       index=pd.Index(table[id_col].astype(str).str.strip(), name="probe"))
    return out[~out.index.duplicated()]


@functools.lru_cache(maxsize=4)
def _cached_annotation(path: str) -> pd.DataFrame:
    return read_platform_annotation(path)


def load_probe_annotation(
    platform: str = "GPL96", *, data_dir: str | os.PathLike[str] | None = None
) -> pd.DataFrame:
    """The probe annotation of a platform (``GPL96`` is embedded; others via the data folder or
    cache, see ``geneinfer data fetch geo_platform_annot --accession GPLxxx``)."""
    name, acc = ("gpl96_annotation", None) if platform.upper() == "GPL96" else (
        "geo_platform_annot", platform.upper())
    path = locate(name, accession=acc, data_dir=data_dir)
    if path is None:
        raise DataUnavailableError(
            f"no annotation for platform {platform}: run `geneinfer data fetch "
            f"{name}{' --accession ' + acc if acc else ''}` or pass annotation="
        )
    return _cached_annotation(str(path)).copy()
