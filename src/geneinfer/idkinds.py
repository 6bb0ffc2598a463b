"""What gene identifiers are: the one place that recognises Entrez ids, Ensembl ids, probes
and gene symbols.

Readers call :func:`detect_id_kind` on a file's gene ids; the gene layer
(:mod:`geneinfer.genes`) calls :func:`id_kind_of` for lists that mix kinds (panel files).

Kinds
-----
``entrez``  plain integers (``"780"``); NCBI Gene ids, geneinfer's canonical ids.
``ensembl`` ``ENSG00000000419`` (a version suffix ``.12`` is allowed; other species'
            prefixes such as ``ENSMUSG`` too).
``probe``   microarray probes: Affymetrix (``1007_s_at``, ``AFFX-BioB-5_at``, gene ST
            ``*_st``), Illumina (``ILMN_1343291``), Agilent (``A_23_P100001``).
``symbol``  gene symbols (``DDR1``, ``HLA-DRB4``, ``C1orf43``).
``unknown`` none of these for at least 90 % of the ids.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: Every gene id kind an :class:`~geneinfer.expression.ExpressionData` may carry.
GENE_ID_KINDS: tuple[str, ...] = ("probe", "entrez", "ensembl", "symbol", "unknown")

ENTREZ_RE = re.compile(r"^\d+$")
ENSEMBL_RE = re.compile(r"^ENS[A-Z]*G\d{6,}(?:\.\d+)?$")
PROBE_RE = re.compile(
    r"^(?:AFFX-.+|\d+(?:_[a-z])?_at|[0-9A-Za-z.\-]+_(?:[a-z]_)?(?:at|st)|ILMN_\d+"
    r"|A_\d+_P\d+)$"
)
# HGNC-like symbols: letters/digits with dash parts (DDR1, HLA-DRB4), Cnorfm (C1orf43) and
# mixed case with a digit (mouse-style Gapdh-like symbols with numbers)
SYMBOL_RE = re.compile(
    r"^(?:[A-Z][A-Z0-9]*(?:[-.][A-Z0-9]+)*|C\d+orf\d+|[A-Z][A-Za-z0-9]*\d[A-Za-z0-9]*)$"
)
#: Share of ids that must be of one kind (all of them for Entrez: plain integers could be
#: sample numbers, so a single other id makes the column something else).
MAJORITY = 0.9


def id_kind_of(gene_id: str) -> str:
    """The kind of one id: ``entrez``, ``ensembl``, ``probe``, ``symbol`` or ``unknown``."""
    text = str(gene_id).strip()
    if ENTREZ_RE.match(text):
        return "entrez"
    if ENSEMBL_RE.match(text):
        return "ensembl"
    if PROBE_RE.match(text):
        return "probe"
    if SYMBOL_RE.match(text):
        return "symbol"
    return "unknown"


def detect_id_kind(ids: Iterable[object]) -> str:
    """The kind that at least 90 % of ``ids`` have (Entrez: all), else ``unknown``."""
    texts = [str(i).strip() for i in ids]
    if not texts:
        return "unknown"
    counts: dict[str, int] = {}
    for text in texts:
        kind = id_kind_of(text)
        counts[kind] = counts.get(kind, 0) + 1
    if counts.get("entrez", 0) == len(texts):
        return "entrez"
    for kind in ("ensembl", "probe", "symbol"):
        if counts.get(kind, 0) >= MAJORITY * len(texts):
            return kind
    return "unknown"


def looks_like_gene_ids(ids: Iterable[object]) -> bool:
    """True when ``ids`` clearly are gene identifiers (probe, Entrez or Ensembl ids)."""
    return detect_id_kind(ids) in ("probe", "entrez", "ensembl")
