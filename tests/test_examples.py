"""Embedded default dataset and shared-data loaders."""

from __future__ import annotations

import gzip
import hashlib
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geneinfer.errors import ConfigError, DataUnavailableError
from geneinfer.examples import embedded_info, load_embedded, load_shared
from geneinfer.genes import load_probe_annotation
from geneinfer.public_data import embedded_path

rng = np.random.default_rng(7)


@pytest.fixture
def no_shared(tmp_path, monkeypatch) -> Path:
    """No shared data anywhere: empty data dir, working directory without ../shared."""
    empty = tmp_path / "empty"
    (empty / "work").mkdir(parents=True)
    monkeypatch.setenv("GENEINFER_DATA_DIR", str(empty))
    monkeypatch.setenv("GENEINFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(empty / "work")
    return empty


def test_embedded_loads_without_shared_data(no_shared):
    data = load_embedded()
    assert set(data) == {"bladderbatch", "gse781", "geuvadis"}
    bb, gse, geu = data["bladderbatch"], data["gse781"], data["geuvadis"]
    assert bb.shape == (57, 12633) and bb.scale == "log2" and bb.gene_id_kind == "entrez"
    assert gse.shape == (17, 12633) and gse.scale == "linear"
    assert gse.gene_ids.equals(bb.gene_ids)  # same gene order: ready to concatenate
    assert geu.shape == (85, 10101) and geu.scale == "counts" and geu.gene_id_kind == "ensembl"
    assert bb.samples["label"].value_counts().to_dict() == {"Cancer": 40, "Biopsy": 9,
                                                            "Normal": 8}
    assert gse.samples["label"].value_counts().to_dict() == {"Cancer": 9, "Normal": 8}
    assert geu.samples["label"].value_counts().to_dict() == {"Male": 44, "Female": 41}
    for name, d in data.items():
        assert (d.samples["dataset"] == name).all()
        assert d.n_missing() == 0
    assert bb.genes.loc["2597", "symbol"] == "GAPDH"
    assert int(bb.genes["n_probes"].sum()) == 20133
    # The GPL96 annotation is embedded too.
    assert load_probe_annotation("GPL96").loc["1007_s_at", "entrez"] == "780"
    with pytest.raises(DataUnavailableError, match="nakayama"):
        load_shared("nakayama")


def test_embedded_files_match_manifest_and_stay_small():
    info = embedded_info()
    total = 0
    for entry in info.values():
        path = embedded_path(entry["file"])
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        assert entry["license"] in ("Artistic-2.0", "MIT", "GEO public data (NCBI)",
                                    "GEO public data (LINCS / Broad Institute)")
        total += path.stat().st_size
    assert total < 8e6
    with pytest.raises(ConfigError):
        load_embedded(["nakayama"])


def _gct_rows(path: Path, probes: set[str]) -> dict[str, tuple[str, list[float]]]:
    """probe -> (Entrez, values) parsed with Python's float for the chosen rows only."""
    out = {}
    with gzip.open(path, "rt") as fh:
        for line in fh:
            fields = line.rstrip("\n").split("\t")
            if fields[0] in probes:
                out[fields[0]] = (fields[2], [float(v) for v in fields[3:]])
    return out


def test_embedded_bladderbatch_equals_mean_of_original_probes(shared):
    bb = load_embedded(["bladderbatch"])["bladderbatch"]
    ann = load_probe_annotation("GPL96")
    genes = rng.choice(bb.gene_ids.to_numpy(), 150, replace=False)
    probes_of = ann[ann["entrez"].isin(genes)].groupby("entrez").groups
    rows = _gct_rows(shared / "gpl96" / "bladderbatch.gct.gz",
                     {p for g in genes for p in probes_of[g]})
    for g in genes:
        vals = np.array([rows[p][1] for p in probes_of[g]], dtype=np.float32)
        expected = vals.astype(np.float64).mean(axis=0).astype(np.float32)
        np.testing.assert_array_equal(bb.to_frame()[g].to_numpy(), expected)
        if len(probes_of[g]) == 1:  # a one-probe gene is the probe's value, exactly
            np.testing.assert_array_equal(bb.to_frame()[g].to_numpy(), vals[0])


def test_embedded_gse781_equals_original_soft_values(shared):
    gse = load_embedded(["gse781"])["gse781"]
    ann = load_probe_annotation("GPL96")
    one_probe = ann[ann["entrez"].notna()].groupby("entrez").filter(lambda t: len(t) == 1)
    pick = one_probe.sample(100, random_state=3)
    wanted = set(pick.index)
    values: dict[str, dict[str, float]] = {}
    ours = set(gse.sample_ids)
    with gzip.open(shared / "geo" / "GSE781_family.soft.gz", "rt") as fh:
        text = fh.read()
    for block in text.split("\n^SAMPLE = ")[1:]:
        sample = block[: block.index("\n")].strip()
        if sample not in ours:
            continue
        for line in block.split("\n"):
            probe, _, rest = line.partition("\t")
            if probe in wanted:
                values.setdefault(probe, {})[sample] = float(rest.split("\t", 1)[0])
    assert len(values) == 100
    frame = gse.to_frame()
    for probe, gene in pick["entrez"].items():
        expected = np.array([values[probe][s] for s in gse.sample_ids], dtype=np.float32)
        np.testing.assert_array_equal(frame[gene].to_numpy(), expected)


def test_embedded_geuvadis_counts_are_exact(shared):
    geu = load_embedded(["geuvadis"])["geuvadis"]
    raw = pd.read_csv(shared / "rnaseq" / "geuvadis85_counts.tsv.gz", sep="\t", index_col=0)
    assert list(geu.gene_ids) == list(raw.index)
    assert list(geu.sample_ids) == list(raw.columns)
    np.testing.assert_array_equal(geu.values, raw.to_numpy().T.astype(np.float32))
    info = pd.read_csv(shared / "rnaseq" / "geuvadis85_samples.tsv", sep="\t", index_col=0)
    assert (geu.samples["lib_size"] == info.loc[geu.sample_ids, "lib.size"]).all()


@pytest.mark.parametrize("name, shape, kind", [
    ("bladderbatch", (57, 22283), "probe"),
    ("geuvadis", (85, 10101), "ensembl"),
    ("test_l1000", (377, 978), "probe"),
])
def test_load_shared_reads_the_shared_sets(shared, name, shape, kind):
    data = load_shared(name, data_dir=shared)
    assert data.shape == shape and data.gene_id_kind == kind
    assert "dataset" in data.samples
    if name == "geuvadis":
        emb = load_embedded(["geuvadis"])["geuvadis"]
        np.testing.assert_array_equal(data.values, emb.values)
        assert (data.samples["label"] == emb.samples["label"]).all()


def test_load_shared_uses_env_data_dir_and_rejects_unknown_sets(shared, monkeypatch):
    monkeypatch.setenv("GENEINFER_DATA_DIR", str(shared))
    assert load_shared("geuvadis").n_samples == 85
    with pytest.raises(ConfigError, match="unknown shared data set"):
        load_shared("gtex")
    assert list(itertools.islice(embedded_path("").glob("*.npz"), 5))
