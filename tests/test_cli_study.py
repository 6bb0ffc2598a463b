"""`geneinfer study studies/shared.toml --quick` end to end on the real shared data."""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest

from geneinfer.cli import main
from geneinfer.study import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "studies" / "shared.toml"


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.cells: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs).get("src", ""))

    def handle_data(self, data):
        self.cells.append(data.strip())


@pytest.fixture(scope="module")
def run(shared, tmp_path_factory):
    """One quick run of the real shared study (about 2 minutes on 2 free cores)."""
    out = tmp_path_factory.mktemp("study") / "shared"
    rc = main(["study", str(CONFIG), "--quick", "--out", str(out), "--no-progress"])
    return rc, out


pytestmark = pytest.mark.slow


def test_study_exits_cleanly_and_writes_results(run):
    rc, out = run
    assert rc == 0
    for name in ("metrics.csv", "report.html", "versions.json", "config.toml",
                 "biology.csv", "calibration.csv", "reliability.csv", "learning_curves.json"):
        assert (out / name).stat().st_size > 0, name


def test_every_model_on_every_test_set_with_gene_counts(run):
    _, out = run
    cfg = load_config(CONFIG)
    m = pd.read_csv(out / "metrics.csv")
    view = m[m["view"] == "training"]
    expected_sets = {"bladderbatch", "nakayama", "borovecki", "gse781", "geuvadis"}
    for model in cfg.models:
        sub = view[view["model"] == model.label]
        assert set(sub["test_set"]) == expected_sets, model.label
        assert (sub["n_genes"] > 0).all() and (sub["n_samples"] > 0).all()
    lodo = view[view["split"] == "lodo"]
    assert set(lodo["test_set"]) == expected_sets - {"geuvadis"}
    assert set(view.loc[view["split"] == "external", "test_set"]) == {"geuvadis"}
    assert set(m["view"]) == {"training", "within-study"}
    # z-scoring within the held-out study removes the between-study offset
    ridge = m[(m["model"] == "ridge") & (m["split"] == "lodo")].pivot_table(
        index="test_set", columns="view", values="mean_r")
    assert (ridge["within-study"] > 0.1).all()


def test_report_images_decode_and_tables_are_present(run):
    _, out = run
    report = out / "report.html"
    parser = _Images()
    parser.feed(report.read_text(encoding="utf-8"))
    assert len(parser.srcs) >= 5
    for src in parser.srcs:
        assert src.startswith("data:image/png;base64,")
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        img = matplotlib.image.imread(io.BytesIO(raw), format="png")
        assert img.shape[0] > 50 and img.shape[1] > 50 and img.std() > 0
    text = " ".join(parser.cells)
    for heading in ("Models x test sets", "Per-gene reliability", "Calibration on the "
                    "cross-platform set", "Downstream biology"):
        assert heading in text
    assert "geuvadis" in text and "n_genes" in text
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser:  # optional: the page also renders in a headless browser
        done = subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox",
                               f"--screenshot={out / 'shot.png'}", report.as_uri()],
                              capture_output=True, timeout=120, check=False)
        assert done.returncode == 0 and (out / "shot.png").stat().st_size > 0


def test_biology_table_covers_labelled_sets(run):
    _, out = run
    bio = pd.read_csv(out / "biology.csv")
    assert {"bladderbatch", "nakayama", "borovecki"} <= set(bio["dataset"])
    for col in ("acc_full_true", "acc_landmarks", "acc_landmarks_inferred", "de_overlap"):
        assert bio[col].between(0, 1).all()
    # true profiles separate bladder cancer from normal far above the majority class
    bl = bio[bio["dataset"] == "bladderbatch"].iloc[0]
    assert bl["acc_full_true"] > bl["majority_class"]
    # inferred targets share more top DE genes with the truth than chance
    assert (bio["de_overlap"] > bio["de_chance_overlap"]).mean() > 0.5


def test_calibration_table_has_each_method(run):
    _, out = run
    cal = pd.read_csv(out / "calibration.csv")
    assert set(cal["method"]) == {"none", "center", "offset-scale"}
    assert (cal["n_eval_samples"] == 80).all()  # 85 GEUVADIS samples minus 5 shots


def test_bad_config_exits_2_before_any_work(shared, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    text = CONFIG.read_text(encoding="utf-8").replace("[panel]", "[panel]\nsize = 3")
    bad.write_text(text.replace('"../../shared/data"', f'"{shared}"'))
    rc = main(["study", str(bad), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "unknown setting panel.size" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
