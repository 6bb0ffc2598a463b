"""Public data sets: a registry of real download URLs, a local data folder and a cache.

>>> from geneinfer.sources import fetch
>>> path = fetch("lincs_gene_info")  # data folder, cache, or download  # doctest: +SKIP
>>> path = fetch("geo_soft", accession="GSE781")  # doctest: +SKIP
"""

from geneinfer.sources.download import (
    default_cache_dir,
    default_data_dir,
    download,
    fetch,
    locate,
)
from geneinfer.sources.registry import (
    ResolvedSource,
    Source,
    geo_stub,
    get_source,
    list_sources,
    register_source,
    unregister_source,
)

__all__ = [
    "ResolvedSource",
    "Source",
    "default_cache_dir",
    "default_data_dir",
    "download",
    "fetch",
    "geo_stub",
    "get_source",
    "list_sources",
    "locate",
    "register_source",
    "unregister_source",
]
