"""``geneinfer train`` on real shared files (RMA log2 + MAS5 linear), then prediction."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
import pytest

from geneinfer.cli import main
from geneinfer.commands.train import parse_params
from geneinfer.errors import MissingGenesError
from geneinfer.genes import collapse_probes
from geneinfer.io import read, write
from geneinfer.models.bundle import MODEL_JSON, InferenceModel
from geneinfer.preprocess import to_log2

N_DROPPED = 3


@pytest.fixture(scope="module")
def trained(shared, tmp_path_factory):
    """Train once: ridge on bladderbatch (RMA log2) + nakayama (MAS5 linear), L1000 panel."""
    out = tmp_path_factory.mktemp("cli") / "ridge-model"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):  # capsys is function scoped
        rc = main(
            [
                "train",
                "--model",
                "ridge",
                "--panel",
                "l1000",
                "--train",
                str(shared / "gpl96" / "bladderbatch.gct.gz"),
                str(shared / "gpl96" / "nakayama.gct.gz"),
                "--out",
                str(out),
                "--data-dir",
                str(shared),
                "--no-dedup",  # dedup is covered in tests/train; keeps this test fast
            ]
        )
    assert rc == 0
    return out, InferenceModel.load(out), buf.getvalue()


@pytest.fixture(scope="module")
def lincs(shared) -> pd.DataFrame:
    return pd.read_csv(shared / "genes" / "GSE92742_Broad_LINCS_gene_info.txt", sep="\t", dtype=str)


def test_landmarks_are_lincs_entrez_ids(trained, lincs):
    path, model, _ = trained
    assert (path / MODEL_JSON).is_file()
    lm = set(lincs.loc[lincs["pr_is_lm"] == "1", "pr_gene_id"])
    assert len(lm) == 978
    assert set(model.landmark_ids) <= lm
    missing = model.info["panel"]["landmarks_missing"]
    assert len(model.landmark_ids) + len(missing) == 978
    assert set(missing) == lm - set(model.landmark_ids)  # every absent landmark is listed
    assert set(model.target_ids) <= set(lincs.loc[lincs["pr_is_lm"] == "0", "pr_gene_id"])
    sym = dict(zip(lincs["pr_gene_id"], lincs["pr_gene_symbol"]))
    agree = np.mean([sym[g] == s for g, s in zip(model.landmark_ids, model.landmark_symbols)])
    assert agree > 0.95  # GPL96 symbols match LINCS symbols for nearly all landmarks
    # two studies: each scored by a model fitted on the other, then fitted on both
    assert model.info["n_train_samples"] == model.info["n_valid_samples"] == 57 + 105
    assert model.info["validation_rule"] == "out-of-group"
    assert model.info["valid_r_median"] > 0.3


def test_summary_lists_missing_landmarks(trained):
    _, model, out = trained
    missing = model.info["panel"]["landmarks_missing"]
    assert missing and f"missing      {len(missing)} landmarks: {missing[0]}" in out
    assert f"{len(model.landmark_ids)} of 978 landmarks found" in out
    assert "samples      162 train in 2 group(s) of dataset" in out
    assert "selection    leave-one-group-out over 2 groups; alpha" in out
    assert "scored on    162 profiles: out-of-group" in out
    assert "validation   MAE" in out and "median r" in out
    assert f"saved        {trained[0]}" in out


def test_param_values_are_json_or_text():
    assert parse_params(["alphas=[1, 10]", "alpha-per-gene=true", "precision=float64"]) == {
        "alphas": (1, 10),
        "alpha_per_gene": True,
        "precision": "float64",
    }


@pytest.fixture(scope="module")
def query(shared, trained, tmp_path_factory):
    """Borovecki arrays (not used in training) with all probes of 3 landmarks removed."""
    _, model, _ = trained
    raw = read(shared / "gpl96" / "borovecki.gct.gz")
    genes = collapse_probes(to_log2(raw))
    dropped = [g for g in model.landmark_ids if g in set(genes.gene_ids)][:N_DROPPED]
    ent = raw.genes["pr_gene_id"].astype(str)
    kept = raw.select_genes(raw.gene_ids[~ent.isin(dropped).to_numpy()])
    path = tmp_path_factory.mktemp("query") / "borovecki_partial.gct"
    write(kept, path)
    return path, dropped, genes


def test_missing_landmarks_error_then_impute_api(trained, query):
    _, model, _ = trained
    path, dropped, full = query
    data = read(path)
    with pytest.raises(MissingGenesError) as err:
        model.predict(data)
    assert err.value.missing == dropped
    out = model.predict(data, missing_landmarks="impute")
    assert out.n_samples == 31 and list(out.gene_ids) == model.target_ids
    assert np.isfinite(out.values).all()
    # 3 of ~976 landmarks imputed: predictions stay close to those from complete profiles
    ref = model.predict(full).values
    r = np.corrcoef(out.values.ravel(), ref.ravel())[0, 1]
    assert r > 0.99


def test_predict_cli_missing_landmarks(trained, query, tmp_path, capsys):
    model_dir, model, _ = trained
    path, dropped, _ = query
    out = tmp_path / "pred.gct"
    rc = main(["predict", "--model", str(model_dir), "--input", str(path), "--output", str(out)])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"geneinfer: error: {N_DROPPED} landmark")
    assert all(g in err for g in dropped)
    assert not out.exists()
    rc = main(
        [
            "predict",
            "--model",
            str(model_dir),
            "--input",
            str(path),
            "--output",
            str(out),
            "--missing-landmarks",
            "impute",
            "--no-progress",
        ]
    )
    assert rc == 0
    pred = read(out)
    assert pred.n_samples == 31 and set(pred.gene_ids) == set(model.target_ids)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "boost"], "unknown model 'boost'"),
        (["--param", "alphas"], "expected KEY=VALUE"),
        (["--param", "alpha=1"], "no parameter 'alpha'"),
        (["--panel", "no_such_panel"], "unknown panel 'no_such_panel'"),
    ],
)
def test_user_mistakes_exit_2_on_one_line(shared, tmp_path, capsys, args, message):
    rc = main(
        [
            "train",
            "--train",
            str(shared / "gpl96" / "borovecki.gct.gz"),
            "--out",
            str(tmp_path / "m"),
            *args,
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("geneinfer: error:") and message in err and "\n" not in err
    assert not (tmp_path / "m").exists()


def test_missing_train_file_and_file_as_out(shared, tmp_path, capsys):
    assert main(["train", "--train", str(tmp_path / "nope.gct"), "--out", str(tmp_path / "m")]) == 2
    assert "no such file" in capsys.readouterr().err
    taken = tmp_path / "results.txt"
    taken.write_text("keep")
    train = str(shared / "gpl96" / "borovecki.gct.gz")
    assert main(["train", "--train", train, "--out", str(taken)]) == 2  # fails before training
    assert "is a file" in capsys.readouterr().err and taken.read_text() == "keep"


def test_torch_training_checkpoints_and_resumes(query, shared, tmp_path, capsys):
    path, _, _ = query
    base = [
        "train",
        "--model",
        "dgex",
        "--train",
        str(path),
        "--panel",
        "l1000",
        "--data-dir",
        str(shared),
        "--device",
        "cpu",
        "--no-dedup",
        "--quiet",
        "--param",
        "hidden=[16]",
        "--param",
        "max_epochs=2",
        "--param",
        "progress=false",
    ]
    ck = tmp_path / "ck"
    assert main([*base, "--out", str(tmp_path / "a"), "--checkpoint-dir", str(ck)]) == 0
    assert any(ck.rglob("*.pt"))
    first = InferenceModel.load(tmp_path / "a").estimator.history_[0]
    assert first["resumed_from"] is None
    # the same command again finds the finished run's checkpoint instead of starting over
    assert main([*base, "--out", str(tmp_path / "a"), "--checkpoint-dir", str(ck)]) == 0
    again = InferenceModel.load(tmp_path / "a").estimator.history_[0]
    assert again["resumed_from"] is not None
    # without --checkpoint-dir the default folder next to --out is removed after success
    assert main([*base, "--out", str(tmp_path / "b")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "ck"]
