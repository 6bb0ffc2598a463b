"""Bring your own compendium on the command line: an ARCHS4 download and GTEx's TPM table
with its sample attributes, through ``train`` (in memory and out of core) and ``predict``."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from compendium_data import TISSUES, gtex_ids, write_archs4, write_gtex

from geneinfer import io as gio
from geneinfer.cli import main
from geneinfer.models.bundle import InferenceModel
from geneinfer.public_data import get_source


@pytest.fixture(scope="module")
def data_dir(shared, tmp_path_factory):
    """A data folder with the gene tables and an ARCHS4 file where `data fetch` finds it."""
    folder = tmp_path_factory.mktemp("data")
    shutil.copytree(shared / "genes", folder / "genes")
    (folder / "rnaseq").mkdir()
    write_archs4(folder / "rnaseq" / "human_gene_v2.latest.h5", shared)
    return folder


def test_fetch_then_train_on_the_archs4_file_and_predict(data_dir, tmp_path, capsys):
    assert main(["data", "fetch", "archs4_human_gene", "--data-dir", str(data_dir)]) == 0
    fetched = capsys.readouterr().out.strip()
    assert fetched == str(data_dir / "rnaseq" / "human_gene_v2.latest.h5")
    models = {}
    for how, extra in (("memory", []), ("streamed", ["--out-of-core", "--memory-limit", "1G"])):
        out = tmp_path / how
        rc = main(["train", "--train", "human_gene_v2.latest.h5", "--data-dir", str(data_dir),
                   "--panel", "dgex", "--model", "ridge", "--no-dedup", "--out", str(out),
                   "--select-series", "GSE1", "GSE3", *extra])
        assert rc == 0
        summary = capsys.readouterr().out
        models[how] = InferenceModel.load(out)
        info = models[how].info
        # GSE1 (30) + GSE3 (25, ten of them also GSE4) minus 3 single-cell libraries; in
        # memory each series is scored by a model fitted without it, and the model on all
        assert info["n_train_samples"] + (info["n_valid_samples"] if how == "streamed"
                                          else 0) == 52
        assert "counts (stated) -> log2(CPM + 1)" in info["inputs"][0]["summary"]
    assert "out of core  1 blocks" in summary and "statistics" in summary
    # the series are the groups: one is held out whole ("GSE3,GSE4": 10 samples)
    assert models["streamed"].info["validation"] == "held-out whole group, 10 samples"
    assert models["memory"].landmark_ids == models["streamed"].landmark_ids
    # in memory as well: GSE1, GSE3 and GSE3,GSE4 are the studies hyper-parameters are chosen
    # over and the stored per-gene r is measured on
    for model in models.values():
        assert model.info["groups"]["column"] == "series_id"
        assert model.info["groups"]["n_groups"] == 3
    assert models["memory"].info["validation_rule"] == "out-of-group"
    assert models["memory"].info["selection"]["method"] == "leave-one-group-out"
    capsys.readouterr()
    rc = main(["train", "--train", "human_gene_v2.latest.h5", "--data-dir", str(data_dir),
               "--panel", "dgex", "--model", "ridge", "--no-dedup", "--out",
               str(tmp_path / "one-group"), "--select-series", "GSE1", "GSE3", "--groups",
               "none", "--out-of-core", "--memory-limit", "1G", "--quiet"])
    assert rc == 0
    info = InferenceModel.load(tmp_path / "one-group").info
    assert info["groups"]["n_groups"] == 1 and info["validation_rule"] == "holdout"
    assert info["validation"].startswith("held-out ") and "random" in info["validation"]
    pred = tmp_path / "pred.gctx"
    assert main(["predict", "--model", str(tmp_path / "streamed"), "--input",
                 str(data_dir / "rnaseq" / "human_gene_v2.latest.h5"), "--output", str(pred),
                 "--data-dir", str(data_dir), "--no-progress"]) == 0
    out = gio.read(pred)
    assert out.n_samples == 80 and np.isfinite(out.values).all()
    assert out.n_genes == len(models["streamed"].target_ids)


def test_registered_file_not_fetched_yet_names_the_fetch(shared, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["train", "--train", "human_gene_v2.latest.h5", "--data-dir", str(empty),
               "--out", str(tmp_path / "m"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "run `geneinfer data fetch archs4_human_gene` first" in err


def test_gtex_tissues_are_groups_in_and_out_of_core(shared, data_dir, tmp_path, capsys):
    gct, attrs = write_gtex(tmp_path, shared)
    data = gio.read(gct, sample_attributes=attrs)
    assert data.samples["SMTSD"].tolist()[:4] == list(TISSUES)
    assert list(data.sample_ids) == gtex_ids(85)
    with gio.open_blocks(gct, sample_attributes=attrs) as reader:
        assert reader.group_column == "SMTSD"
        assert reader.samples(2, 4)["SMTS"].tolist() == ["Muscle", "Liver"]
    out = tmp_path / "gtex-model"
    rc = main(["train", "--train", str(gct), "--sample-attributes", str(attrs), "--panel",
               "dgex", "--model", "ols", "--out", str(out), "--data-dir", str(data_dir),
               "--out-of-core", "--memory-limit", "1G", "--no-dedup"])
    assert rc == 0
    model = InferenceModel.load(out)
    assert model.info["validation"].startswith("held-out whole group")  # a tissue
    assert model.info["groups"]["column"] == "SMTSD"
    rc = main(["train", "--train", str(gct), "--sample-attributes", str(attrs), "--panel",
               "dgex", "--model", "ols", "--out", str(tmp_path / "in-memory"), "--data-dir",
               str(data_dir), "--no-dedup", "--quiet"])
    assert rc == 0
    groups = InferenceModel.load(tmp_path / "in-memory").info["groups"]
    assert groups["column"] == "SMTSD" and groups["n_groups"] == len(TISSUES)
    assert model.info["inputs"][0]["scale"] == "linear"  # TPM: log2(max(x, 1))
    assert model.info["inputs"][0]["gene_ids"] == "ensembl"  # versioned ids
    pred = tmp_path / "gtex-pred.gct"
    assert main(["predict", "--model", str(out), "--input", str(gct), "--output", str(pred),
                 "--data-dir", str(data_dir), "--no-progress"]) == 0
    assert gio.read(pred).n_samples == 85
    capsys.readouterr()
    rc = main(["train", "--train", str(gct), "--sample-attributes", str(shared / "genes" /
               "dgex_map_lm.txt"), "--out", str(tmp_path / "bad"), "--data-dir",
               str(data_dir), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "lists none of the samples" in err and not (tmp_path / "bad").exists()


def test_memory_limit_too_small_for_a_block_is_one_line(data_dir, tmp_path, capsys):
    out = tmp_path / "model"
    for limit, message in (("300M", "--memory-limit 300.0 MB is too small for one block of "),
                           ("lots", "--memory-limit 'lots': expected a size such as 8G")):
        rc = main(["train", "--train", str(data_dir / "rnaseq" / "human_gene_v2.latest.h5"),
                   "--out-of-core", "--memory-limit", limit, "--out", str(out), "--data-dir",
                   str(data_dir), "--quiet"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and message in err, err
        assert not out.exists() and not (tmp_path / ".model.checkpoints").exists()


def test_registry_has_full_platform_tables_and_gtex_attributes():
    gpl = get_source("geo_platform").resolve("GPL570")
    assert gpl.url == ("https://www.ncbi.nlm.nih.gov/geo/query/acc.cgi?acc=GPL570&targ=self"
                       "&form=text&view=full")
    assert gpl.filename == "GPL570.soft" and "genes/GPL570.soft" in gpl.local_paths
    attrs = get_source("gtex_sample_attributes").resolve()
    assert attrs.url == ("https://storage.googleapis.com/adult-gtex/annotations/v8/"
                         "metadata-files/GTEx_Analysis_v8_Annotations_SampleAttributesDS.txt")
