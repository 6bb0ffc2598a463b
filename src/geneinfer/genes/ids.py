"""Gene id maps: convert between symbols, Entrez ids and Ensembl ids.

The canonical gene id of geneinfer (microarray and L1000 data) is the **Entrez id as a
string**. :class:`GeneIdMap` converts between symbols, Entrez and Ensembl ids;
:func:`load_id_map` builds one from whatever gene tables are available offline (the D-GEX
maps, the LINCS gene table or the landmark list shipped with geneinfer, the GPL96 annotation)
or from the HGNC complete set. Mapping the genes of a data set onto canonical ids is
:mod:`geneinfer.genes.mapping`.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from geneinfer.errors import ConfigError, InputFormatError
from geneinfer.genes.annotation import KINDS, clean_ensembl, clean_entrez, clean_symbol
from geneinfer.genes.probes import load_probe_annotation
from geneinfer.idkinds import id_kind_of
from geneinfer.public_data import fetch, locate

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- id maps
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
    def from_genes(cls, ids: Sequence[str], symbols: Sequence[str], *, kind: str = "entrez",
                   name: str = "the model's genes") -> GeneIdMap:
        """From a gene list with symbols, e.g. a model's landmarks and targets."""
        if kind not in KINDS or kind == "symbol":
            return cls(pd.DataFrame(columns=list(KINDS)), sources=[name])
        return cls(pd.DataFrame({kind: list(ids), "symbol": list(symbols)}), sources=[name])

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
