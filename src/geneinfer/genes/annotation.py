"""Gene annotation columns: recognise them, whatever a file calls them, and clean their ids.

Files name their annotation columns in many ways (``pr_gene_id`` in CMap GCT files,
``ENTREZ_GENE_ID`` / ``Gene Symbol`` in GEO platform tables, ``gene_id`` in count tables);
:func:`find_column` recognises them by name and confirms them by content, and the cleaners
turn their cells into clean ids (missing markers and multi-gene entries become ``None``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

from geneinfer.expression import ExpressionData
from geneinfer.idkinds import ENTREZ_RE, detect_id_kind
from geneinfer.io import MISSING_ID_TEXTS

KINDS = ("symbol", "entrez", "ensembl")

# Normalised column names (lower case, runs of space/_/./- as "_") per identity kind, most
# specific first: a file's own columns (pr_gene_id, ENTREZ_GENE_ID) win over derived generic
# ones (entrez, symbol) because only they still show multi-gene entries ("1 /// 2"). Columns
# that several conventions use for different ids (gene_id, id, name) are checked by content.
SYMBOL_ALIASES = (
    "pr_gene_symbol", "gene_symbol", "genesymbol", "hgnc_symbol", "symbol", "gene_name",
    "symbols", "gene", "description",
)
ENTREZ_ALIASES = (
    "pr_gene_id", "entrez_gene_id", "entrezgeneid", "entrez_gene", "ncbi_gene_id", "gene_id",
    "geneid", "entrez_id", "entrezid", "entrez",
)
ENSEMBL_ALIASES = (
    "ensembl_gene_id", "ensembl_id", "ensembl_gene", "ensembl", "ensg", "gene_id", "name", "id",
)

# the start of an Ensembl gene id (a cleaned id drops the version that ENSEMBL_RE allows)
_ENSEMBL_RE = re.compile(r"^ENS[A-Z]*G\d{6,}")
_MULTI = re.compile(r"\s*///\s*|\s*//\s*|\s*;\s*|\s*\|\s*")


def normalise_name(name: object) -> str:
    """A column name in lower case with runs of space, ``_``, ``.`` and ``-`` as ``_``."""
    return re.sub(r"[\s_.\-]+", "_", str(name).strip().lower())


def _split_multi(value: str) -> list[str]:
    return [p for p in _MULTI.split(value) if p]


def _texts(values: Iterable[object]) -> tuple[pd.Series, pd.Series]:
    """Stripped strings of ``values`` and a mask of missing markers (NaN, ``-666``, ``NA``)."""
    s = pd.Series(list(values) if not isinstance(values, pd.Series) else values.to_numpy(),
                  dtype=object)
    text = s.astype(str).str.strip()
    missing = s.isna().to_numpy() | text.str.lower().isin(MISSING_ID_TEXTS).to_numpy()
    return text, pd.Series(missing)


def _entrez_one(text: str) -> tuple[str | None, bool]:
    parts = {re.sub(r"\.0$", "", p) for p in _split_multi(text)}
    parts = {p for p in parts if p.lower() not in MISSING_ID_TEXTS}
    if len(parts) == 1 and ENTREZ_RE.match(next(iter(parts))):
        return next(iter(parts)), False
    return None, len(parts) > 1


def clean_entrez(values: Iterable[object]) -> tuple[pd.Series, pd.Series]:
    """Entrez ids as clean strings.

    Returns ``(entrez, ambiguous)``: ``"780.0"`` becomes ``"780"``; missing markers
    (``-666``, ``""``, ``NA``) become ``None``; several different ids (``"1 /// 2"``) become
    ``None`` with ``ambiguous`` True.
    """
    text, missing = _texts(values)
    out = np.full(len(text), None, dtype=object)
    amb = np.zeros(len(text), dtype=bool)
    simple = text.str.fullmatch(r"\d+(?:\.0)?").to_numpy() & ~missing.to_numpy()
    out[simple] = text[simple].str.replace(r"\.0$", "", regex=True).to_numpy()
    # Only the rare multi-gene / odd entries go through the slow per-item path.
    raw = text.to_numpy()
    for i in np.flatnonzero(~simple & ~missing.to_numpy()):
        out[i], amb[i] = _entrez_one(raw[i])
    return pd.Series(out, dtype=object), pd.Series(amb, dtype=bool)


def clean_symbol(values: Iterable[object]) -> pd.Series:
    """Gene symbols, ``None`` for missing or multi-gene (``"A /// B"``) entries."""
    text, missing = _texts(values)
    out = np.full(len(text), None, dtype=object)
    multi = text.str.contains(r"//|;|\|", regex=True).to_numpy()
    simple = ~missing.to_numpy() & ~multi
    out[simple] = text[simple].to_numpy()
    raw = text.to_numpy()
    for i in np.flatnonzero(multi & ~missing.to_numpy()):
        parts = [p for p in _split_multi(raw[i]) if p.lower() not in MISSING_ID_TEXTS]
        out[i] = parts[0] if len(set(parts)) == 1 else None
    return pd.Series(out, dtype=object)


def clean_ensembl(values: Iterable[object]) -> pd.Series:
    """Ensembl gene ids without their version (``ENSG00000000419.12`` -> ``ENSG00000000419``)."""
    text, missing = _texts(values)
    ok = text.str.match(_ENSEMBL_RE).to_numpy() & ~missing.to_numpy()
    out = pd.Series([None] * len(text), dtype=object)
    out[ok] = text[ok].str.replace(r"\.\d+", "", n=1, regex=True).to_numpy()
    return out


#: ``kind -> cleaner`` returning clean ids (``None`` where missing or ambiguous).
CLEANERS = {
    "symbol": clean_symbol,
    "entrez": lambda values: clean_entrez(values)[0],
    "ensembl": clean_ensembl,
}


def looks_like(values: pd.Series, kind: str) -> bool:
    """Whether most non-missing values of a column are ids of ``kind``."""
    vals = values.dropna().astype(str).str.strip()
    vals = vals[~vals.str.lower().isin(MISSING_ID_TEXTS)]
    if len(vals) > 5000:  # a spread-out sample decides as well as the whole column
        vals = vals.iloc[:: len(vals) // 5000 + 1]
    if vals.empty:
        return False
    if kind == "entrez":
        first = vals.map(lambda s: re.sub(r"\.0$", "", _split_multi(s)[0]) if s else s)
        return bool(first.str.match(ENTREZ_RE).mean() >= 0.9)
    if kind == "ensembl":
        return bool(vals.str.match(_ENSEMBL_RE).mean() >= 0.9)
    # symbols: short, no spaces, not numbers, not Ensembl ids
    ok = ~vals.str.contains(r"\s", regex=True) | vals.str.contains("///", regex=False)
    ok &= ~vals.str.match(ENTREZ_RE) & ~vals.str.match(_ENSEMBL_RE)
    return bool(ok.mean() >= 0.9)


def find_column(meta: pd.DataFrame, kind: str) -> str | None:
    """The metadata column holding ``kind`` ids (by name alias, confirmed by content)."""
    aliases = {"symbol": SYMBOL_ALIASES, "entrez": ENTREZ_ALIASES, "ensembl": ENSEMBL_ALIASES}[kind]
    by_norm = {normalise_name(c): c for c in meta.columns}
    for alias in aliases:
        col = by_norm.get(alias)
        if col is not None and looks_like(meta[col], kind):
            return col
    return None


def annotate(gene_ids: pd.Index, genes: pd.DataFrame, kind: str) -> pd.DataFrame:
    """``symbol``, ``entrez`` and ``ensembl`` of each gene (``None`` where unknown).

    Uses the gene ids themselves when ``kind`` says what they are (or they clearly are
    Entrez/Ensembl ids), and otherwise recognised metadata columns such as
    ``pr_gene_symbol`` / ``pr_gene_id`` (CMap GCT), ``Gene Symbol`` / ``ENTREZ_GENE_ID`` (GEO
    platform tables) or ``gene_id`` (count tables). ``-666`` and multi-gene entries
    (``"1 /// 2"``) count as unknown. Index: ``gene_ids``.
    """
    if kind == "unknown":
        kind = detect_id_kind(gene_ids)
    ann = pd.DataFrame(index=gene_ids, columns=list(KINDS), dtype=object)
    for k in KINDS:
        if kind == k:
            ann[k] = CLEANERS[k](gene_ids.to_numpy()).to_numpy()
            continue
        col = find_column(genes, k)
        if col is not None:
            ann[k] = CLEANERS[k](genes[col].to_numpy()).to_numpy()
    return ann.astype(object).where(ann.notna(), None)


def standard_annotation(data: ExpressionData) -> pd.DataFrame:
    """:func:`annotate` for an :class:`~geneinfer.expression.ExpressionData`."""
    return annotate(data.gene_ids, data.genes, data.gene_id_kind)
