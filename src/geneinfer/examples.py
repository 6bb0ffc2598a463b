"""Real example data: the embedded default dataset and the larger shared sets.

:func:`load_embedded` needs no files outside the package: bladderbatch (57 HG-U133A arrays,
RMA log2), the 17 HG-U133A samples of GSE781 (MAS5, linear) - both collapsed to Entrez
genes - and 85 GEUVADIS RNA-seq samples (raw counts, **Ensembl ids**: no Ensembl -> Entrez
table may be embedded, so match them to the microarray genes with
:func:`geneinfer.genes.map_gene_ids` when the D-GEX maps, the LINCS table or the HGNC set is
available). Provenance and licenses: ``geneinfer/_embedded/README.md``.

:func:`load_shared` reads the sets that may not be embedded (``nakayama``, ``borovecki``,
``test_l1000``) and the originals of the embedded ones from a data folder laid out like the
project's ``shared/data``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from geneinfer import io
from geneinfer.errors import ConfigError, DataUnavailableError, ModelFileError
from geneinfer.expression import ExpressionData
from geneinfer.public_data import embedded_path, get_source, locate, resolve_data_dir

EMBEDDED_NAMES = ("bladderbatch", "gse781", "geuvadis")

# shared set -> (registry source name, how to finish reading it)
SHARED_SETS: dict[str, tuple[str, str]] = {
    "nakayama": ("nakayama", "gpl96"),
    "borovecki": ("borovecki", "gpl96"),
    "bladderbatch": ("bladderbatch", "gpl96"),
    "gse781": ("gse781", "soft"),
    "geuvadis": ("geuvadis85", "geuvadis"),
    "test_l1000": ("test_l1000", "l1000"),
}


def _manifest() -> dict:
    path = embedded_path("manifest.json")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"embedded data manifest {path} is missing or broken: {exc}") from exc


def _load_npz(name: str, entry: dict) -> ExpressionData:
    path = embedded_path(entry["file"])
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"embedded data file {path} is missing or broken: {exc}") from exc
    gene_ids = pd.Index(arrays.pop("gene_ids").astype(str))
    sample_ids = pd.Index(arrays.pop("sample_ids").astype(str))
    values = arrays.pop("values")
    genes = pd.DataFrame(index=gene_ids)
    samples = pd.DataFrame(index=sample_ids)
    for key, arr in arrays.items():
        prefix, col = key.split("__", 1)
        target = genes if prefix == "gene" else samples
        if arr.dtype.kind == "U":
            arr = np.where(arr == "", None, arr.astype(object))
        target[col] = arr
    return ExpressionData(values=values.astype(np.float32), gene_ids=gene_ids,
                          sample_ids=sample_ids, genes=genes, samples=samples,
                          scale=entry["scale"], gene_id_kind=entry["gene_id_kind"],
                          source=f"embedded:{name}")


def load_embedded(names: tuple[str, ...] | list[str] | None = None) -> dict[str, ExpressionData]:
    """The embedded real data sets, keyed ``bladderbatch``, ``gse781``, ``geuvadis``.

    Sample metadata has ``dataset`` and ``label`` (bladderbatch: Normal/Cancer/Biopsy plus
    ``batch``; gse781: Normal/Cancer from the sample titles; geuvadis: Female/Male) and
    ``values`` (the scale as the source states it). Microarray sets have Entrez gene ids
    with ``symbol``, ``entrez`` and ``n_probes`` gene metadata; geuvadis has Ensembl ids.
    """
    manifest = _manifest()
    wanted = list(names) if names is not None else list(EMBEDDED_NAMES)
    unknown = [n for n in wanted if n not in EMBEDDED_NAMES]
    if unknown:
        raise ConfigError(f"unknown embedded data set(s) {unknown}; available: {EMBEDDED_NAMES}")
    return {n: _load_npz(n, manifest[n]) for n in wanted}


def embedded_info() -> dict[str, dict]:
    """Provenance of the embedded files (origin, license, checksum, shape)."""
    return _manifest()


def load_shared(name: str, *, data_dir: str | os.PathLike[str] | None = None) -> ExpressionData:
    """A shared real data set read from the data folder with :func:`geneinfer.io.read`.

    ``nakayama``, ``borovecki``, ``bladderbatch`` (HG-U133A probes; collapse them with
    :func:`geneinfer.genes.collapse_probes`), ``gse781`` (its 17 GPL96 samples, probes),
    ``geuvadis`` (85 samples, counts, Ensembl ids, with sex/library size) and ``test_l1000``
    (377 L1000 profiles x 978 landmarks).
    """
    if name not in SHARED_SETS:
        raise ConfigError(f"unknown shared data set {name!r}; available: {', '.join(SHARED_SETS)}")
    source, kind = SHARED_SETS[name]
    folder = resolve_data_dir(data_dir)
    rel = get_source(source).local_paths[0]
    if folder is None:
        raise DataUnavailableError(
            f"shared data set {name!r} needs the shared data folder (holding {rel}): pass "
            "data_dir / --data-dir or set GENEINFER_DATA_DIR"
        )
    path = locate(source, data_dir=folder, cache_dir=folder / ".no-cache")
    if path is None:
        raise DataUnavailableError(
            f"shared data set {name!r} not found: expected {folder / rel} "
            "(set --data-dir or GENEINFER_DATA_DIR to the shared data folder)"
        )
    if kind == "soft":
        data = _gpl96_samples(io.read(path, platform="GPL96"))
    else:
        data = io.read(path)
    if kind == "geuvadis":
        data = _with_geuvadis_samples(data, folder)
    if "dataset" not in data.samples:
        data.samples["dataset"] = name
    return data


def _gpl96_samples(data: ExpressionData) -> ExpressionData:
    """Keep the GPL96 samples of a two-platform SOFT family file (GSE781)."""
    samples = data.samples
    plat_col = next((c for c in samples.columns if c.lower() in ("platform", "platform_id",
                                                                  "sample_platform_id")), None)
    if plat_col is not None:
        data = data.select_samples((samples[plat_col].astype(str) == "GPL96").to_numpy())
    title_col = next((c for c in data.samples.columns if c.lower() in ("title", "sample_title")),
                     None)
    if title_col is not None and "label" not in data.samples:
        titles = data.samples[title_col].astype(str)
        data.samples["label"] = np.where(titles.str.startswith("N"), "Normal", "Cancer")
    return data


def _with_geuvadis_samples(data: ExpressionData, folder: Path) -> ExpressionData:
    info_path = locate("geuvadis85_samples", data_dir=folder, cache_dir=folder / ".no-cache")
    if info_path is None:
        return data
    if data.scale == "unknown" or data.gene_id_kind == "unknown":
        data = dataclasses.replace(data, scale="counts", gene_id_kind="ensembl")
    info = pd.read_csv(info_path, sep="\t", index_col=0, dtype=str).reindex(data.sample_ids)
    data.samples["label"] = info["group"].to_numpy()
    data.samples["sex"] = info["group"].to_numpy()
    data.samples["lib_size"] = pd.to_numeric(info["lib.size"]).to_numpy()
    return data
