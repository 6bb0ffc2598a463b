"""``geneinfer predict`` on the command line: real L1000 input, options, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest

from geneinfer.cli import main
from predict.helpers import L1000_GCT, L1000_GCTX, fit_model, read_l1000


@pytest.fixture(scope="module")
def saved_model(shared, tmp_path_factory):
    model = fit_model(shared, n_targets=120)
    return model, model.save(tmp_path_factory.mktemp("cli") / "model")


def test_cli_predicts_real_l1000_file(shared, saved_model, tmp_path, capsys):
    model, mdir = saved_model
    out = tmp_path / "pred.gctx"
    code = main(["predict", "--model", str(mdir), "--input", str(shared / L1000_GCTX),
                 "--output", str(out), "--block-size", "100", "--min-r", "0.5",
                 "--with-reliability"])
    assert code == 0
    captured = capsys.readouterr()
    keep = np.flatnonzero(model.gene_metrics["valid_r"].to_numpy() >= 0.5)
    assert f"{len(keep)} of 120 target genes pass valid_r >= 0.5" in captured.err
    assert f"wrote 377 profiles x {len(keep)} genes" in captured.out
    expected = model.predict_log2(read_l1000(shared)["X"])[:, keep]
    with h5py.File(out, "r") as f:
        np.testing.assert_allclose(f["0/DATA/0/matrix"][:], expected, rtol=1e-5, atol=1e-4)
        assert set(f["0/META/ROW"]) == {"id", "pr_gene_id", "pr_gene_symbol", "pr_is_lm",
                                          "pr_is_reliable", "valid_r", "valid_mae"}


def test_cli_format_option_and_missing_landmarks_error(shared, saved_model, tmp_path):
    _, mdir = saved_model
    out = tmp_path / "pred.out"
    assert main(["predict", "--model", str(mdir), "--input", str(shared / L1000_GCT),
                 "--output", str(out), "--format", "h5ad", "--no-progress"]) == 0
    with h5py.File(out, "r") as f:
        assert f["X"].shape == (377, 120)
    # a file of genes the model does not know: exit 2 with a one-line message
    bad = tmp_path / "other.tsv"
    bad.write_text("gene_id\ts1\ts2\n1\t5.0\t6.0\n2\t7.0\t8.0\n")
    r = subprocess.run([sys.executable, "-m", "geneinfer", "predict", "--model", str(mdir),
                        "--input", str(bad), "--output", str(tmp_path / "x.gctx")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.startswith("geneinfer: error: 978 landmark genes of the model missing")
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.gctx").exists()


def test_cli_rejects_bad_options(shared, saved_model, tmp_path, capsys):
    _, mdir = saved_model
    assert main(["predict", "--model", str(mdir), "--input", str(shared / L1000_GCTX),
                 "--output", str(tmp_path / "p.xyz")]) == 2
    assert "cannot tell the output format" in capsys.readouterr().err
    assert main(["predict", "--model", str(tmp_path / "nomodel"), "--input",
                 str(shared / L1000_GCTX), "--output", str(tmp_path / "p.gctx")]) == 2
    assert "no such model" in capsys.readouterr().err
