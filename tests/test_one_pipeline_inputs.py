"""Every command reads an input the same way: one scale detector, one harmoniser.

For each scale case (whole-number log2, MAS5 linear, RMA, counts, TPM, z-scores) ``convert``,
``train``, ``predict``, the study's loader and the Python API name the same scale; and
``predict`` reads RNA-seq counts keyed by Ensembl ids and probe-keyed tables exactly as the
Python API does.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from geneinfer.cli import main
from geneinfer.errors import GeneinferError
from geneinfer.io import read, write
from geneinfer.models.bundle import InferenceModel
from geneinfer.preprocess import harmonize
from geneinfer.study.config import SourceSpec
from geneinfer.study.sources import load_source

GEUVADIS = "rnaseq/geuvadis85_counts.tsv.gz"


def _cases(shared) -> dict[str, tuple[pd.DataFrame, str]]:
    """Genes-in-rows tables of each scale case, from real data, and the scale expected."""
    rma = pd.read_csv(shared / "gpl96" / "bladderbatch.gct.gz", sep="\t", skiprows=2, dtype=str,
                      index_col=0).iloc[4:, 2:32].astype(float)  # 4 metadata rows, 2 columns
    mas5 = pd.read_csv(shared / "gpl96" / "nakayama.gct.gz", sep="\t", skiprows=2, dtype=str,
                       index_col=0).iloc[3:, 2:32].astype(float)
    counts = pd.read_csv(shared / GEUVADIS, sep="\t", index_col=0).iloc[:, :30]
    lengths = np.random.default_rng(0).uniform(500, 5000, size=len(counts))
    rate = counts.div(lengths, axis=0)
    z = rma.sub(rma.mean(axis=1), axis=0).div(rma.std(axis=1, ddof=0), axis=0)
    return {
        "log2-integers": (rma.round(), "log2"),
        "mas5-linear": (mas5, "linear"),
        "rma": (rma, "log2"),
        "counts": (counts, "counts"),
        "tpm": (rate / rate.sum() * 1e6, "linear"),
        "z-scores": (z, "zscore"),
    }


@pytest.fixture(scope="module")
def case_files(shared, tmp_path_factory):
    out = tmp_path_factory.mktemp("scales")
    files = {}
    for name, (table, scale) in _cases(shared).items():
        path = out / f"{name}.tsv"
        table.index.name = "gene_id"
        table.to_csv(path, sep="\t")
        files[name] = (path, scale)
    return files


@pytest.fixture(scope="module")
def array_model(shared, tmp_path_factory):
    """A ridge model trained on two HG-U133A studies (probe-level GCT, RMA and MAS5)."""
    out = tmp_path_factory.mktemp("array-model") / "m"
    assert main(["train", "--model", "ridge", "--panel", "dgex", "--data-dir", str(shared),
                 "--train", str(shared / "gpl96" / "bladderbatch.gct.gz"),
                 str(shared / "gpl96" / "borovecki.gct.gz"), "--out", str(out),
                 "--quiet"]) == 0
    return out


@pytest.mark.parametrize("case", ["log2-integers", "mas5-linear", "rma", "counts", "tpm",
                                  "z-scores"])
def test_every_command_detects_the_same_scale(case, case_files, array_model, shared,
                                              tmp_path, capsys, caplog):
    path, expected = case_files[case]
    said = f"{expected} (detected)"
    # convert reports it (and copies the values as they are)
    assert main(["convert", str(path), str(tmp_path / "c.gct")]) == 0
    assert f"scale {said}" in capsys.readouterr().out
    # the Python API and the study's loader
    data = read(path)
    spec = SourceSpec(name=case, file=str(path))
    if expected == "zscore":
        with pytest.raises(GeneinferError, match="'zscore' scale"):
            harmonize(data, data_dir=shared)
        with pytest.raises(GeneinferError, match="'zscore' scale"):
            load_source(spec, data_dir=shared)
    else:
        assert harmonize(data, data_dir=shared)[1].scale.describe() == said
        assert load_source(spec, data_dir=shared)[1].scale.describe() == said
    # train records it per input; predict says it (a warning, as train does) before predicting
    rc = main(["train", "--model", "ridge", "--panel", "dgex", "--data-dir", str(shared),
               "--train", str(path), "--out", str(tmp_path / "m"), "--quiet"])
    err = capsys.readouterr().err
    if expected == "zscore":
        assert rc == 2 and "'zscore' scale" in err and err.count("\n") == 1
    else:
        assert rc == 0
        info = json.loads((tmp_path / "m" / "model.json").read_text())["info"]
        assert info["inputs"][0]["scale"] == expected
        assert info["inputs"][0]["scale_from"] == "detected"
    caplog.clear()
    # RNA-seq tables lack 103 of the 943 array landmarks (10.9 %): allow imputing them
    rc = main(["predict", "--model", str(array_model), "--input", str(path),
               "--output", str(tmp_path / "p.gct"), "--missing-landmarks", "impute",
               "--max-impute", "0.2", "--data-dir", str(shared)])
    err = capsys.readouterr().err
    if expected == "zscore":
        assert rc == 2 and "'zscore' scale" in err
    else:
        assert rc == 0 and re.search(rf"{re.escape(path.name)}: {re.escape(said)}", caplog.text)


def test_predict_reads_rnaseq_counts_with_ensembl_ids_like_the_api(array_model, shared,
                                                                    tmp_path):
    out = tmp_path / "geuvadis.gctx"
    assert main(["predict", "--model", str(array_model), "--input", str(shared / GEUVADIS),
                 "--output", str(out), "--missing-landmarks", "impute", "--max-impute", "0.2",
                 "--data-dir", str(shared), "--no-progress"]) == 0
    cli = read(out)
    api = InferenceModel.load(array_model).predict(read(shared / GEUVADIS),
                                                  missing_landmarks="impute", data_dir=shared,
                                                  max_impute_fraction=0.2)
    assert cli.n_samples == 85 and list(cli.gene_ids) == list(api.gene_ids)
    np.testing.assert_allclose(cli.values, api.values, rtol=0, atol=1e-5)


def test_predict_reads_a_probe_keyed_table_like_the_api(array_model, shared, tmp_path):
    probes = read(shared / "gpl96" / "nakayama.gct.gz").select_samples(slice(0, 20))
    path = tmp_path / "probes.tsv"
    write(probes.replace(genes=pd.DataFrame(index=probes.gene_ids)), path)  # ids only
    out = tmp_path / "p.gct"
    assert main(["predict", "--model", str(array_model), "--input", str(path), "--output",
                 str(out), "--no-progress"]) == 0
    api = InferenceModel.load(array_model).predict(read(path))
    np.testing.assert_allclose(read(out).values, api.values, rtol=0, atol=1e-5)
    # and the same as predicting the original GCT, whose rows carry their Entrez ids
    gct = InferenceModel.load(array_model).predict(probes)
    np.testing.assert_allclose(api.values, gct.values, rtol=0, atol=1e-5)
