"""Gene panels: which genes are measured (landmarks) and which are inferred (targets).

Named panels: ``l1000`` (the 978 LINCS landmarks of the GSE92742 gene table; targets = its
other 11,350 genes) and ``dgex`` (D-GEX: 943 landmarks -> 9,520 targets, converted to Entrez
via their HG-U133A probes). User panels are files of ids (Entrez, symbols or Ensembl).
:func:`select_landmarks` picks a data-driven panel by clustering genes, for when no named
panel is available.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from geneinfer.errors import ConfigError, GeneinferError, InputFormatError
from geneinfer.expression import ExpressionData
from geneinfer.genes.ids import (
    GeneIdMap,
    dgex_entrez,
    load_id_map,
    read_dgex_map,
    read_lincs_gene_info,
)
from geneinfer.genes.probes import load_probe_annotation
from geneinfer.public_data import fetch, locate

log = logging.getLogger(__name__)

NAMED_PANELS = ("l1000", "dgex")
ROLES = ("landmark", "target")


@dataclass
class Panel:
    """Landmark (measured) and target (inferred) genes, as canonical (Entrez) ids.

    Attributes
    ----------
    name
        ``"l1000"``, ``"dgex"`` or the panel file's name.
    landmarks, targets
        Canonical ids; ``targets`` is ``None`` when the panel only fixes the landmarks
        (then every other gene of the data is a target).
    symbols
        Canonical id -> gene symbol where known.
    unresolved
        Ids from the panel's source that could not be converted to canonical ids.
    info
        Extra gene lists, e.g. ``info["bing"]`` = LINCS "best inferred" genes.
    """

    name: str
    landmarks: list[str]
    targets: list[str] | None = None
    symbols: dict[str, str] = field(default_factory=dict)
    unresolved: list[str] = field(default_factory=list)
    info: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.landmarks = [str(g) for g in self.landmarks]
        if self.targets is not None:
            self.targets = [str(g) for g in self.targets]
        for what, ids in (("landmark", self.landmarks), ("target", self.targets or [])):
            dup = pd.Index(ids)[pd.Index(ids).duplicated()]
            if len(dup):
                raise GeneinferError(
                    f"panel {self.name!r} lists {what} genes twice: {', '.join(dup[:5])}"
                )
        both = set(self.landmarks) & set(self.targets or [])
        if both:
            raise GeneinferError(
                f"panel {self.name!r}: {len(both)} genes are both landmark and target, "
                f"e.g. {', '.join(sorted(both)[:5])}"
            )

    def __repr__(self) -> str:
        tg = "all other genes" if self.targets is None else f"{len(self.targets)} targets"
        return f"Panel({self.name!r}: {len(self.landmarks)} landmarks, {tg})"


# ---------------------------------------------------------------------------- named panels
def l1000_panel(*, data_dir: str | os.PathLike[str] | None = None) -> Panel:
    """The 978 L1000 landmarks (``pr_is_lm == 1``) of the LINCS GSE92742 gene table.

    With the whole table (data folder or cache) the targets are its 11,350 other genes, as
    CMap infers them. Without it the landmark list shipped with geneinfer is used and every
    other gene of the data is a target (``Panel.targets`` is None); ``info["source"]`` says
    which. ``info["bing"]`` lists the LINCS "best inferred genes" either way.
    """
    full = locate("lincs_gene_info", data_dir=data_dir)
    t = read_lincs_gene_info(full if full is not None else fetch("l1000_genes"))
    is_lm = t["pr_is_lm"].astype(str).str.strip() == "1"
    bing = t.get("pr_is_bing", pd.Series("0", index=t.index)).astype(str).str.strip() == "1"
    source = ("LINCS gene table" if full is not None else
              "landmark list shipped with geneinfer (targets: every other measured gene; "
              "`geneinfer data fetch lincs_gene_info` adds the LINCS target list)")
    return Panel(
        name="l1000",
        landmarks=t.loc[is_lm, "pr_gene_id"].tolist(),
        targets=t.loc[~is_lm, "pr_gene_id"].tolist() if full is not None else None,
        symbols=dict(zip(t["pr_gene_id"], t["pr_gene_symbol"])),
        info={"bing": t.loc[bing & ~is_lm, "pr_gene_id"].tolist(), "source": [source]},
    )


def dgex_panel(*, data_dir: str | os.PathLike[str] | None = None) -> Panel:
    """The D-GEX panel (943 landmarks, 9,520 targets) converted to Entrez ids.

    Each gene's HG-U133A probes are looked up in the GPL96 annotation; genes whose probes
    give no single Entrez id fall back to their symbol in the LINCS table / GPL96 annotation.
    Genes that still cannot be converted are listed in ``Panel.unresolved`` as symbols.
    D-GEX sometimes lists other probe sets of a landmark gene as a target with the same
    symbol; at gene level that target is the landmark itself, so it is left out of
    ``targets`` and listed in ``info["targets_same_gene_as_landmark"]``.
    """
    gpl96 = load_probe_annotation("GPL96", data_dir=data_dir)
    symbol_maps = [GeneIdMap.from_probe_annotation(gpl96)]
    lincs = locate("lincs_gene_info", data_dir=data_dir)
    if lincs is not None:
        symbol_maps.insert(0, GeneIdMap.from_lincs(lincs))
    symbol_map = GeneIdMap.combine(symbol_maps)
    parts = {}
    unresolved: list[str] = []
    symbols: dict[str, str] = {}
    for role, name in (("landmark", "dgex_map_lm"), ("target", "dgex_map_tg")):
        t = dgex_entrez(read_dgex_map(fetch(name, data_dir=data_dir)), gpl96,
                        symbol_map=symbol_map)
        unresolved += t.loc[t["entrez"].isna(), "symbol"].tolist()
        t = t[t["entrez"].notna()]
        parts[role] = t
        symbols.update(zip(t["entrez"], t["symbol"]))
    lm = parts["landmark"].drop_duplicates("entrez")
    tg = parts["target"].drop_duplicates("entrez")
    # D-GEX splits some genes by probe set: a landmark gene's other probes form a "target"
    # with the same symbol. At gene level these are one gene, so it stays a landmark.
    clash = tg["entrez"].isin(lm["entrez"])
    info = {
        "landmark_duplicates": parts["landmark"].loc[
            parts["landmark"]["entrez"].duplicated(), "symbol"].tolist(),
        "target_duplicates": parts["target"].loc[
            parts["target"]["entrez"].duplicated(), "symbol"].tolist(),
        "targets_same_gene_as_landmark": tg.loc[clash, "symbol"].tolist(),
    }
    log.info(
        "D-GEX panel: %d landmark and %d target rows share an Entrez id with an earlier row; "
        "%d targets are other probe sets of a landmark gene (kept as landmarks)",
        len(info["landmark_duplicates"]), len(info["target_duplicates"]), int(clash.sum()),
    )
    if unresolved:
        log.warning("D-GEX panel: %d genes have no Entrez id: %s", len(unresolved),
                    ", ".join(unresolved[:10]))
    return Panel(name="dgex", landmarks=lm["entrez"].tolist(),
                 targets=tg.loc[~clash, "entrez"].tolist(), symbols=symbols,
                 unresolved=unresolved, info=info)


def read_panel_file(
    path: str | os.PathLike[str],
    *,
    id_map: GeneIdMap | None = None,
    data_dir: str | os.PathLike[str] | None = None,
) -> Panel:
    """A user panel: one gene id per line (landmarks only), or a TSV with columns ``gene`` and
    ``role`` (``landmark``/``target``). Ids may be Entrez ids, symbols or Ensembl ids; they
    are resolved to Entrez ids, and ids that cannot be resolved are kept in
    ``Panel.unresolved``. Blank lines and ``#`` comments are ignored.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFormatError(path, f"cannot read panel file: {exc}") from exc
    rows = [(n, ln.strip()) for n, ln in enumerate(lines, 1)
            if ln.strip() and not ln.lstrip().startswith("#")]
    if not rows:
        raise InputFormatError(path, "panel file lists no genes", expected="one gene id per line")
    header = [c.strip().lower() for c in rows[0][1].split("\t")]
    entries: list[tuple[int, str, str]] = []
    if "gene" in header and "role" in header:
        gi, ri = header.index("gene"), header.index("role")
        for n, ln in rows[1:]:
            fields = ln.split("\t")
            if len(fields) <= max(gi, ri):
                raise InputFormatError(path, f"line has {len(fields)} fields", where=n,
                                       expected=f"{len(header)} tab-separated fields")
            role = fields[ri].strip().lower()
            if role not in ROLES:
                raise InputFormatError(path, f"unknown role {fields[ri]!r}", where=n,
                                       expected="'landmark' or 'target'")
            entries.append((n, fields[gi].strip(), role))
    else:
        if len(header) > 1:
            raise InputFormatError(path, f"line has {len(header)} fields", where=rows[0][0],
                                   expected="one gene id per line, or columns 'gene' and 'role'")
        start = 1 if header[0] in ("gene", "gene_id", "id") else 0
        for n, ln in rows[start:]:
            if "\t" in ln:
                raise InputFormatError(path, "line has several fields", where=n,
                                       expected="one gene id per line")
            entries.append((n, ln, "landmark"))
    if id_map is None and any(not e[1].isdigit() for e in entries):
        id_map = load_id_map(data_dir=data_dir)
    ids = [e[1] for e in entries]
    resolved = id_map.resolve(ids) if id_map is not None else pd.Series(ids, index=ids)
    landmarks: list[str] = []
    targets: list[str] = []
    unresolved: list[str] = []
    symbols: dict[str, str] = {}
    seen: dict[str, int] = {}
    for (n, gid, role), ent in zip(entries, resolved.tolist()):
        if ent is None:
            unresolved.append(gid)
            continue
        if ent in seen:
            raise InputFormatError(path, f"gene {gid} ({ent}) is listed twice", where=n,
                                   expected=f"each gene once (first on line {seen[ent]})")
        seen[ent] = n
        (landmarks if role == "landmark" else targets).append(ent)
        if not gid.isdigit():
            symbols[ent] = gid
    if unresolved:
        log.warning("%s: %d gene ids could not be resolved to Entrez ids: %s", path,
                    len(unresolved), ", ".join(unresolved[:10]))
    if not landmarks:
        raise InputFormatError(path, "no landmark gene could be resolved",
                               expected="Entrez ids, symbols or Ensembl ids")
    has_roles = any(e[2] == "target" for e in entries)
    return Panel(name=path.name, landmarks=landmarks, targets=targets if has_roles else None,
                 symbols=symbols, unresolved=unresolved)


def get_panel(
    name_or_path: str | os.PathLike[str] | Panel,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    id_map: GeneIdMap | None = None,
) -> Panel:
    """A named panel (``"l1000"``, ``"dgex"``) or a panel file; a :class:`Panel` passes through.

    The gene tables come from the data folder (``data_dir`` / ``GENEINFER_DATA_DIR``), the
    cache, or a download (see :mod:`geneinfer.public_data`).
    """
    if isinstance(name_or_path, Panel):
        return name_or_path
    key = str(name_or_path)
    if key.lower() in NAMED_PANELS:
        return _named_panel(key.lower(), data_dir)
    path = Path(key)
    if not path.is_file():
        raise ConfigError(
            f"unknown panel {key!r}: use one of {', '.join(NAMED_PANELS)} or a panel file"
        )
    return read_panel_file(path, id_map=id_map, data_dir=data_dir)


def _named_panel(name: str, data_dir: str | os.PathLike[str] | None) -> Panel:
    names = ("lincs_gene_info", "l1000_genes") if name == "l1000" else (
        "lincs_gene_info", "dgex_map_lm", "dgex_map_tg")
    paths = [locate(n, data_dir=data_dir) for n in names]
    if name == "l1000":  # the shipped landmark list stands in for the whole table
        paths = [p for p in paths if p is not None][:1] or [None]
    if any(p is None for p in paths):  # fetch() inside raises the helpful error (or downloads)
        return l1000_panel(data_dir=data_dir) if name == "l1000" else dgex_panel(data_dir=data_dir)
    stamps = tuple((str(p), p.stat().st_mtime) for p in paths if p is not None)
    return copy.deepcopy(_cached_named_panel(name, stamps, None if data_dir is None
                                             else str(data_dir)))


@functools.lru_cache(maxsize=8)
def _cached_named_panel(name: str, stamps: tuple, data_dir: str | None) -> Panel:
    del stamps  # part of the cache key only: a changed file rebuilds the panel
    return l1000_panel(data_dir=data_dir) if name == "l1000" else dgex_panel(data_dir=data_dir)


# ---------------------------------------------------------------------------- data-driven
def select_landmarks(
    X_or_data: np.ndarray | ExpressionData,
    *,
    n: int = 978,
    seed: int = 0,
    max_components: int = 30,
    max_iter: int = 30,
) -> np.ndarray | list[str]:
    """A deterministic data-driven landmark panel: cluster genes, keep one per cluster.

    Genes (columns) are standardised across samples, projected on at most
    ``max_components`` principal components, and grouped into ``n`` clusters with k-means;
    the gene nearest each centroid is a landmark (LINCS chose its landmarks by clustering
    genes in a similar way). Genes with missing values or zero variance are not candidates.
    ``max_iter`` caps the k-means iterations (978 clusters of ~12,600 genes: tens of
    seconds on two cores).

    Returns
    -------
    numpy.ndarray or list of str
        Sorted column indices for an array input; gene ids for :class:`ExpressionData`.
    """
    X = X_or_data.values if isinstance(X_or_data, ExpressionData) else np.asarray(X_or_data)
    if X.ndim != 2:
        raise GeneinferError(f"expected a samples x genes matrix, got {X.ndim}-D")
    std = X.std(axis=0)
    ok = np.flatnonzero(~np.isnan(X).any(axis=0) & (std > 0))
    if n < 1 or n > len(ok):
        raise GeneinferError(
            f"cannot select {n} landmarks: {len(ok)} of {X.shape[1]} genes are complete and "
            "vary across samples"
        )
    Z = ((X[:, ok] - X[:, ok].mean(axis=0)) / std[ok]).T.astype(np.float64)  # genes x samples
    k = min(max_components, Z.shape[1], Z.shape[0])
    if k < Z.shape[1]:
        Z = PCA(n_components=k, random_state=seed).fit_transform(Z)
    km = KMeans(n_clusters=n, n_init=1, random_state=seed, max_iter=max_iter).fit(Z)
    dist = np.linalg.norm(Z - km.cluster_centers_[km.labels_], axis=1)
    best = pd.DataFrame({"label": km.labels_, "dist": dist, "col": ok}).sort_values(
        ["label", "dist", "col"]).drop_duplicates("label")
    cols = np.sort(best["col"].to_numpy())
    if isinstance(X_or_data, ExpressionData):
        return list(X_or_data.gene_ids[cols])
    return cols
