"""The data sets of a study: read, select samples, harmonise (as ``geneinfer train`` does)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from geneinfer.errors import ConfigError, GeneinferError
from geneinfer.examples import load_embedded
from geneinfer.expression import ExpressionData
from geneinfer.io import detect_format, read
from geneinfer.preprocess import HarmonizeReport, harmonize
from geneinfer.public_data import fetch
from geneinfer.study.config import SourceSpec


def _read_source(spec: SourceSpec, data_dir: Path | None) -> ExpressionData:
    """Read a source: a file, a path in the data folder, a registered public data set
    (data folder first, then cache, then download), a GEO series or an embedded set."""
    if spec.embedded:
        return load_embedded([spec.embedded])[spec.embedded]
    if spec.file:
        path = Path(spec.file)
    elif spec.shared and "/" in spec.shared:
        path = data_dir / spec.shared  # type: ignore[operator]
    elif spec.geo:
        path = fetch("geo_soft", accession=spec.geo, data_dir=data_dir)
    else:
        path = fetch(str(spec.shared), accession=spec.accession, data_dir=data_dir)
    opts: dict[str, Any] = {"format": spec.format} if spec.format else {}
    if spec.platform and detect_format(path, format=spec.format) == "soft":
        opts["platform"] = spec.platform  # a SOFT family file may hold several platforms
    return read(path, **opts)


def _select(data: ExpressionData, spec: SourceSpec) -> ExpressionData:
    if spec.platform and "platform" in data.samples:
        keep = data.samples["platform"].astype(str).to_numpy() == spec.platform
        if not keep.any():
            raise ConfigError(
                f"data source {spec.name!r}: no sample on platform {spec.platform!r} "
                f"(found {', '.join(sorted(set(data.samples['platform'].astype(str))))})"
            )
        data = data.select_samples(keep)
    if spec.max_samples is not None and data.n_samples > spec.max_samples:
        data = data.select_samples(slice(0, spec.max_samples))
    return data


def load_source(spec: SourceSpec, *, data_dir: Path | None = None, where: str = "study config"
                ) -> tuple[ExpressionData, HarmonizeReport]:
    """One data source harmonised (log2, Entrez genes) exactly as ``geneinfer train`` reads
    a file, with sample metadata ``dataset``, ``platform`` and ``label``.

    Sample ids are prefixed with the source's name, so two data sets never collide. A
    declared scale that the values contradict is a configuration error.
    """
    data = _select(_read_source(spec, data_dir), spec)
    try:
        data, report = harmonize(data, scale=spec.scale, data_dir=data_dir,
                                 annotation=spec.annotation, platform=spec.platform)
    except ConfigError:
        raise
    except GeneinferError as exc:
        raise ConfigError(
            f"{where}: data source {spec.name!r}: {exc}"
            + ("; fix its scale in [[data.sources]]" if spec.scale else "")
        ) from None
    samples = data.samples.copy()
    samples["dataset"] = spec.name
    samples["platform"] = spec.platform or ""
    samples["label"] = (samples[spec.label_column].astype(str) if spec.label_column in samples
                        else "na")
    ids = pd.Index([f"{spec.name}:{s}" for s in data.sample_ids])
    samples.index = ids
    return data.replace(sample_ids=ids, samples=samples, source=spec.name), report


def complete_genes(data: ExpressionData, genes: list[str]) -> set[str]:
    """The ``genes`` that ``data`` measures in every sample."""
    sub = data.select_genes(genes, missing="drop")
    return set(sub.gene_ids[np.isfinite(sub.values).all(axis=0)])
