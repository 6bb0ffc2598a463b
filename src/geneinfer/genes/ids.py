"""Gene identities: recognise annotation columns, clean ids, and map Ensembl/symbols/Entrez.

The canonical gene id of geneinfer (microarray and L1000 data) is the **Entrez id as a
string**. Files name their annotation columns in many ways (``pr_gene_id`` in CMap GCT files,
``ENTREZ_GENE_ID`` / ``Gene Symbol`` in GEO platform tables, ``gene_id`` in count tables);
:func:`standard_annotation` finds them. :class:`GeneIdMap` converts between symbols, Entrez and
Ensembl ids; :func:`load_id_map` builds one from whatever gene tables are available offline
(D-GEX maps, LINCS gene table, GPL96 annotation) or from the HGNC complete set.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from geneinfer.errors import ConfigError, DataUnavailableError, GeneinferError, InputFormatError
from geneinfer.expression import ExpressionData
from geneinfer.idkinds import ENTREZ_RE, detect_id_kind, id_kind_of
from geneinfer.public_data import fetch, locate

log = logging.getLogger(__name__)

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

_MISSING = {"", "na", "nan", "none", "null", "-666", "---", "-", "n/a", "#n/a"}
# the start of an Ensembl gene id (a cleaned id drops the version that ENSEMBL_RE allows)
_ENSEMBL_RE = re.compile(r"^ENS[A-Z]*G\d{6,}")
_MULTI = re.compile(r"\s*///\s*|\s*//\s*|\s*;\s*|\s*\|\s*")


def _norm(name: object) -> str:
    return re.sub(r"[\s_.\-]+", "_", str(name).strip().lower())


def _split_multi(value: str) -> list[str]:
    return [p for p in _MULTI.split(value) if p]


def _texts(values: Iterable[object]) -> tuple[pd.Series, pd.Series]:
    """Stripped strings of ``values`` and a mask of missing markers (NaN, ``-666``, ``NA``)."""
    s = pd.Series(list(values) if not isinstance(values, pd.Series) else values.to_numpy(),
                  dtype=object)
    text = s.astype(str).str.strip()
    missing = s.isna().to_numpy() | text.str.lower().isin(_MISSING).to_numpy()
    return text, pd.Series(missing)


def _entrez_one(text: str) -> tuple[str | None, bool]:
    parts = {re.sub(r"\.0$", "", p) for p in _split_multi(text)}
    parts = {p for p in parts if p.lower() not in _MISSING}
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
        parts = [p for p in _split_multi(raw[i]) if p.lower() not in _MISSING]
        out[i] = parts[0] if len(set(parts)) == 1 else None
    return pd.Series(out, dtype=object)


def clean_ensembl(values: Iterable[object]) -> pd.Series:
    """Ensembl gene ids without their version (``ENSG00000000419.12`` -> ``ENSG00000000419``)."""
    text, missing = _texts(values)
    ok = text.str.match(_ENSEMBL_RE).to_numpy() & ~missing.to_numpy()
    out = pd.Series([None] * len(text), dtype=object)
    out[ok] = text[ok].str.replace(r"\.\d+", "", n=1, regex=True).to_numpy()
    return out


def _looks_like(values: pd.Series, kind: str) -> bool:
    """Whether most non-missing values of a column are ids of ``kind``."""
    vals = values.dropna().astype(str).str.strip()
    vals = vals[~vals.str.lower().isin(_MISSING)]
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
    by_norm = {_norm(c): c for c in meta.columns}
    for alias in aliases:
        col = by_norm.get(alias)
        if col is not None and _looks_like(meta[col], kind):
            return col
    return None


def standard_annotation(data: ExpressionData) -> pd.DataFrame:
    """``symbol``, ``entrez`` and ``ensembl`` of each gene (``None`` where unknown).

    Uses the gene ids themselves when ``data.gene_id_kind`` says what they are (or they
    clearly are Entrez/Ensembl ids), and otherwise recognised metadata columns such as
    ``pr_gene_symbol`` / ``pr_gene_id`` (CMap GCT), ``Gene Symbol`` / ``ENTREZ_GENE_ID`` (GEO
    platform tables) or ``gene_id`` (count tables). ``-666`` and multi-gene entries
    (``"1 /// 2"``) count as unknown. Index: ``data.gene_ids``.
    """
    ids = pd.Series(data.gene_ids, index=data.gene_ids)
    kind = data.gene_id_kind
    if kind == "unknown":
        kind = detect_id_kind(data.gene_ids)
    ann = pd.DataFrame(index=data.gene_ids, columns=list(KINDS), dtype=object)
    cleaners = {"symbol": clean_symbol, "entrez": lambda v: clean_entrez(v)[0],
                "ensembl": clean_ensembl}
    for k in KINDS:
        if kind == k:
            ann[k] = cleaners[k](ids.to_numpy()).to_numpy()
            continue
        col = find_column(data.genes, k)
        if col is not None:
            ann[k] = cleaners[k](data.genes[col].to_numpy()).to_numpy()
    return ann.astype(object).where(ann.notna(), None)


# ---------------------------------------------------------------------------- id maps
@dataclass
class MappingReport:
    """What :func:`map_gene_ids` did: counts and the ids it could not map."""

    source_kind: str
    target_kind: str
    n_input: int
    n_mapped: int
    n_output: int
    unmapped: list[str] = field(default_factory=list)

    @property
    def n_unmapped(self) -> int:
        return len(self.unmapped)

    @property
    def n_merged(self) -> int:
        """Input genes folded into another one because they map to the same id."""
        return self.n_mapped - self.n_output

    def summary(self) -> str:
        return (
            f"mapped {self.n_mapped} of {self.n_input} {self.source_kind} ids to "
            f"{self.n_output} {self.target_kind} ids ({self.n_unmapped} unmapped, "
            f"{self.n_merged} merged into another gene)"
        )


class GeneIdMap:
    """A table of (symbol, Entrez, Ensembl) triples for converting gene ids.

    Rows may be partial (e.g. the LINCS table has no Ensembl ids). Rows carry a ``rank``
    (0 = most trusted source); a look-up uses the best-ranked rows that know the id, and
    an id with several different answers at that rank is ambiguous and left unmapped.

    Parameters
    ----------
    table
        Columns ``symbol``, ``entrez``, ``ensembl`` (``None`` where unknown), optional ``rank``.
    sources
        Names of the gene tables it was built from (for messages).
    """

    def __init__(self, table: pd.DataFrame, *, sources: Sequence[str] = (),
                 clean: bool = True) -> None:
        table = table.reindex(columns=[*KINDS, "rank"]).copy()
        table["rank"] = table["rank"].fillna(0).astype(int)
        if clean:
            table["symbol"] = clean_symbol(table["symbol"]).to_numpy()
            table["entrez"] = clean_entrez(table["entrez"])[0].to_numpy()
            table["ensembl"] = clean_ensembl(table["ensembl"]).to_numpy()
        self.table = table.reset_index(drop=True)
        self.sources = list(sources)
        self._cache: dict[tuple[str, str], dict[str, str]] = {}

    def __repr__(self) -> str:
        return f"GeneIdMap({len(self.table)} rows from {', '.join(self.sources) or 'a table'})"

    def __len__(self) -> int:
        return len(self.table)

    @staticmethod
    def _key(ids: pd.Series, kind: str) -> pd.Series:
        ids = ids.astype(str).str.strip()
        if kind == "symbol":
            return ids.str.upper()
        if kind == "ensembl":
            return ids.str.replace(r"\.\d+", "", n=1, regex=True)
        return ids.str.replace(r"\.0$", "", regex=True)

    def _mapping(self, src: str, dst: str) -> dict[str, str]:
        if (src, dst) not in self._cache:
            t = self.table[[src, dst, "rank"]].dropna(subset=[src, dst]).copy()
            t["key"] = self._key(t[src], src)
            t = t[t["rank"] == t.groupby("key")["rank"].transform("min")]
            t = t.drop_duplicates(["key", dst])
            n = t.groupby("key")[dst].transform("size")
            self._cache[(src, dst)] = dict(zip(t.loc[n == 1, "key"], t.loc[n == 1, dst]))
        return self._cache[(src, dst)]

    def lookup(self, ids: Iterable[str], *, src: str, dst: str) -> pd.Series:
        """``dst`` ids for ``ids`` of kind ``src`` (``None`` where unknown or ambiguous)."""
        for k in (src, dst):
            if k not in KINDS:
                raise ConfigError(f"unknown gene id kind {k!r}; expected one of {KINDS}")
        ids = pd.Series(list(ids), dtype=object).astype(str)
        if src == dst:
            return pd.Series(ids.to_numpy(), index=ids.to_numpy(), dtype=object)
        mapping = self._mapping(src, dst)
        keys = self._key(ids, src)
        out = keys.map(mapping)
        return pd.Series(out.to_numpy(), index=ids.to_numpy(), dtype=object).where(
            lambda s: s.notna(), None
        )

    def resolve(self, ids: Iterable[str], *, to: str = "entrez") -> pd.Series:
        """Convert ids of mixed kinds (each guessed with :func:`id_kind_of`) to ``to``.

        Entrez ids map to themselves when ``to="entrez"`` even if this map lacks them.
        """
        ids = [str(i).strip() for i in ids]
        # ids that are neither Entrez nor Ensembl are looked up as symbols
        kinds = [k if k in ("entrez", "ensembl") else "symbol" for k in map(id_kind_of, ids)]
        out = pd.Series([None] * len(ids), index=ids, dtype=object)
        for kind in ("entrez", "ensembl", "symbol"):
            pos = [j for j, k in enumerate(kinds) if k == kind]
            if not pos:
                continue
            sel = [ids[j] for j in pos]
            if kind == to:
                vals = self._key(pd.Series(sel, dtype=object), kind).tolist()
            else:
                vals = self.lookup(sel, src=kind, dst=to).tolist()
            out.iloc[pos] = vals
        return out

    # ------------------------------------------------------------------ builders
    @classmethod
    def combine(cls, maps: Sequence[GeneIdMap]) -> GeneIdMap:
        """One map from several, earlier maps taking precedence."""
        parts = []
        for rank, m in enumerate(maps):
            t = m.table.copy()
            t["rank"] = rank
            parts.append(t)
        table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=KINDS)
        return cls(table, sources=[s for m in maps for s in m.sources], clean=False)

    @classmethod
    def from_hgnc(cls, path: str | os.PathLike[str]) -> GeneIdMap:
        """From the HGNC complete set (``symbol``, ``entrez_id``, ``ensembl_gene_id``)."""
        t = _read_table(path, usecols=None)
        need = {"symbol", "entrez_id", "ensembl_gene_id"}
        if not need <= set(t.columns):
            raise InputFormatError(path, "not an HGNC complete-set table", where=1,
                                   expected=f"columns {sorted(need)}")
        table = t.rename(columns={"entrez_id": "entrez", "ensembl_gene_id": "ensembl"})
        return cls(table[list(KINDS)], sources=[f"HGNC ({Path(path).name})"])

    @classmethod
    def from_lincs(cls, path: str | os.PathLike[str]) -> GeneIdMap:
        """From the LINCS gene table (``pr_gene_id``, ``pr_gene_symbol``)."""
        t = read_lincs_gene_info(path)
        table = pd.DataFrame({"symbol": t["pr_gene_symbol"], "entrez": t["pr_gene_id"]})
        return cls(table, sources=[f"LINCS gene table ({Path(path).name})"])

    @classmethod
    def from_probe_annotation(cls, annotation: pd.DataFrame, *, name: str = "GPL96") -> GeneIdMap:
        """From a probe annotation (columns ``symbol``, ``entrez``); multi-gene probes skipped."""
        table = annotation.loc[annotation["entrez"].notna(), ["symbol", "entrez"]]
        return cls(table.drop_duplicates(), sources=[f"{name} annotation"])

    @classmethod
    def from_dgex(cls, dgex: pd.DataFrame) -> GeneIdMap:
        """From D-GEX map rows already converted with :func:`dgex_entrez`."""
        return cls(dgex[list(KINDS)], sources=["D-GEX gene maps"])


def _read_table(path: str | os.PathLike[str], *, usecols: Sequence[str] | None) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep="\t", dtype=str, usecols=usecols, keep_default_na=False,
                           na_values=[""], comment=None)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise InputFormatError(path, f"cannot read table: {exc}") from exc


def read_lincs_gene_info(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The LINCS GSE92742 gene table (``.txt`` or ``.txt.gz``), ids as strings."""
    t = _read_table(path, usecols=None)
    need = ["pr_gene_id", "pr_gene_symbol", "pr_is_lm"]
    missing = [c for c in need if c not in t.columns]
    if missing:
        raise InputFormatError(path, f"LINCS gene table lacks columns {missing}", where=1,
                               expected="pr_gene_id, pr_gene_symbol, pr_is_lm, pr_is_bing")
    t["pr_gene_id"] = clean_entrez(t["pr_gene_id"])[0].to_numpy()
    bad = t.index[t["pr_gene_id"].isna()]
    if len(bad):
        raise InputFormatError(path, "gene id is not an Entrez id", where=int(bad[0]) + 2)
    return t


def read_dgex_map(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A D-GEX gene map: ``symbol<TAB>Ensembl<TAB>probe[,probe]`` lines.

    Returns columns ``symbol``, ``ensembl``, ``probes`` (list of HG-U133A probe ids).
    """
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3:
                raise InputFormatError(path, f"line has {len(parts)} fields", where=lineno,
                                       expected="3 tab-separated fields: symbol, Ensembl, probes")
            sym, ens, probes = (p.strip() for p in parts)
            rows.append((sym, ens, [p for p in probes.split(",") if p]))
    return pd.DataFrame(rows, columns=["symbol", "ensembl", "probes"])


def dgex_entrez(
    dgex: pd.DataFrame, annotation: pd.DataFrame, *, symbol_map: GeneIdMap | None = None
) -> pd.DataFrame:
    """Add an ``entrez`` column to D-GEX map rows.

    The gene's HG-U133A probes are looked up in the probe annotation; when they agree on one
    Entrez id that is used, otherwise the symbol is looked up in ``symbol_map`` (e.g. the
    LINCS table). Genes that still have no id keep ``entrez = None``.
    """
    probe_entrez = annotation["entrez"]
    out = dgex.copy()
    ids: list[str | None] = []
    for sym, probes in zip(out["symbol"], out["probes"]):
        found = {probe_entrez.get(p) for p in probes} - {None}
        found = {f for f in found if isinstance(f, str)}
        ids.append(next(iter(found)) if len(found) == 1 else None)
        if len(found) > 1 and symbol_map is None:
            log.debug("D-GEX gene %s: probes map to %s", sym, sorted(found))
    out["entrez"] = pd.Series(ids, index=out.index, dtype=object)
    if symbol_map is not None:
        todo = out["entrez"].isna()
        if todo.any():
            by_sym = symbol_map.lookup(out.loc[todo, "symbol"], src="symbol", dst="entrez")
            out.loc[todo, "entrez"] = by_sym.to_numpy()
    return out


def _stamp(path: Path | None) -> tuple[str, float] | None:
    return None if path is None else (str(path), path.stat().st_mtime)


def load_id_map(
    *,
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
) -> GeneIdMap:
    """A :class:`GeneIdMap` from every gene table available, best first.

    Order: the HGNC complete set (if in the data folder or cache, or ``download=True``), the
    D-GEX maps converted to Entrez (the only offline Ensembl source), the LINCS gene table
    (else the landmark and BING genes shipped with geneinfer), the GPL96 annotation. Without
    HGNC and D-GEX files there is no Ensembl mapping.
    """
    hgnc = locate("hgnc_complete_set", data_dir=data_dir, cache_dir=cache_dir)
    if hgnc is None and download:
        hgnc = fetch("hgnc_complete_set", data_dir=data_dir, cache_dir=cache_dir)
    # the landmark + BING symbols shipped with geneinfer stand in for the whole LINCS table
    lincs = (locate("lincs_gene_info", data_dir=data_dir, cache_dir=cache_dir)
             or locate("l1000_genes", data_dir=data_dir, cache_dir=cache_dir))
    dgex = tuple(locate(n, data_dir=data_dir, cache_dir=cache_dir)
                 for n in ("dgex_map_lm", "dgex_map_tg"))
    # Building the map takes a second or two; files do not change under us, so memoise.
    return _build_id_map(_stamp(hgnc), _stamp(lincs), tuple(_stamp(p) for p in dgex))


@functools.lru_cache(maxsize=8)
def _build_id_map(
    hgnc_s: tuple[str, float] | None,
    lincs_s: tuple[str, float] | None,
    dgex_s: tuple[tuple[str, float] | None, ...],
) -> GeneIdMap:
    from geneinfer.genes.probes import load_probe_annotation

    gpl96 = load_probe_annotation("GPL96")
    maps: list[GeneIdMap] = []
    if hgnc_s is not None:
        maps.append(GeneIdMap.from_hgnc(hgnc_s[0]))
    lincs = GeneIdMap.from_lincs(lincs_s[0]) if lincs_s is not None else None
    gpl_map = GeneIdMap.from_probe_annotation(gpl96)
    symbol_map = GeneIdMap.combine([m for m in (lincs, gpl_map) if m is not None])
    dgex_parts = [read_dgex_map(s[0]) for s in dgex_s if s is not None]
    if dgex_parts:
        dgex = dgex_entrez(pd.concat(dgex_parts, ignore_index=True), gpl96, symbol_map=symbol_map)
        maps.append(GeneIdMap.from_dgex(dgex))
    if lincs is not None:
        maps.append(lincs)
    maps.append(gpl_map)
    return GeneIdMap.combine(maps)


def has_ensembl(id_map: GeneIdMap) -> bool:
    return bool(id_map.table["ensembl"].notna().any())


def map_gene_ids(
    data: ExpressionData,
    *,
    to: str = "entrez",
    id_map: GeneIdMap | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    how: str = "auto",
    return_report: bool = False,
) -> ExpressionData | tuple[ExpressionData, MappingReport]:
    """Re-key genes to another id kind (e.g. GEUVADIS Ensembl ids -> Entrez).

    Genes whose id cannot be mapped are dropped and listed in the report (also logged).
    Several genes mapping to one id are merged: summed for ``counts`` data, NaN-aware mean
    otherwise (``how="sum"|"mean"`` overrides).

    Parameters
    ----------
    to
        ``"entrez"``, ``"ensembl"`` or ``"symbol"``.
    id_map
        Defaults to :func:`load_id_map` (``data_dir`` is passed on).
    return_report
        Also return a :class:`MappingReport`.
    """
    from geneinfer.genes.probes import aggregate_columns

    src = data.gene_id_kind if data.gene_id_kind != "unknown" else detect_id_kind(data.gene_ids)
    if src == "probe":
        raise GeneinferError(
            f"{data.source or 'data'} has probe ids; collapse them to genes first "
            "(geneinfer.genes.collapse_probes)"
        )
    if src not in KINDS or to not in KINDS:
        raise ConfigError(f"cannot map gene ids from {src!r} to {to!r}; kinds are {KINDS}")
    if src == to:
        report = MappingReport(src, to, data.n_genes, data.n_genes, data.n_genes)
        return (data, report) if return_report else data
    id_map = id_map if id_map is not None else load_id_map(data_dir=data_dir)
    if src == "ensembl" and not has_ensembl(id_map):
        raise DataUnavailableError(
            "no Ensembl gene table is available: put genes/dgex_map_lm.txt and dgex_map_tg.txt "
            "or genes/hgnc_complete_set.txt in the data folder (--data-dir), or run "
            "`geneinfer data fetch hgnc_complete_set`"
        )
    target = id_map.lookup(data.gene_ids, src=src, dst=to)
    ok = target.notna().to_numpy()
    if not ok.any():
        raise GeneinferError(
            f"none of the {data.n_genes} {src} ids of {data.source or 'the data'} could be "
            f"mapped to {to} ids (e.g. {', '.join(data.gene_ids[:3])}) with {id_map!r}"
        )
    unmapped = list(data.gene_ids[~ok])
    new_ids = pd.Index(target[ok].astype(str).to_numpy())
    uniq, codes = np.unique(new_ids.to_numpy(), return_inverse=True)
    # Keep the first-appearance order of the new ids (np.unique sorts).
    first = pd.Index(new_ids).drop_duplicates()
    order = pd.Index(uniq).get_indexer(first)
    remap = np.empty(len(uniq), dtype=np.int64)
    remap[order] = np.arange(len(uniq))
    codes = remap[codes]
    mode = how if how != "auto" else ("sum" if data.scale == "counts" else "mean")
    values = aggregate_columns(data.values[:, ok], codes, len(uniq), how=mode)
    kept = data.gene_ids[ok]
    source_ids = pd.Series(kept).groupby(codes).agg(";".join).sort_index()
    genes = pd.DataFrame({to: first.to_numpy()}, index=first)
    for k in KINDS:
        if k != to:
            genes[k] = id_map.lookup(first, src=to, dst=k).to_numpy()
    genes[f"{src}_ids"] = source_ids.to_numpy()
    genes["n_merged"] = np.bincount(codes, minlength=len(uniq))
    genes = genes[[*KINDS, f"{src}_ids", "n_merged"]]
    out = ExpressionData(values=values, gene_ids=first, sample_ids=data.sample_ids, genes=genes,
                         samples=data.samples, scale=data.scale, gene_id_kind=to,
                         source=data.source)
    report = MappingReport(src, to, data.n_genes, int(ok.sum()), len(first), unmapped)
    log.info("%s: %s", data.source or "data", report.summary())
    return (out, report) if return_report else out
