"""``geneinfer demo`` runs offline from the embedded data and prints a model comparison."""

from __future__ import annotations

import re
import socket

import numpy as np
import pytest

from geneinfer.cli import main
from geneinfer.commands import demo
from geneinfer.models.bundle import InferenceModel

ROW = re.compile(r"^(ols|ridge|knn-ge|dgex)\s+([0-9.]+)\s+(-?[0-9.]+)\s+(\(baseline\)|[0-9.]+%)$")


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No data folder, an empty cache, CWD without ../shared, and no network at all."""
    empty = tmp_path / "empty"
    empty.mkdir()
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.setenv("GENEINFER_DATA_DIR", str(empty))
    monkeypatch.setenv("GENEINFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(work)

    def no_network(*args, **kwargs):
        raise AssertionError("the demo tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    return tmp_path


def test_demo_offline_prints_comparison_and_saves_models(offline, capsys):
    out_dir = offline / "models"
    assert main(["demo", "--quick", "--out", str(out_dir)]) == 0
    text = capsys.readouterr().out
    assert "panel: the LINCS gene table" in text and "data-driven landmarks" in text
    assert "train bladderbatch (57 samples) -> test GSE781 (17 samples)" in text
    rows = {m.group(1): m.groups()[1:] for m in map(ROW.match, text.splitlines()) if m}
    assert set(rows) == {"ols", "ridge", "knn-ge", "dgex"}
    assert rows["ols"][2] == "(baseline)"
    for mae, r, _ in rows.values():
        assert 0.3 < float(mae) < 1.5 and -1 <= float(r) <= 1
    assert "OLS (LINCS baseline) per-gene standardized MAE: p10" in text
    assert "hardest genes:" in text
    assert "RNA-seq (GEUVADIS): skipped; no Ensembl -> Entrez gene map" in text
    # the printed OLS figure is what the saved OLS model scores on the test study
    studies = demo.load_demo_studies()
    ols = InferenceModel.load(out_dir / "ols-bladderbatch")
    assert len(ols.target_ids) == demo.QUICK_TARGETS
    per_gene = demo.evaluate_on(ols, studies["GSE781"])
    assert float(rows["ols"][0]) == pytest.approx(np.nanmean(per_gene["mae_std"]), abs=6e-5)
    assert sorted(p.name for p in out_dir.iterdir()) == [
        f"{m}-bladderbatch" for m in ("dgex", "knn-ge", "ols", "ridge")
    ]


def test_demo_uses_l1000_when_the_lincs_table_is_local(shared):
    studies = demo.load_demo_studies()
    train, test = studies["bladderbatch"], studies["GSE781"]
    genes = list(train.gene_ids[train.gene_ids.isin(test.gene_ids)])
    choice = demo.choose_panel(train, genes, data_dir=shared)
    assert choice.name == "l1000"
    assert 900 < len(choice.landmarks) <= 978 and set(choice.landmarks) <= set(genes)
    assert not set(choice.landmarks) & set(choice.targets)
    assert "LINCS L1000 landmarks" in choice.reason


def test_rnaseq_section_data_when_an_ensembl_map_is_local(shared):
    parts = demo.load_rnaseq_split(shared)
    train, test = parts[demo.RNASEQ[0]], parts[demo.RNASEQ[1]]
    assert (train.n_samples, test.n_samples) == (68, 17)
    assert train.gene_id_kind == "entrez" and train.scale == "log2"
    assert not set(train.sample_ids) & set(test.sample_ids)
