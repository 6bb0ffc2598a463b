"""Bad input: NaN values, absent landmarks, wrong widths, malformed text; clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from geneinfer.errors import InputFormatError, MissingGenesError
from geneinfer.predict import predict_file

from .helpers import L1000_GCT, generated_profiles, read_matrix, write_gctx


def _write(path, d, *, rows=None, X=None):
    rows = np.arange(len(d["probe"])) if rows is None else rows
    X = d["X"][:, rows] if X is None else X
    return write_gctx(
        path, X, [d["probe"][i] for i in rows], d["sample_ids"],
        gene_meta={"pr_gene_id": np.array([int(d["entrez"][i]) for i in rows]),
                   "pr_gene_symbol": np.array([d["symbol"][i] for i in rows], dtype="S")},
    )


@pytest.fixture(scope="module")
def profiles(shared):
    return generated_profiles(shared, 600, seed=5)


def test_nan_values_error_names_samples_and_genes_or_are_imputed(profiles, model, tmp_path):
    d = profiles
    X = d["X"].copy()
    X[123, 7] = np.nan
    X[150, 7] = np.nan
    X[150, 20] = np.nan
    inp = _write(tmp_path / "nan.gctx", d, X=X)
    out = tmp_path / "out.gctx"
    with pytest.raises(InputFormatError) as err:
        predict_file(model, inp, out, block_size=100, progress=False)
    msg = str(err.value)
    assert "3 missing (NaN) landmark values in 2 samples" in msg and "samples 100..200" in msg
    assert d["sample_ids"][123] in msg and f"{d['entrez'][7]} ({d['symbol'][7]})" in msg
    assert "--missing-landmarks impute" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.gctx"]  # nothing left behind

    res = predict_file(model, inp, out, block_size=100, missing_landmarks="impute",
                       progress=False)
    assert res.n_imputed_values == 3
    filled = np.where(np.isnan(X), model.landmark_means[None, :], X)
    np.testing.assert_allclose(read_matrix(out), model.predict_log2(filled),
                               rtol=1e-5, atol=1e-4)


def test_absent_landmarks_listed_or_imputed_from_training_means(profiles, model, tmp_path,
                                                                capsys):
    d = profiles
    drop = [3, 50, 977]
    keep = np.setdiff1d(np.arange(978), drop)
    inp = _write(tmp_path / "short.gctx", d, rows=keep)
    out = tmp_path / "out.gctx"
    with pytest.raises(MissingGenesError) as err:
        predict_file(model, inp, out, progress=False)
    msg = str(err.value)
    assert msg.startswith("3 landmark genes of the model missing")
    for i in drop:
        assert f"{d['entrez'][i]} ({d['symbol'][i]})" in msg
    assert not out.exists()

    res = predict_file(model, inp, out, missing_landmarks="impute", progress=True)
    assert "3 of 978 landmark genes missing" in capsys.readouterr().err
    assert res.n_imputed_landmarks == 3
    X = d["X"].copy()
    X[:, drop] = model.landmark_means[drop]
    np.testing.assert_allclose(read_matrix(out), model.predict_log2(X), rtol=1e-5, atol=1e-4)


def test_matrix_width_not_matching_gene_list(profiles, model, tmp_path):
    d = profiles
    inp = write_gctx(tmp_path / "wide.gctx", d["X"][:, :977], d["probe"], d["sample_ids"])
    with pytest.raises(InputFormatError, match=r"/0/DATA/0/matrix.*shape \(600, 977\)"):
        predict_file(model, inp, tmp_path / "o.gctx", progress=False)


def test_malformed_gct_row_names_the_line(shared, model, tmp_path):
    lines = (shared / L1000_GCT).read_text().split("\n")
    lines[100] = "\t".join(lines[100].split("\t")[:-3])  # a data row three fields short
    bad = tmp_path / "bad.gct"
    bad.write_text("\n".join(lines))
    expected = r"bad\.gct, line 101: row has 386 fields \(expected 389 \(id \+ 11 metadata"
    with pytest.raises(InputFormatError, match=expected):
        predict_file(model, bad, tmp_path / "o.gctx", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.gct"]
