"""Study configuration checks and the study runner on small subsets of the real data.

Every bad configuration must raise a ConfigError naming the setting *before* any model is
trained: the tests assert that no unit result was written.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geneinfer.errors import ConfigError
from geneinfer.study import (
    Study,
    build_folds,
    calibrate_predictions,
    learning_curve,
    load_config,
    parse_config,
)

# Same rule as the `shared` fixture in tests/conftest.py.
SHARED = Path(os.environ.get(
    "GENEINFER_SHARED", Path(__file__).resolve().parents[2].parent / "shared" / "data"))


# ---------------------------------------------------------------------- small real data
@pytest.fixture(scope="session")
def mini(shared, tmp_path_factory) -> Path:
    """Gene-level subsets of real sets, written as files a study config can point at.

    bladderbatch (RMA log2) and borovecki (MAS5 linear) as entrez-level GCT, 24 samples each
    and the dgex-panel genes plus some others; GEUVADIS counts (Ensembl, 30 samples) as TSV.
    """
    from geneinfer.genes import collapse_probes, get_panel
    from geneinfer.io import read, write

    out = tmp_path_factory.mktemp("mini")
    panel = get_panel("dgex", data_dir=shared)
    rng = np.random.default_rng(0)
    targets = list(rng.choice(panel.targets, 1500, replace=False))
    keep = [*panel.landmarks, *targets]
    for name in ("bladderbatch", "borovecki"):
        data = collapse_probes(read(shared / "gpl96" / f"{name}.gct.gz"))
        data = data.select_genes(keep, missing="drop").select_samples(slice(0, 24))
        write(data, out / f"{name}.gct")
    counts = pd.read_csv(shared / "rnaseq" / "geuvadis85_counts.tsv.gz", sep="\t", index_col=0)
    counts.iloc[:, :30].to_csv(out / "geuvadis.tsv", sep="\t")
    return out


def _config(mini: Path, **overrides: str) -> str:
    parts = {
        "study": 'name = "mini"\nseed = 0\nquick_targets = 200',
        "data": f'data_dir = "{SHARED}"',
        "sources": textwrap.dedent(f"""\
            [[data.sources]]
            name = "bladder"
            file = "{mini / 'bladderbatch.gct'}"
            scale = "log2"

            [[data.sources]]
            name = "boro"
            file = "{mini / 'borovecki.gct'}"
            scale = "linear"

            [[data.sources]]
            name = "geuv"
            file = "{mini / 'geuvadis.tsv'}"
            scale = "counts"
            role = "test"
            """),
        "panel": 'name = "dgex"\nmin_landmarks = 500\nmin_targets = 500',
        "models": '[[models]]\nname = "ols"\n\n[[models]]\nname = "ridge"',
        "splits": 'leave_one_dataset_out = true\nexternal = ["geuv"]',
        "evaluate": 'baseline = "ols"',
    }
    parts.update(overrides)
    return textwrap.dedent(f"""\
        [study]
        {parts['study']}

        [data]
        {parts['data']}

        {parts['sources']}

        [panel]
        {parts['panel']}

        {parts['models']}

        [splits]
        {parts['splits']}

        [evaluate]
        {parts['evaluate']}
        """)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------- structure errors
def test_real_study_configs_validate(shared):
    root = Path(__file__).resolve().parents[2] / "studies"
    for name in ("shared.toml", "dgex.toml", "demo.toml"):
        cfg = load_config(root / name, data_dir=shared)
        assert cfg.models and cfg.sources


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"panel": 'name = "dgex"\nmin_landmark = 5'},
         r"unknown setting panel\.min_landmark; valid keys of \[panel\]: name, min_landmarks"),
        ({"study": 'name = "x"\ncolour = 1'}, r"unknown setting study\.colour"),
        ({"models": '[[models]]\nname = "olss"'}, r"models\[0\]\.name = 'olss'.*ols, ridge"),
        ({"models": '[[models]]\nname = "ridge"\nparams = { alpah = 1 }'},
         r"models\[0\] \(ridge\).*alpah"),
        ({"splits": 'leave_one_dataset_out = true\nexternal = ["bladder"]'},
         r"splits\.external names 'bladder'.*role = 'test'"),
        ({"splits": 'random = { train = 0.8, valid = 0.1, test = 0.2 }\nexternal = ["geuv"]'},
         r"splits\.random fractions must be positive and sum to 1"),
        ({"panel": 'name = "dgex"\nmin_landmarks = "many"'},
         r"panel\.min_landmarks must be an integer"),
        ({"evaluate": 'calibration = { shots = 5, methods = ["magic"] }'},
         r"evaluate\.calibration\.methods = 'magic'.*none, center, offset-scale"),
        ({"splits": 'external = ["geuv"]',
          "evaluate": 'biology = { datasets = [{ dataset = "bladder" }] }'},
         r"evaluate\.biology needs splits\.leave_one_dataset_out"),
    ],
)
def test_structural_errors_name_the_setting(tmp_path, mini, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, _config(mini, **override)))


def test_unknown_section_and_bad_toml(tmp_path, mini):
    with pytest.raises(ConfigError, match=r"unknown section \[modles\]; valid sections"):
        load_config(_write(tmp_path, _config(mini) + "\n[modles]\nx = 1\n"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[study\n"))


def test_missing_file_is_named(tmp_path, mini):
    text = _config(mini).replace(str(mini / "borovecki.gct"), "nowhere/boro.gct")
    with pytest.raises(ConfigError, match=r"data source 'boro': file 'nowhere/boro.gct' not"):
        load_config(_write(tmp_path, text))


# ---------------------------------------------------------------------- data-dependent errors
def _prepare_fails(tmp_path: Path, text: str, message: str) -> None:
    cfg = load_config(_write(tmp_path, text))
    study = Study(cfg, out_dir=tmp_path / "out", progress=False)
    with pytest.raises(ConfigError, match=message):
        study.prepare()
    assert not (tmp_path / "out" / "units").exists()  # nothing was trained


def test_scale_contradicting_values_fails_before_training(tmp_path, mini):
    # The RMA set declared as linear MAS5: values below 20 cannot be linear intensities.
    text = _config(mini).replace('scale = "log2"', 'scale = "linear"', 1)
    _prepare_fails(tmp_path, text, r"data source 'bladder': .*scale 'linear' \(given\) "
                                   r"contradicts the values.*fix its scale")
    # RNA-seq counts declared as log2.
    text = _config(mini).replace('scale = "counts"', 'scale = "log2"')
    _prepare_fails(tmp_path, text, r"data source 'geuv': .*scale 'log2' \(given\)")


def test_panel_with_too_few_genes_fails(tmp_path, mini):
    # GEUVADIS measures only ~840 of the 943 D-GEX landmarks.
    text = _config(mini, panel='name = "dgex"\nmin_landmarks = 900\nmin_targets = 500')
    _prepare_fails(tmp_path, text, r"only \d+ of 943 landmarks are measured in geuv "
                                   r"\(panel\.min_landmarks = 900\)")


def test_split_leaving_a_set_empty_fails(tmp_path, mini):
    text = _config(mini, splits='random = { train = 0.97, valid = 0.02, test = 0.01 }\n'
                                'external = ["geuv"]')
    _prepare_fails(tmp_path, text, r"\[splits\].*test set is empty")


def test_build_folds_lodo_and_external_never_mix_test_samples():
    ds = np.array(["a"] * 10 + ["b"] * 8 + ["c"] * 6)
    splits = {"random": None, "leave_one_dataset_out": True, "external": ["x"],
              "valid_fraction": 0.2}
    folds = build_folds(ds, splits, seed=0)
    assert [f.name for f in folds] == ["lodo-a", "lodo-b", "lodo-c", "external"]
    for f in folds[:3]:
        (name, test), = f.test_pool.items()
        assert set(ds[test]) == {name}
        assert name not in set(ds[f.train])
        assert len(f.train) + len(test) == 24  # training holds out its own validation
    assert folds[3].test_external == ["x"] and len(folds[3].train) == 24


# ---------------------------------------------------------------------- helpers
def test_learning_curve_reads_trainer_history():
    hist = [{"targets": [0, 5], "history": [
        {"epoch": 0, "train_loss": None, "val_loss": 1.0},
        {"epoch": 1, "train_loss": 0.8, "val_loss": 0.9}], "best_epoch": 1}]
    assert learning_curve(hist) == {"train_loss": [None, 0.8], "val_loss": [1.0, 0.9]}
    assert learning_curve({"loss": [1, 0.5]}) == {"loss": [1.0, 0.5]}
    assert learning_curve(None) == {}


def test_calibration_uses_held_out_samples_only(rng):
    # Predictions with a large per-gene offset: few-shot offset correction must remove most
    # of it, per-study centering all of it; "none" keeps it.
    Y = rng.normal(size=(40, 300))
    offset = rng.normal(0, 2.0, size=300)
    P = Y * 0.8 + offset + rng.normal(0, 0.3, size=Y.shape)
    rows = {r["method"]: r for r in calibrate_predictions(
        Y, P, methods=["none", "center", "offset-scale"], shots=5, repeats=3, seed=0)}
    assert rows["none"]["mae"] > 1.0
    assert rows["offset-scale"]["mae"] < 0.5 * rows["none"]["mae"]
    assert rows["center"]["mae"] < 0.5
    assert all(r["n_eval_samples"] == 35 for r in rows.values())
    with pytest.raises(Exception, match="more than 7 test samples"):
        calibrate_predictions(Y[:6], P[:6], methods=["none"], shots=5)


# ---------------------------------------------------------------------- a small real run
def test_small_study_runs_resumes_and_keeps_test_data_out(tmp_path, mini):
    text = _config(mini, evaluate='baseline = "ols"\ncalibration = { shots = 5, repeats = 2 }')
    cfg = load_config(_write(tmp_path, text))
    out = tmp_path / "res"
    study = Study(cfg, out_dir=out, quick=True, progress=False).prepare()
    # quick mode: seeded target subset; landmarks measured everywhere
    assert len(study.panel.targets) == 200 and len(study.panel.landmarks) >= 500
    res = study.run()
    m = res["metrics"]
    train_view = m[m["view"] == "training"]
    assert set(train_view["test_set"]) == {"bladder", "boro", "geuv"}
    assert set(train_view["model"]) == {"ols", "ridge"}
    assert (train_view["n_genes"] > 100).all()
    assert train_view.loc[train_view["model"] == "ols", "better_than_ols"].eq(0).all()
    for f in ("metrics.csv", "versions.json", "report.html", "reliability.csv",
              "calibration.csv", "config.toml", "learning_curves.json", "panel.tsv"):
        assert (out / f).is_file(), f
    assert json.loads((out / "versions.json").read_text())["quick"] is True
    assert len(list((out / "per_gene").glob("*.csv"))) == 2 * 3
    # resume: every unit is reused, results identical
    again = Study(cfg, out_dir=out, quick=True, progress=False).run()
    assert again["skipped"] == 6
    pd.testing.assert_frame_equal(again["metrics"], m)
    # no statistic from test samples: lodo-bladder trains on boro alone
    fold = next(f for f in study.folds if f.name == "lodo-bladder")
    assert [p.source for p in study.training_parts(fold)] == ["boro"]


def test_parse_config_needs_models_and_sources(mini):
    with pytest.raises(ConfigError, match=r"\[data\] has no sources"):
        parse_config({"data": {"sources": []}, "models": [{"name": "ols"}]})
    with pytest.raises(ConfigError, match=r"at least one \[\[models\]\]"):
        parse_config({"data": {"sources": [{"name": "a", "file": str(mini / "borovecki.gct"),
                                             "scale": "linear"}]}})
