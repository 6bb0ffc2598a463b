"""Public data sets: a registry of real download URLs, a local data folder and a cache.

>>> from geneinfer.public_data import fetch
>>> path = fetch("lincs_gene_info")  # data folder, cache, or download  # doctest: +SKIP
>>> path = fetch("geo_soft", accession="GSE781")  # doctest: +SKIP
"""

from geneinfer.public_data.download import (
    default_cache_dir,
    download,
    embedded_path,
    fetch,
    locate,
    locate_registered_file,
    resolve_data_dir,
)
from geneinfer.public_data.registry import (
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
    "download",
    "embedded_path",
    "fetch",
    "geo_stub",
    "get_source",
    "list_sources",
    "locate",
    "locate_registered_file",
    "register_source",
    "resolve_data_dir",
    "unregister_source",
]
