"""Gene identities and panels.

* :func:`standard_annotation` - symbol / Entrez / Ensembl of each gene from whatever
  annotation columns a file has.
* :func:`collapse_probes` - HG-U133A probes -> Entrez genes (mean of a gene's probes).
* :func:`map_gene_ids` / :class:`GeneIdMap` / :func:`load_id_map` - Ensembl <-> Entrez <->
  symbols.
* :func:`get_panel` (``"l1000"``, ``"dgex"`` or a file), :func:`panel_coverage`,
  :func:`select_landmarks`.
"""

from geneinfer.genes.ids import (
    GeneIdMap,
    MappingReport,
    clean_ensembl,
    clean_entrez,
    clean_symbol,
    load_id_map,
    map_gene_ids,
    read_dgex_map,
    read_lincs_gene_info,
    standard_annotation,
)
from geneinfer.genes.panels import (
    Panel,
    PanelCoverage,
    dgex_panel,
    get_panel,
    l1000_panel,
    panel_coverage,
    read_panel_file,
    select_landmarks,
)
from geneinfer.genes.probes import (
    ProbeCollapseReport,
    aggregate_columns,
    collapse_probes,
    load_probe_annotation,
    read_platform_annotation,
)

__all__ = [
    "GeneIdMap",
    "MappingReport",
    "Panel",
    "PanelCoverage",
    "ProbeCollapseReport",
    "aggregate_columns",
    "clean_ensembl",
    "clean_entrez",
    "clean_symbol",
    "collapse_probes",
    "dgex_panel",
    "get_panel",
    "l1000_panel",
    "load_id_map",
    "load_probe_annotation",
    "map_gene_ids",
    "panel_coverage",
    "read_dgex_map",
    "read_lincs_gene_info",
    "read_panel_file",
    "read_platform_annotation",
    "select_landmarks",
    "standard_annotation",
]
