"""Gene identities and panels.

* :mod:`.annotation` - recognise annotation columns (``pr_gene_id``, ``Gene Symbol``, ...) and
  clean their ids.
* :mod:`.mapping` - the one mapping of any input's genes onto canonical (Entrez) ids:
  :func:`plan_gene_mapping`, :func:`collapse_probes`, :func:`map_gene_ids`.
* :mod:`.ids` - :class:`GeneIdMap` / :func:`load_id_map`: Ensembl <-> Entrez <-> symbols.
* :mod:`.probes` - platform annotations (probe -> gene).
* :mod:`.panels` - :func:`get_panel` (``"l1000"``, ``"dgex"`` or a file),
  :func:`select_landmarks`.
* :mod:`.matching` - which panel genes a data set has: :func:`match_panel`.
"""

from geneinfer.genes.annotation import (
    annotate,
    clean_ensembl,
    clean_entrez,
    clean_symbol,
    find_column,
    standard_annotation,
)
from geneinfer.genes.ids import (
    GeneIdMap,
    load_id_map,
    read_dgex_map,
    read_lincs_gene_info,
)
from geneinfer.genes.mapping import (
    GeneMapping,
    MappingReport,
    aggregate_columns,
    annotate_genes,
    collapse_probes,
    map_gene_ids,
    map_genes,
    plan_gene_mapping,
)
from geneinfer.genes.panels import (
    Panel,
    dgex_panel,
    get_panel,
    l1000_panel,
    read_panel_file,
    select_landmarks,
)
from geneinfer.genes.probes import load_probe_annotation, read_platform_annotation

__all__ = [
    "GeneIdMap",
    "GeneMapping",
    "MappingReport",
    "Panel",
    "aggregate_columns",
    "annotate",
    "annotate_genes",
    "clean_ensembl",
    "clean_entrez",
    "clean_symbol",
    "collapse_probes",
    "dgex_panel",
    "find_column",
    "get_panel",
    "l1000_panel",
    "load_id_map",
    "load_probe_annotation",
    "map_gene_ids",
    "map_genes",
    "plan_gene_mapping",
    "read_dgex_map",
    "read_lincs_gene_info",
    "read_panel_file",
    "read_platform_annotation",
    "select_landmarks",
    "standard_annotation",
]
