"""Map the genes of any input onto canonical gene ids: the one place that does it.

Probes, Ensembl ids, symbols or Entrez ids: :func:`plan_gene_mapping` decides, from the ids
and gene metadata alone (no values), which canonical gene (an Entrez id) each input column
becomes, and :class:`GeneMapping` then combines the columns of any block of samples. The
decision, in order:

1. the ids already are of the target kind: each column is its own gene;
2. an explicit probe annotation for probes (``annotation=``: a platform such as ``"GPL570"``,
   an annotation file, or a table);
3. the input's own target-kind column (``pr_gene_id``, ``ENTREZ_GENE_ID``, ...);
4. probes without one: the annotation of the platform the file names (``platform=``, e.g. a
   series matrix's ``!Sample_platform_id``) when it is in the data folder or cache, else
   GPL96 (HG-U133A);
5. Ensembl ids and symbols: a :class:`~geneinfer.genes.ids.GeneIdMap`
   (:func:`~geneinfer.genes.ids.load_id_map`).

Columns without a gene, and probes annotated to several genes (``"1 /// 2"``), are dropped
and counted in a :class:`MappingReport`. Columns that share a gene are combined by
:func:`aggregate_columns` (NaN-aware mean; sum for counts, where reads of one gene add up).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from geneinfer.errors import ConfigError, DataUnavailableError, GeneinferError
from geneinfer.expression import ExpressionData
from geneinfer.genes.annotation import CLEANERS, KINDS, annotate, clean_entrez, find_column
from geneinfer.genes.ids import GeneIdMap, has_ensembl, load_id_map
from geneinfer.genes.probes import (
    is_platform_name,
    load_probe_annotation,
    platform_annotation_path,
    read_platform_annotation,
)
from geneinfer.idkinds import detect_id_kind

log = logging.getLogger(__name__)

_BLOCK_ROWS = 2048  # rows aggregated at once: bounds float64 temporaries on big compendia
#: ... and at most this many values (wide inputs such as ARCHS4's 67k genes get fewer rows)
_BLOCK_VALUES = 16_000_000
_SHOWN_UNMAPPED = 1000  # ids kept in a report (the count is always exact)
#: an annotation the user names must know at least this share of the data's probe ids: a
#: wrong platform's table still shares a few control probes (AFFX-...) with the data
MIN_ANNOTATED_SHARE = 0.5

Annotation = pd.DataFrame | str | os.PathLike | None


@dataclass
class MappingReport:
    """What a gene mapping does: counts, and the ids it could not map.

    Attributes
    ----------
    source_kind, target_kind
        Id kinds of the input and of the output (``probe`` -> ``entrez``, ...).
    via
        Where the canonical ids come from, e.g. ``"the GPL96 annotation"``.
    n_input, n_mapped, n_output
        Input columns, input columns that map to a gene, and output genes.
    n_no_gene, n_ambiguous, n_not_annotated
        Dropped columns: known but without a gene, annotated to several genes, and absent
        from the annotation or id map.
    unmapped
        Ids of the dropped columns (at most the first 1,000).
    """

    source_kind: str
    target_kind: str
    via: str
    n_input: int
    n_mapped: int
    n_output: int
    n_no_gene: int = 0
    n_ambiguous: int = 0
    n_not_annotated: int = 0
    unmapped: list[str] = field(default_factory=list)

    @property
    def n_unmapped(self) -> int:
        return self.n_input - self.n_mapped

    @property
    def n_merged(self) -> int:
        """Input columns folded into a gene that another column already gives."""
        return self.n_mapped - self.n_output

    def summary(self) -> str:
        if self.source_kind == self.target_kind and self.n_unmapped == 0:
            return f"{self.n_output} genes with {self.target_kind} ids"
        dropped = [f"{n} {what}" for n, what in (
            (self.n_no_gene, "with no gene"), (self.n_ambiguous, "mapped to several genes"),
            (self.n_not_annotated, "not in " + self.via)) if n]
        return (f"mapped {self.n_mapped} of {self.n_input} {self.source_kind} ids to "
                f"{self.n_output} {self.target_kind} genes using {self.via}"
                + (f"; dropped {', '.join(dropped)}" if dropped else ""))


@dataclass
class GeneMapping:
    """Which canonical gene each input column becomes (see :func:`plan_gene_mapping`).

    Attributes
    ----------
    codes
        Per input column: the position of its output gene, or -1 (dropped).
    gene_ids
        Output genes, in the order of their first input column.
    genes
        Output gene metadata: ``symbol``, ``entrez``, ``ensembl`` (where known),
        ``n_merged`` (input columns combined) and ``merged_ids`` (their ids, ``;``-joined).
    report
        A :class:`MappingReport`.
    """

    codes: np.ndarray
    gene_ids: pd.Index
    genes: pd.DataFrame
    report: MappingReport

    @classmethod
    def identity(cls, gene_ids: pd.Index, genes: pd.DataFrame, kind: str) -> GeneMapping:
        """Every column is its own gene (the ids already are canonical, or are kept)."""
        n = len(gene_ids)
        report = MappingReport(kind, kind, "the ids", n, n, n)
        return cls(np.arange(n, dtype=np.int64), pd.Index(gene_ids), genes, report)

    @property
    def gene_id_kind(self) -> str:
        return self.report.target_kind

    @property
    def is_identity(self) -> bool:
        """Every input column is its own output gene, in order."""
        return len(self.codes) == len(self.gene_ids) and bool(
            (self.codes == np.arange(len(self.codes))).all())

    def input_columns(self, outputs: np.ndarray) -> np.ndarray:
        """Sorted input columns that feed the output genes at positions ``outputs``."""
        return np.flatnonzero(np.isin(self.codes, outputs))

    def apply(self, values: np.ndarray, *, how: str = "mean",
              outputs: np.ndarray | None = None, columns: np.ndarray | None = None
              ) -> np.ndarray:
        """Output genes (all, or those at positions ``outputs``, in that order) from
        ``values`` (samples x input columns, or only the input ``columns`` given)."""
        codes = self.codes if columns is None else self.codes[columns]
        if outputs is None:
            if self.is_identity and columns is None:
                return np.asarray(values, dtype=np.float32)
            return aggregate_columns(values, codes, len(self.gene_ids), how=how)
        outputs = np.asarray(outputs, dtype=np.int64)
        slot = np.full(len(self.gene_ids), -1, dtype=np.int64)
        slot[outputs] = np.arange(len(outputs))
        return aggregate_columns(values, np.where(codes >= 0, slot[codes], -1), len(outputs),
                                 how=how)

    def to_data(self, data: ExpressionData, *, how: str = "mean") -> ExpressionData:
        """``data`` (whose columns are this mapping's input) with canonical genes."""
        return ExpressionData(values=self.apply(data.values, how=how), gene_ids=self.gene_ids,
                              sample_ids=data.sample_ids, genes=self.genes, samples=data.samples,
                              scale=data.scale, gene_id_kind=self.gene_id_kind,
                              source=data.source)


def aggregate_columns(values: np.ndarray, codes: np.ndarray, n_groups: int, *,
                      how: str = "mean") -> np.ndarray:
    """Combine columns of ``values`` that share a group code (-1 = left out): NaN-aware
    ``mean`` or ``sum``.

    A group whose values in a row are all NaN (or that has no column) gives NaN, never 0.
    Returns float32 ``(n_rows, n_groups)``; sums run in float64 so a one-column group keeps
    its exact value.
    """
    if how not in ("mean", "sum"):
        raise GeneinferError(f"unknown aggregation {how!r}; expected 'mean' or 'sum'")
    codes = np.asarray(codes, dtype=np.int64)
    used = np.flatnonzero(codes >= 0)
    # groups x columns membership: one sparse product sums each group's columns (C speed)
    member = sp.csr_matrix((np.ones(len(used)), (codes[used], used)),
                           shape=(n_groups, len(codes)))
    out = np.full((values.shape[0], n_groups), np.nan, dtype=np.float32)
    step = max(16, min(_BLOCK_ROWS, _BLOCK_VALUES // max(1, len(codes))))
    for start in range(0, values.shape[0], step):
        # columns x rows, C-contiguous float64: what the CSR x dense kernel reads fastest
        block = np.ascontiguousarray(values[start:start + step].T, dtype=np.float64)
        missing = np.isnan(block)
        block[missing] = 0.0
        sums = member @ block
        counts = member @ (~missing).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            res = sums / counts if how == "mean" else np.where(counts > 0, sums, np.nan)
        out[start:start + step] = res.T
    return out


# ---------------------------------------------------------------------------- planning
def plan_gene_mapping(
    gene_ids: pd.Index,
    genes: pd.DataFrame,
    kind: str,
    *,
    to: str = "entrez",
    annotation: Annotation = None,
    id_map: GeneIdMap | None = None,
    known: GeneIdMap | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    source: str | None = None,
    platform: str | None = None,
) -> GeneMapping:
    """How the input's genes (ids, metadata, id kind) become ``to`` genes.

    Parameters
    ----------
    annotation
        Probe annotation for probe ids: a platform (``"GPL96"``), an annotation file (any
        layout :func:`~geneinfer.genes.probes.read_platform_annotation` reads), a table
        indexed by probe id with an ``entrez`` column (and ``symbol``), or None (the
        input's own Entrez column, else the ``platform``'s annotation when cached, else
        GPL96).
    platform
        The platform the input names (GEO ``platform_id``), used for probes without an
        Entrez column when its annotation is in the data folder or cache.
    id_map
        For Ensembl ids and symbols; default :func:`~geneinfer.genes.ids.load_id_map`
        (``data_dir`` is passed on).
    known
        Genes the caller knows (e.g. a model's genes with their symbols), trusted before
        ``id_map``.
    source
        Name of the input, for messages.
    """
    gene_ids = pd.Index([str(g) for g in gene_ids], dtype=object)
    kind = kind if kind != "unknown" else detect_id_kind(gene_ids)
    if to not in KINDS:
        raise ConfigError(f"cannot map gene ids to {to!r}; kinds are {', '.join(KINDS)}")
    if kind == to and (annotation is None or is_platform_name(annotation)):
        return GeneMapping.identity(gene_ids, genes, kind)
    found = _targets(gene_ids, genes, kind, to, annotation=annotation,
                     id_map=_IdMaps(id_map, known, data_dir), source=source, platform=platform)
    return _build(gene_ids, genes, kind, to, found, source)


@dataclass
class _Found:
    """Per input column: its target id (None = dropped), why it is dropped (``ok``,
    ``no_gene``, ``ambiguous``, ``not_annotated``) and a symbol the source knows."""

    target: pd.Series
    via: str
    status: pd.Series
    symbols: pd.Series | None = None


@dataclass
class _IdMaps:
    """The id map to use, built only when a look-up needs one (loading takes a second)."""

    given: GeneIdMap | None
    known: GeneIdMap | None
    data_dir: str | os.PathLike[str] | None

    def get(self) -> GeneIdMap:
        base = self.given if self.given is not None else load_id_map(data_dir=self.data_dir)
        return base if self.known is None else GeneIdMap.combine([self.known, base])


def _targets(gene_ids: pd.Index, genes: pd.DataFrame, kind: str, to: str, *,
             annotation: Annotation, id_map: _IdMaps, source: str | None,
             platform: str | None = None) -> _Found:
    own = find_column(genes, to)
    # a platform name (--platform GPLxxx) names what a file's own annotation columns already
    # are (a SOFT platform table is that platform's table), and says nothing about inputs
    # that are not probes; an annotation file or table always applies
    named = is_platform_name(annotation)
    if annotation is not None and not (named and (own is not None or kind not in
                                                  ("probe", "unknown"))):
        if kind not in ("probe", "unknown"):
            raise ConfigError(f"{source or 'the input'} has {kind} gene ids; a probe "
                              "annotation applies to probe ids only")
        return _from_annotation(gene_ids, annotation, id_map=id_map, source=source,
                                given=True)
    if own is not None:
        return _from_column(gene_ids, genes[own], to, f"its '{own}' column")
    if kind == "probe" and to == "entrez":
        return _from_annotation(gene_ids, _default_platform(platform, id_map.data_dir),
                                id_map=id_map, source=source)
    if kind in KINDS:
        return _from_id_map(gene_ids, kind, to, id_map=id_map, source=source)
    for other in ("symbol", "ensembl"):  # unknown ids with a recognised id column
        col = find_column(genes, other)
        if col is not None:
            found = _from_id_map(pd.Index(genes[col].astype(str)), other, to, id_map=id_map,
                                 source=source)
            return _Found(found.target.set_axis(gene_ids), f"its '{col}' column and {found.via}",
                          found.status.set_axis(gene_ids),
                          None if found.symbols is None else found.symbols.set_axis(gene_ids))
    raise GeneinferError(
        f"cannot tell what the gene ids of {source or 'the input'} are (e.g. "
        f"{', '.join(gene_ids[:3])}); expected Entrez ids, Ensembl ids, gene symbols or "
        "probes (give the platform's annotation for probes)"
    )


def _from_column(gene_ids: pd.Index, column: pd.Series, to: str, via: str) -> _Found:
    if to == "entrez":
        target, ambiguous = clean_entrez(column.to_numpy())
    else:
        target, ambiguous = CLEANERS[to](column.to_numpy()), np.zeros(len(column), bool)
    target = pd.Series(target.to_numpy(), index=gene_ids, dtype=object)
    status = np.where(target.notna(), "ok",
                      np.where(np.asarray(ambiguous, dtype=bool), "ambiguous", "no_gene"))
    return _Found(target, via, pd.Series(status, index=gene_ids))


def _default_platform(platform: str | None, data_dir: str | os.PathLike[str] | None) -> str:
    """The platform a file names when its annotation is local, else GPL96."""
    if platform and is_platform_name(platform):
        acc = platform.strip().upper()
        if platform_annotation_path(acc, data_dir=data_dir) is not None:
            return acc
        if acc != "GPL96":
            log.warning("no annotation of platform %s in the data folder or cache (geneinfer "
                        "data fetch geo_platform --accession %s); trying GPL96", acc, acc)
    return "GPL96"


def _annotation_table(annotation: Annotation, id_map: _IdMaps) -> tuple[pd.DataFrame, str]:
    """(probe table with ``entrez``/``ambiguous``, how to name it) of any annotation."""
    if isinstance(annotation, pd.DataFrame):
        ann = annotation.copy()
        if "entrez" not in ann:
            raise GeneinferError("a probe annotation needs an 'entrez' column "
                                 "(index = probe ids)")
        if "ambiguous" not in ann:
            ent, amb = clean_entrez(ann["entrez"])
            ann["entrez"], ann["ambiguous"] = ent.to_numpy(), amb.to_numpy()
        return ann, "the given annotation"
    if is_platform_name(annotation):
        acc = str(annotation).strip().upper()
        return load_probe_annotation(acc, data_dir=id_map.data_dir), f"the {acc} annotation"
    path = os.fspath(annotation)  # type: ignore[arg-type]
    if not os.path.isfile(path):
        raise ConfigError(f"annotation {path!r} is neither a file nor a GEO platform "
                          "(GPLnnn)")
    return _file_annotation(path, id_map), f"annotation {path}"


def _file_annotation(path: str, id_map: _IdMaps) -> pd.DataFrame:
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns, str(id_map.data_dir))
    if key not in _FILE_ANNOTATIONS:
        def symbols(texts: pd.Series) -> pd.Series:
            return id_map.get().lookup(texts, src="symbol", dst="entrez")

        _FILE_ANNOTATIONS.clear()  # keep one: annotation tables are large
        _FILE_ANNOTATIONS[key] = read_platform_annotation(path, symbols_to_entrez=symbols)
    return _FILE_ANNOTATIONS[key].copy()


_FILE_ANNOTATIONS: dict[tuple, pd.DataFrame] = {}


def _from_annotation(gene_ids: pd.Index, annotation: Annotation, *, id_map: _IdMaps,
                     source: str | None, given: bool = False) -> _Found:
    ann, via = _annotation_table(annotation, id_map)
    aligned = ann.reindex(gene_ids)
    annotated = gene_ids.isin(ann.index)
    n_found, n = int(annotated.sum()), len(gene_ids)
    if aligned["entrez"].notna().sum() == 0 or (given and n_found < MIN_ANNOTATED_SHARE * n):
        raise GeneinferError(
            f"only {n_found} of the {n} probe ids of {source or 'the input'} are in {via} "
            f"(data: {', '.join(gene_ids[:3])}; annotation: {', '.join(map(str, ann.index[:3]))}"
            f"); give this platform's annotation (--annotation FILE or --platform GPLxxx)"
        )
    ambiguous = aligned["ambiguous"].fillna(False).to_numpy(dtype=bool)
    status = np.where(~annotated, "not_annotated", np.where(
        aligned["entrez"].notna(), "ok", np.where(ambiguous, "ambiguous", "no_gene")))
    symbols = aligned["symbol"] if "symbol" in aligned else None
    return _Found(aligned["entrez"].astype(object), via, pd.Series(status, index=gene_ids),
                  symbols)


def _from_id_map(ids: pd.Index, kind: str, to: str, *, id_map: _IdMaps,
                 source: str | None) -> _Found:
    id_map = id_map.get()
    if "ensembl" in (kind, to) and not has_ensembl(id_map):
        raise DataUnavailableError(
            f"{source or 'the input'} has {kind} gene ids, and no Ensembl gene table is "
            "available: put genes/dgex_map_lm.txt and dgex_map_tg.txt or "
            "genes/hgnc_complete_set.txt in the data folder (--data-dir), or run "
            "`geneinfer data fetch hgnc_complete_set`"
        )
    target = id_map.lookup(ids, src=kind, dst=to).set_axis(ids)
    status = pd.Series(np.where(target.notna(), "ok", "not_annotated"), index=ids)
    via = f"the gene tables ({', '.join(id_map.sources) or 'an id map'})"
    symbols = (pd.Series(ids, index=ids) if kind == "symbol"
               else id_map.lookup(ids, src=kind, dst="symbol").set_axis(ids))
    return _Found(target, via, status, symbols)


def _build(gene_ids: pd.Index, genes: pd.DataFrame, kind: str, to: str, found: _Found,
           source: str | None) -> GeneMapping:
    target, via, status = found.target, found.via, found.status
    ok = target.notna().to_numpy()
    if not ok.any():
        raise GeneinferError(
            f"none of the {len(gene_ids)} {kind} ids of {source or 'the input'} could be "
            f"mapped to {to} ids (e.g. {', '.join(gene_ids[:3])}) using {via}"
        )
    mapped = pd.Index(target[ok].astype(str).to_numpy(), dtype=object)
    out_ids = mapped.drop_duplicates()
    codes = np.full(len(gene_ids), -1, dtype=np.int64)
    codes[ok] = out_ids.get_indexer(mapped)
    # the input's own symbols first, then the annotation's or gene table's
    symbols = annotate(gene_ids, genes, kind)["symbol"]
    if found.symbols is not None:
        symbols = symbols.where(symbols.notna(), found.symbols.to_numpy())
    symbols = symbols.to_numpy()
    used = codes[ok]
    meta = pd.DataFrame(index=out_ids)
    meta["symbol"] = pd.Series(symbols[ok]).groupby(used).first().reindex(
        range(len(out_ids))).to_numpy()
    meta[to] = out_ids.to_numpy()
    meta["n_merged"] = np.bincount(used, minlength=len(out_ids))
    meta["merged_ids"] = pd.Series(gene_ids[ok]).groupby(used).agg(";".join).to_numpy()
    counts = status.value_counts()
    dropped = gene_ids[~ok]
    report = MappingReport(
        kind, to, via, len(gene_ids), int(ok.sum()), len(out_ids),
        n_no_gene=int(counts.get("no_gene", 0)), n_ambiguous=int(counts.get("ambiguous", 0)),
        n_not_annotated=int(counts.get("not_annotated", 0)),
        unmapped=list(dropped[:_SHOWN_UNMAPPED]),
    )
    log.info("%s: %s", source or "data", report.summary())
    return GeneMapping(codes, out_ids, meta, report)


# ---------------------------------------------------------------------------- data sets
def map_genes(
    data: ExpressionData,
    *,
    to: str = "entrez",
    annotation: Annotation = None,
    id_map: GeneIdMap | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    how: str | None = None,
) -> tuple[ExpressionData, MappingReport]:
    """``data`` with canonical genes, and what the mapping did.

    Columns that share a gene are averaged (NaN-aware), or summed when ``data`` holds
    counts (``how`` overrides). Values are combined as they are: put them on log2 first
    for a D-GEX style mean of log2 probes (:func:`geneinfer.preprocess.harmonize` does).
    """
    mapping = plan_gene_mapping(data.gene_ids, data.genes, data.gene_id_kind, to=to,
                                annotation=annotation, id_map=id_map, data_dir=data_dir,
                                source=data.source)
    mode = how or ("sum" if data.scale == "counts" else "mean")
    return mapping.to_data(data, how=mode), mapping.report


def annotate_genes(
    data: ExpressionData,
    *,
    annotation: Annotation,
    data_dir: str | os.PathLike[str] | None = None,
    missing: str = "-666",
) -> tuple[ExpressionData, MappingReport]:
    """``data`` with each column's Entrez id and symbol as CMap-style gene metadata
    (``pr_gene_id``, ``pr_gene_symbol``; ``missing`` where there is none, e.g. probes of
    several genes), values and columns unchanged: a converted file then carries its genes."""
    mapping = plan_gene_mapping(data.gene_ids, data.genes, data.gene_id_kind,
                                annotation=annotation, data_dir=data_dir, source=data.source)
    ok = mapping.codes >= 0
    entrez = np.full(len(ok), missing, dtype=object)
    symbol = np.full(len(ok), missing, dtype=object)
    entrez[ok] = mapping.gene_ids[mapping.codes[ok]]
    sym = mapping.genes["symbol"].to_numpy(dtype=object)[mapping.codes[ok]]
    symbol[ok] = [s if s else missing for s in sym]
    genes = data.genes.drop(columns=[c for c in ("pr_gene_id", "pr_gene_symbol", "entrez",
                                                 "symbol") if c in data.genes])
    genes["pr_gene_symbol"], genes["pr_gene_id"] = symbol, entrez
    return data.replace(genes=genes), mapping.report


def collapse_probes(
    data: ExpressionData, *, annotation: Annotation = None, return_report: bool = False
) -> ExpressionData | tuple[ExpressionData, MappingReport]:
    """Probe columns -> Entrez genes by the NaN-aware mean of each gene's probes (D-GEX).

    ``annotation``: the input's own Entrez column if None and it has one, else the GPL96
    (HG-U133A) table; a platform name such as ``"GPL570"``; or a table indexed by probe id.
    """
    out, report = map_genes(data, to="entrez", annotation=annotation, how="mean")
    return (out, report) if return_report else out


def map_gene_ids(
    data: ExpressionData,
    *,
    to: str = "entrez",
    id_map: GeneIdMap | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    how: str = "auto",
    return_report: bool = False,
) -> ExpressionData | tuple[ExpressionData, MappingReport]:
    """Re-key genes to another id kind (e.g. GEUVADIS Ensembl ids -> Entrez ids).

    Genes whose id cannot be mapped are dropped and listed in the report. Several genes
    mapping to one id are summed for counts and averaged otherwise (``how="sum"|"mean"``).
    """
    if data.gene_id_kind == "probe":
        raise GeneinferError(
            f"{data.source or 'data'} has probe ids; collapse them to genes first "
            "(geneinfer.genes.collapse_probes)"
        )
    out, report = map_genes(data, to=to, id_map=id_map, data_dir=data_dir,
                            how=None if how == "auto" else how)
    return (out, report) if return_report else out
