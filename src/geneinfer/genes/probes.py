"""Microarray probes -> genes: platform annotations and probe collapsing.

HG-U133A (GPL96) probe sets are collapsed to Entrez genes by the NaN-aware mean of a gene's
probes, as in the D-GEX study. Probes without a gene or annotated to several genes
(``"1 /// 2"``) are dropped and counted in a :class:`ProbeCollapseReport`.
"""

from __future__ import annotations

import functools
import gzip
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from geneinfer.errors import DataUnavailableError, GeneinferError, InputFormatError
from geneinfer.expression import ExpressionData
from geneinfer.genes.ids import (
    _norm,
    clean_entrez,
    clean_symbol,
    find_column,
    standard_annotation,
)
from geneinfer.public_data import locate

log = logging.getLogger(__name__)

_ID_ALIASES = ("id", "id_ref", "probe", "probe_id", "probeset_id", "probe_set_id", "rid")
_BLOCK_ROWS = 2048  # rows aggregated at once: bounds float64 temporaries on big compendia


def _open_text(path: Path) -> io.TextIOBase:
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def read_platform_annotation(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A probe annotation table: index = probe id, columns ``symbol``, ``entrez``, ``ambiguous``.

    Reads a plain TSV (e.g. ``GPL96_annotation.tsv.gz``: ``ID``, ``Gene Symbol``,
    ``ENTREZ_GENE_ID``), a GEO ``.annot.gz`` file or a SOFT platform table (the part between
    ``!platform_table_begin`` and ``!platform_table_end``; ``Gene symbol`` / ``Gene ID``).
    """
    path = Path(path)
    with _open_text(path) as fh:
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
    by_norm = {_norm(c): c for c in table.columns}
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


def aggregate_columns(values: np.ndarray, codes: np.ndarray, n_groups: int, *,
                      how: str = "mean") -> np.ndarray:
    """Combine columns of ``values`` that share a group code: NaN-aware ``mean`` or ``sum``.

    A group whose values in a row are all NaN (or that has no column) gives NaN, never 0.
    Returns float32 ``(n_rows, n_groups)``; sums run in float64 so a one-column group keeps
    its exact value.
    """
    if how not in ("mean", "sum"):
        raise GeneinferError(f"unknown aggregation {how!r}; expected 'mean' or 'sum'")
    codes = np.asarray(codes, dtype=np.int64)
    n_cols = len(codes)
    # groups x columns membership: one sparse product sums each group's columns (C speed).
    member = sp.csr_matrix((np.ones(n_cols), (codes, np.arange(n_cols))),
                           shape=(n_groups, n_cols))
    out = np.full((values.shape[0], n_groups), np.nan, dtype=np.float32)
    for start in range(0, values.shape[0], _BLOCK_ROWS):
        # columns x rows, C-contiguous float64: what the CSR x dense kernel reads fastest
        block = np.ascontiguousarray(values[start:start + _BLOCK_ROWS].T, dtype=np.float64)
        missing = np.isnan(block)
        block[missing] = 0.0
        sums = member @ block
        counts = member @ (~missing).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            res = sums / counts if how == "mean" else np.where(counts > 0, sums, np.nan)
        out[start:start + _BLOCK_ROWS] = res.T
    return out


@dataclass
class ProbeCollapseReport:
    """Counts from :func:`collapse_probes`."""

    n_probes: int
    n_genes: int
    n_probes_used: int
    n_no_gene: int
    n_ambiguous: int
    n_not_annotated: int
    annotation: str

    def summary(self) -> str:
        return (
            f"collapsed {self.n_probes_used} of {self.n_probes} probes to {self.n_genes} Entrez "
            f"genes using the {self.annotation}; dropped {self.n_no_gene} probes with no gene, "
            f"{self.n_ambiguous} mapped to several genes, {self.n_not_annotated} not annotated"
        )


def _annotation_for(data: ExpressionData, annotation: pd.DataFrame | str | None
                    ) -> tuple[pd.DataFrame, str]:
    """Per-probe ``symbol``/``entrez``/``ambiguous`` aligned to ``data.gene_ids``."""
    if isinstance(annotation, str):
        ann, name = load_probe_annotation(annotation), f"{annotation} annotation"
    elif annotation is not None:
        ann, name = annotation.copy(), "given annotation"
        if "entrez" not in ann:
            raise GeneinferError("probe annotation needs an 'entrez' column (index = probe ids)")
        if "ambiguous" not in ann:
            ent, amb = clean_entrez(ann["entrez"])
            ann["entrez"], ann["ambiguous"] = ent.to_numpy(), amb.to_numpy()
    else:
        own = standard_annotation(data)
        ent_col = find_column(data.genes, "entrez")
        if ent_col is not None:
            _, amb = clean_entrez(data.genes[ent_col])
            own["ambiguous"] = amb.to_numpy()
            return own, f"'{ent_col}' column of the input"
        ann, name = load_probe_annotation("GPL96"), "GPL96 annotation"
    aligned = ann.reindex(pd.Index(data.gene_ids))
    if aligned["entrez"].notna().sum() == 0:
        raise GeneinferError(
            f"none of the {data.n_genes} probe ids of {data.source or 'the data'} is in the "
            f"{name} (e.g. {', '.join(data.gene_ids[:3])}); pass annotation= for this platform"
        )
    aligned["annotated"] = pd.Index(data.gene_ids).isin(ann.index)
    return aligned, name


def collapse_probes(
    data: ExpressionData,
    *,
    annotation: pd.DataFrame | str | None = None,
    return_report: bool = False,
) -> ExpressionData | tuple[ExpressionData, ProbeCollapseReport]:
    """Collapse probe columns to Entrez genes by the NaN-aware mean of each gene's probes.

    Parameters
    ----------
    annotation
        ``None``: the input's own Entrez column (``pr_gene_id``, ``ENTREZ_GENE_ID``...) if it
        has one, else the embedded GPL96 (HG-U133A) table. A platform name such as
        ``"GPL96"``, or a DataFrame indexed by probe id with ``entrez`` (and ``symbol``).
    return_report
        Also return a :class:`ProbeCollapseReport` (it is logged at INFO level either way).

    Returns
    -------
    ExpressionData
        Genes in order of their first probe; gene metadata ``symbol``, ``entrez``,
        ``n_probes``; ``gene_id_kind="entrez"``; same scale and samples.
    """
    if data.gene_id_kind == "entrez":
        report = ProbeCollapseReport(data.n_genes, data.n_genes, data.n_genes, 0, 0, 0, "ids")
        return (data, report) if return_report else data
    ann, name = _annotation_for(data, annotation)
    entrez = ann["entrez"]
    ambiguous = ann["ambiguous"].fillna(False).astype(bool)
    annotated = ann["annotated"] if "annotated" in ann else pd.Series(True, index=ann.index)
    use = entrez.notna().to_numpy()
    first = pd.Index(entrez[use].astype(str)).drop_duplicates()
    codes = first.get_indexer(entrez[use].astype(str))
    values = aggregate_columns(data.values[:, use], codes, len(first), how="mean")
    n_probes = np.bincount(codes, minlength=len(first))
    symbols = pd.Series(ann["symbol"][use].to_numpy()).groupby(codes).first()
    genes = pd.DataFrame(
        {"symbol": symbols.reindex(range(len(first))).to_numpy(), "entrez": first.to_numpy(),
         "n_probes": n_probes},
        index=first,
    )
    out = ExpressionData(values=values, gene_ids=first, sample_ids=data.sample_ids, genes=genes,
                         samples=data.samples, scale=data.scale, gene_id_kind="entrez",
                         source=data.source)
    not_annotated = int((~annotated.to_numpy(dtype=bool)).sum())
    report = ProbeCollapseReport(
        n_probes=data.n_genes, n_genes=len(first), n_probes_used=int(use.sum()),
        n_no_gene=int((~use & ~ambiguous.to_numpy() & annotated.to_numpy(dtype=bool)).sum()),
        n_ambiguous=int(ambiguous.sum()), n_not_annotated=not_annotated, annotation=name,
    )
    log.info("%s: %s", data.source or "data", report.summary())
    return (out, report) if return_report else out
