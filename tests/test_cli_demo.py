"""``geneinfer demo`` runs the built-in study offline from the embedded data."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pandas as pd
import pytest

from geneinfer.cli import main
from geneinfer.commands.study import config_path
from geneinfer.study import load_config

ROW = re.compile(r"^(ols|ridge|knn-ge|stack|dgex)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)"
                 r"(\s+(-|[0-9.]+))?$")


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No data folder, an empty cache, CWD without ../shared, and no network at all."""
    monkeypatch.delenv("GENEINFER_DATA_DIR", raising=False)
    monkeypatch.setenv("GENEINFER_CACHE", str(tmp_path / "cache"))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)

    def no_network(*args, **kwargs):
        raise AssertionError("the demo tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    return tmp_path


def test_demo_offline_prints_both_views_and_writes_a_report(offline, capsys):
    out = offline / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    training, within = text.split("z-scored within each test study")
    rows = {m.group(1): m.groups()[1:] for m in map(ROW.match, training.splitlines()) if m}
    assert set(rows) == {"ols", "ridge", "knn-ge", "stack", "dgex"}  # stack: the default
    assert rows["ols"][4] == "-"  # the baseline is not compared with itself
    # what is printed is what metrics.csv holds (the training view, bladderbatch column)
    metrics = pd.read_csv(out / "metrics.csv")
    ridge = metrics[(metrics["model"] == "ridge") & (metrics["view"] == "training")
                    & (metrics["test_set"] == "bladderbatch")]
    assert float(rows["ridge"][0]) == pytest.approx(float(ridge["mae"].iloc[0]), abs=6e-5)
    within_rows = [m for m in map(ROW.match, within.splitlines()) if m]
    assert len(within_rows) == 5
    for m in within_rows:  # z-scored within a study: errors of a weak but real predictor
        assert 0.5 < float(m.group(4)) < 1.3
    assert (out / "report.html").stat().st_size > 0
    panel = pd.read_csv(out / "panel.tsv", sep="\t", dtype=str)
    assert (panel["role"] == "landmark").sum() > 900  # the real L1000 landmarks
    assert (panel["role"] == "target").sum() == 1000  # --quick


def test_demo_config_is_the_studies_file():
    cfg = load_config(config_path("demo"))
    assert cfg.name == "demo" and [s.embedded for s in cfg.sources] == ["bladderbatch",
                                                                          "gse781"]
    # studies/demo.toml is the file the package ships (one copy)
    repo_file = Path(__file__).resolve().parents[1] / "studies" / "demo.toml"
    assert repo_file.resolve() == config_path("demo").resolve()
