"""What users open: CMap-ready GCTX rows and columns, full profiles with the landmarks,
scanpy-ready h5ad, provenance, and the command's messages (--no-progress, --quiet, rate)."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

import geneinfer.io as gio
from geneinfer.cli import main
from geneinfer.predict import predict_file
from geneinfer.predict.plan import DEFAULT_RELIABLE_R, INFERRED_VALUES, WITH_LANDMARKS_VALUES

from .helpers import L1000_GCT, read_l1000_gct

ROOT = Path(__file__).resolve().parents[2]


def _column(f: h5py.File, name: str) -> np.ndarray:
    values = f[name][:]
    return np.array([v.decode() for v in values]) if values.dtype.kind == "S" else values


def test_gctx_rows_and_columns_are_cmap_metadata(shared, model, tmp_path):
    out = tmp_path / "pred.gctx"
    predict_file(model, shared / L1000_GCT, out, progress=False)
    r = model.gene_metrics["valid_r"].to_numpy()
    with h5py.File(out, "r") as f:
        rows = f["0/META/ROW"]
        assert rows["pr_gene_id"].dtype.kind == "i"  # Entrez ids as CMap stores them
        assert [str(v) for v in rows["pr_gene_id"][:]] == model.target_ids
        assert list(_column(f, "0/META/ROW/pr_gene_symbol")) == model.target_symbols
        assert not rows["pr_is_lm"][:].any()
        np.testing.assert_array_equal(rows["pr_is_reliable"][:], r >= DEFAULT_RELIABLE_R)
        assert set(_column(f, "0/META/COL/values")) == {INFERRED_VALUES}
        prov = json.loads(f.attrs["geneinfer_provenance"])
    assert prov["model"] == "ridge" and prov["values"] == INFERRED_VALUES
    assert prov["geneinfer_version"] and prov["model_checksum"]
    # the 'values' text is read back as the scale, so the file feeds the next step as is
    assert gio.read(out).scale == "log2"


def test_reliable_flag_follows_min_r_or_reliable_r(shared, model, tmp_path):
    r = model.gene_metrics["valid_r"].to_numpy()
    out = tmp_path / "a.gctx"
    predict_file(model, shared / L1000_GCT, out, min_r=0.6, progress=False)
    with h5py.File(out, "r") as f:
        assert f["0/META/ROW/pr_is_reliable"][:].all()  # all kept genes pass --min-r
        assert len(f["0/META/ROW/id"]) == (r >= 0.6).sum()
    out = tmp_path / "b.gctx"
    predict_file(model, shared / L1000_GCT, out, reliable_r=0.8, progress=False)
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["0/META/ROW/pr_is_reliable"][:], r >= 0.8)


def test_include_landmarks_writes_cmap_full_profiles(shared, model, tmp_path):
    out = tmp_path / "full.gctx"
    res = predict_file(model, shared / L1000_GCT, out, include_landmarks=True,
                       block_size=100, progress=False)
    X = read_l1000_gct(shared)
    n_lm = len(model.landmark_ids)
    assert res.n_genes == n_lm + len(model.target_ids)
    with h5py.File(out, "r") as f:
        Y = f["0/DATA/0/matrix"][:]
        is_lm = f["0/META/ROW/pr_is_lm"][:]
        ids = [str(v) for v in f["0/META/ROW/pr_gene_id"][:]]
        assert set(_column(f, "0/META/COL/values")) == {WITH_LANDMARKS_VALUES}
    np.testing.assert_array_equal(is_lm, np.r_[np.ones(n_lm), np.zeros(len(model.target_ids))])
    assert ids == [*model.landmark_ids, *model.target_ids]
    np.testing.assert_array_equal(Y[:, :n_lm], X)  # the measured landmarks, unchanged
    np.testing.assert_allclose(Y[:, n_lm:], model.predict_log2(X), rtol=1e-5, atol=1e-4)


def test_small_outputs_carry_the_same_metadata(shared, model, tmp_path):
    out = tmp_path / "pred.gct"
    predict_file(model, shared / L1000_GCT, out, include_landmarks=True, progress=False)
    back = gio.read(out)
    assert back.scale == "log2"
    assert list(back.genes["pr_is_lm"].astype(int)[:3]) == [1, 1, 1]
    assert list(back.genes["pr_gene_symbol"][-2:]) == model.target_symbols[-2:]
    assert set(back.samples["values"]) == {WITH_LANDMARKS_VALUES}


def test_h5ad_is_scanpy_ready(shared, model, tmp_path):
    sc = pytest.importorskip("scanpy")
    import matplotlib

    matplotlib.use("Agg")
    out = tmp_path / "pred.h5ad"
    predict_file(model, shared / L1000_GCT, out, include_landmarks=True, progress=False)
    adata = sc.read_h5ad(out)
    assert adata.var_names.is_unique
    assert "GAPDH" in adata.var_names  # a landmark, measured
    target = model.target_symbols[0]
    ax = sc.pl.violin(adata, ["GAPDH", target], show=False)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["GAPDH", target]
    assert str(adata.var.loc["GAPDH", "pr_gene_id"]) == "2597"
    assert adata.uns["geneinfer"]["model"] == "ridge"
    assert adata.uns["geneinfer"]["values"] == WITH_LANDMARKS_VALUES
    # the Entrez ids instead, when asked
    out_ids = tmp_path / "ids.h5ad"
    predict_file(model, shared / L1000_GCT, out_ids, var_names="id", progress=False)
    assert list(sc.read_h5ad(out_ids).var_names) == model.target_ids


def _cmappy_python() -> str | None:
    """A Python with cmapPy (it needs numpy < 2): $GENEINFER_CMAPPY_PYTHON or the
    ``.venv-cmappy`` that ``make test`` builds."""
    candidates = [os.environ.get("GENEINFER_CMAPPY_PYTHON"), ROOT / ".venv-cmappy/bin/python"]
    for python in candidates:
        if python and Path(python).exists():
            ok = subprocess.run([str(python), "-c", "import cmapPy.pandasGEXpress.parse"],
                                capture_output=True)
            if ok.returncode == 0:
                return str(python)
    return None


CMAPPY_READ = """
import json, sys
from cmapPy.pandasGEXpress.parse import parse
g = parse(sys.argv[1])
print(json.dumps({"rows": g.data_df.index.tolist(), "cols": g.data_df.columns.tolist(),
                  "first": g.data_df.iloc[:, 0].tolist(),
                  "row_meta": g.row_metadata_df.columns.tolist(),
                  "is_lm": g.row_metadata_df["pr_is_lm"].astype(int).tolist(),
                  "values": sorted(set(g.col_metadata_df["values"]))}))
"""


def test_cmappy_parses_our_gctx(shared, model, tmp_path):
    python = _cmappy_python()
    if python is None:
        pytest.skip("cmapPy does not import on numpy 2; `make test` builds .venv-cmappy "
                    "(cmapPy 4.0.1, numpy < 2) for this test")
    out = tmp_path / "full.gctx"
    predict_file(model, shared / L1000_GCT, out, include_landmarks=True, progress=False)
    run = subprocess.run([python, "-c", CMAPPY_READ, str(out)], capture_output=True, text=True,
                         check=True)
    got = json.loads(run.stdout)
    ours = gio.read(out)
    assert got["rows"] == [str(g) for g in ours.gene_ids]
    assert got["cols"] == [str(s) for s in ours.sample_ids]
    np.testing.assert_allclose(got["first"], ours.values[0], rtol=1e-6)
    assert {"pr_gene_id", "pr_gene_symbol", "pr_is_lm", "pr_is_reliable"} <= set(got["row_meta"])
    assert sum(got["is_lm"]) == len(model.landmark_ids)
    assert got["values"] == [WITH_LANDMARKS_VALUES]


# ---------------------------------------------------------------------- messages
@pytest.fixture(scope="module")
def linear_input(shared, tmp_path_factory) -> Path:
    """The real L1000 profiles as linear intensities (2**log2), genes by Entrez id."""
    X = read_l1000_gct(shared)
    entrez = pd.read_csv(shared / L1000_GCT, sep="\t", skiprows=2, usecols=["pr_gene_id"],
                         dtype=str, low_memory=False)["pr_gene_id"].iloc[35:]
    table = pd.DataFrame(np.exp2(X).T, index=entrez.to_numpy(),
                         columns=[f"s{i}" for i in range(len(X))])
    path = tmp_path_factory.mktemp("linear") / "linear.tsv"
    table.rename_axis("gene_id").to_csv(path, sep="\t")
    return path


def _predict_cli(model_dir, source, out, *extra) -> list[str]:
    return ["predict", "--model", str(model_dir), "--input", str(source), "--output",
            str(out), *extra]


def test_linear_input_is_converted_with_one_notice_unless_quiet(model, model_dir, linear_input,
                                                                 tmp_path, capfd, caplog):
    args = _predict_cli(model_dir, linear_input, tmp_path / "a.gctx", "--no-progress")
    assert main(args) == 0
    # said once, as train says it (a warning), and kept with --no-progress: it is not progress
    notices = [r.getMessage() for r in caplog.records if "linear" in r.getMessage()]
    assert len(notices) == 1 and "-> log2" in notices[0] and r"linear.tsv" in notices[0]
    caplog.clear()
    capfd.readouterr()
    assert main(_predict_cli(model_dir, linear_input, tmp_path / "b.gctx", "--quiet")) == 0
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    a, b = gio.read(tmp_path / "a.gctx"), gio.read(tmp_path / "b.gctx")
    np.testing.assert_array_equal(a.values, b.values)
    table = pd.read_csv(linear_input, sep="\t", index_col=0)
    log2 = np.log2(table.to_numpy(dtype=np.float64).T).astype(np.float32)
    np.testing.assert_allclose(a.values, model.predict_log2(log2), rtol=1e-4, atol=1e-3)


def test_closing_rate_is_the_prediction_rate(shared, model, model_dir, tmp_path, capfd):
    """The closing line reports what the bar measured (profiles predicted / time spent
    predicting), not the profiles over the whole run with model loading and planning."""
    res = predict_file(model_dir, shared / L1000_GCT, tmp_path / "api.gctx", block_size=100,
                       progress=False)
    assert res.n_predicted == 377 and 0 < res.predict_seconds < res.seconds
    assert res.rate == pytest.approx(377 / res.predict_seconds)
    assert main(_predict_cli(model_dir, shared / L1000_GCT, tmp_path / "p.gctx",
                             "--block-size", "100")) == 0
    out = capfd.readouterr().out
    assert re.search(r"predicted 377 in [\d.]+ s \([\d,]+ profiles/s\); [\d.]+ s in all", out), out


def test_quiet_is_accepted_by_every_command(tmp_path):
    # one switch for all commands (argparse exits 2 on an unknown option)
    for command in ("train", "predict", "study", "convert", "demo"):
        with pytest.raises(SystemExit) as exc:
            main([command, "--quiet", "--help"])
        assert exc.value.code == 0
