"""What ``geneinfer study`` measures is what ``geneinfer train`` + ``geneinfer predict`` ship.

A study fold is reproduced on the command line from the files the study read and the panel
it wrote; the per-gene predictions must agree. And the study configs run from any folder
when the data folder is given on the command line or in the environment.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

from geneinfer.cli import main
from geneinfer.io import read, write

ROOT = Path(__file__).resolve().parents[2]

DGEX_PARAMS = {"hidden": [64], "max_epochs": 3, "batch_size": 16, "dropout": 0.1}


@pytest.fixture(scope="module")
def files(shared, tmp_path_factory):
    """Two real HG-U133A studies as probe-level GCT files (RMA log2 and MAS5 linear)."""
    out = tmp_path_factory.mktemp("one-pipeline")
    for name, n in (("bladderbatch", 30), ("borovecki", 31)):
        data = read(shared / "gpl96" / f"{name}.gct.gz").select_samples(slice(0, n))
        write(data, out / f"{name}.gct")
    return out


@pytest.fixture(scope="module")
def study_run(files, shared, tmp_path_factory):
    params = ", ".join(f"{k} = {v}" for k, v in DGEX_PARAMS.items())
    config = files / "study.toml"
    config.write_text(textwrap.dedent(f"""\
        [study]
        name = "one-pipeline"

        [[data.sources]]
        name = "bladder"
        file = "bladderbatch.gct"

        [[data.sources]]
        name = "boro"
        file = "borovecki.gct"

        [panel]
        name = "dgex"

        [[models]]
        name = "ridge"

        [[models]]
        name = "dgex"
        params = {{ {params}, device = "cpu", progress = false }}

        [splits]
        leave_one_dataset_out = true
        valid_fraction = 0.2

        [evaluate]
        baseline = "ridge"
        save_predictions = true
        """), encoding="utf-8")
    out = tmp_path_factory.mktemp("study-out")
    assert main(["study", str(config), "--out", str(out), "--data-dir", str(shared),
                 "--no-progress"]) == 0
    return out


@pytest.mark.parametrize("model", ["ridge", "dgex"])
def test_a_study_fold_equals_train_then_predict(files, shared, study_run, tmp_path, model):
    # fold lodo-bladder: trained on borovecki, tested on bladderbatch
    extra = [] if model == "ridge" else [
        arg for k, v in DGEX_PARAMS.items()
        for arg in ("--param", f"{k}={v}".replace(" ", ""))] + ["--device", "cpu"]
    assert main(["train", "--model", model, "--train", str(files / "borovecki.gct"),
                 "--panel", str(study_run / "panel.tsv"), "--valid-fraction", "0.2",
                 "--data-dir", str(shared), "--out", str(tmp_path / "m"), "--quiet",
                 *extra]) == 0
    assert main(["predict", "--model", str(tmp_path / "m"), "--input",
                 str(files / "bladderbatch.gct"), "--output", str(tmp_path / "p.gctx"),
                 "--no-progress"]) == 0
    cli = read(tmp_path / "p.gctx")
    saved = np.load(study_run / "units" / "lodo-bladder" / f"{model}.preds.npz")
    study = saved["bladder.log2"]
    assert study.shape == cli.values.shape == (30, cli.n_genes) and cli.n_genes > 8000
    np.testing.assert_allclose(study, cli.values, rtol=0, atol=1e-5)
    panel = np.loadtxt(study_run / "panel.tsv", dtype=str, skiprows=1)
    assert list(cli.gene_ids) == list(panel[panel[:, 1] == "target", 0])


def test_study_configs_run_from_another_folder(shared, tmp_path, monkeypatch):
    copy = tmp_path / "elsewhere" / "studies"
    shutil.copytree(ROOT / "studies", copy)  # the relative data_dir is wrong here
    monkeypatch.delenv("GENEINFER_DATA_DIR", raising=False)
    rc = main(["study", str(copy / "shared.toml"), "--out", str(tmp_path / "o1"),
               "--no-progress", "--quick"])
    assert rc == 2  # names the missing folder and the fix
    small = (copy / "shared.toml").read_text().replace(
        "quick_targets = 600", "quick_targets = 50")
    small = small.split("# Every registry model")[0] + textwrap.dedent("""\
        [[models]]
        name = "ridge"

        [splits]
        leave_one_dataset_out = true
        external = ["geuvadis"]
        """)
    (copy / "small.toml").write_text(small)
    assert main(["study", str(copy / "small.toml"), "--out", str(tmp_path / "o2"),
                 "--data-dir", str(shared), "--no-progress", "--quick"]) == 0
    monkeypatch.setenv("GENEINFER_DATA_DIR", str(shared))
    assert main(["study", str(copy / "small.toml"), "--out", str(tmp_path / "o3"),
                 "--no-progress", "--quick"]) == 0
    for out in ("o2", "o3"):
        assert (tmp_path / out / "report.html").is_file()
