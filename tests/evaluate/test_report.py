"""The HTML report: tables, reliability counts and embedded figures that decode as PNGs."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from geneinfer.evaluate import plots
from geneinfer.evaluate.report import ReportData, reliability_table, write_report


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict[str, str]] = []
        self.tables = 0
        self.headers: list[str] = []
        self._in_th = False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs))
        elif tag == "table":
            self.tables += 1
        elif tag == "th":
            self._in_th = True

    def handle_endtag(self, tag):
        if tag == "th":
            self._in_th = False

    def handle_data(self, data):
        if self._in_th:
            self.headers.append(data.strip())


def check_report_images(path: Path) -> _Collector:
    """Parse an HTML report; every <img> must resolve to a non-empty decodable PNG."""
    parser = _Collector()
    parser.feed(path.read_text(encoding="utf-8"))
    assert parser.imgs, "report has no images"
    for attrs in parser.imgs:
        src = attrs["src"]
        if src.startswith("data:image/png;base64,"):
            raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        else:
            target = (path.parent / src).resolve()
            assert target.is_file(), f"image {src} does not exist"
            raw = target.read_bytes()
        assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 1000
        img = matplotlib.image.imread(io.BytesIO(raw), format="png")
        assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
        assert img.std() > 0  # not a blank canvas
    return parser


def _fake_study(rng: np.random.Generator) -> ReportData:
    """Realistic per-gene results: ridge beats ols on most genes, 3 folds + 1 external set."""
    genes = [str(1000 + i) for i in range(400)]
    difficulty = rng.gamma(2.0, 0.2, size=len(genes))
    rows, pg = [], []
    for split, tests in (("lodo", ["a", "b", "c"]), ("external", ["rnaseq"])):
        for t in tests:
            for model, gain in (("ols", 1.0), ("ridge", 0.85), ("dgex", 0.9)):
                mae = difficulty * gain + rng.normal(0, 0.02, len(genes))
                r = np.clip(1 - mae + rng.normal(0, 0.05, len(genes)), -1, 1)
                pg.append(pd.DataFrame({"model": model, "split": split, "fold": f"{split}-{t}",
                                        "test_set": t, "gene": genes, "mae": mae, "r": r}))
                for view in ("training", "within-study"):
                    rows.append({"model": model, "split": split, "fold": f"{split}-{t}",
                                 "test_set": t, "view": view, "mae": mae.mean(),
                                 "mean_r": r.mean(), "n_genes": len(genes), "n_samples": 20})
    gene_stats = pd.DataFrame({"mean": rng.normal(8, 2, len(genes)),
                               "var": rng.gamma(2, 0.5, len(genes))}, index=genes)
    hist = {"dgex": {"train_loss": list(np.exp(-np.arange(20) / 5) + 0.3),
                     "valid_loss": list(np.exp(-np.arange(20) / 6) + 0.35)}}
    calib = pd.DataFrame({"model": ["ridge"] * 3, "method": ["none", "center", "offset-scale"],
                          "mae": [0.9, 0.7, 0.75]})
    bio = pd.DataFrame({"dataset": ["a"], "model": ["ridge"], "acc_full_true": [0.9]})
    return ReportData(title="unit test <study>", metrics=pd.DataFrame(rows),
                      per_gene=pd.concat(pg, ignore_index=True), gene_stats=gene_stats,
                      histories=hist, calibration=calib, biology=bio,
                      config_text="[study]\nname = 'x & y'", versions={"geneinfer": "0"})


def test_report_embeds_decodable_figures_and_tables(tmp_path, rng):
    data = _fake_study(rng)
    path = write_report(data, tmp_path / "out" / "report.html")
    parser = check_report_images(path)
    # 3 bar charts + per split (scatter, r histogram, error vs expression) + learning curves
    assert len(parser.imgs) == 3 + 2 * 3 + 1
    # metrics (2 views), reliability, calibration, biology
    assert parser.tables == 5
    assert "better than" not in parser.headers  # columns come from the data, not invented
    text = path.read_text(encoding="utf-8")
    assert "unit test &lt;study&gt;" in text and "x &amp; y" in text
    assert not list((tmp_path / "out").glob(".*part*"))  # atomic write left no temp file


def test_reliability_table_counts_thresholds():
    pg = pd.DataFrame({
        "model": "m", "split": "lodo", "test_set": "a", "gene": list("abcdef"),
        "r": [0.1, 0.35, 0.55, 0.75, 0.9, np.nan],
    })
    t = reliability_table(pg)
    row = t.iloc[0]
    assert row["n_genes"] == 5
    assert (row["r>=0.3"], row["r>=0.5"], row["r>=0.7"]) == (4, 3, 2)
    assert row["share r>=0.7"] == pytest.approx(0.4)


def test_gene_scatter_reports_share_better(rng):
    base = rng.uniform(0.2, 1.0, 300)
    better = base * 0.8
    fig = plots.gene_scatter_vs_baseline({"ols": base, "ridge": better}, base)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["ridge: 100% genes better"]
    assert plots.to_png(fig)[:4] == b"\x89PNG"


def test_model_comparison_error_bars_are_fold_std():
    m = pd.DataFrame({"model": ["a", "a", "b", "b"], "split": "lodo",
                      "mae": [0.4, 0.6, 0.3, 0.3]})
    fig = plots.model_comparison(m)
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx([0.5, 0.3])
    # error bar segments: a has std 0.1414, b has 0
    segs = ax.collections[0].get_segments()
    spans = sorted(abs(s[1][1] - s[0][1]) for s in segs)
    assert spans == pytest.approx([0.0, 2 * np.std([0.4, 0.6], ddof=1)])
