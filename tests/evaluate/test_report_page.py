"""The report page as a reader sees it: section order, decodable figures, best-value marks,
and (in headless Chromium) what fits on the first 1400 x 900 screen.

The input is a synthetic study shaped like the real one (12 models, 4 leave-one-dataset-out
sets + 1 RNA-seq set, 2,000 genes), so these tests do not depend on the study runner.
``GENEINFER_UPDATE_SCREENSHOTS=1`` also writes ``docs/report-first-screen.png`` and
``docs/report-full-page.png``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from geneinfer.evaluate.report import ReportData, write_report

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WIDTH, FIRST_SCREEN = 1400, 900
MAX_SCREENSHOT_BYTES = 1_500_000

# Mean MAE multiplier of each model relative to ols (README's shared study, roughly).
MODELS: dict[str, float] = {
    "ols": 1.0, "ridge": 0.935, "lasso": 0.94, "knn-ge": 0.945, "knn": 1.01, "pcr": 0.925,
    "svr": 0.936, "dgex": 0.94, "autoencoder": 0.93, "cnn": 0.965, "ridge-mlp": 0.935,
    "per-gene-best": 0.933,
}
# Test set -> (split, typical MAE); the RNA-seq set is the hardest, as on real data.
TEST_SETS: dict[str, tuple[str, float]] = {
    "bladderbatch": ("lodo", 0.93), "borovecki": ("lodo", 1.3), "gse781": ("lodo", 0.76),
    "nakayama": ("lodo", 0.93), "geuvadis": ("external", 1.72),
}
N_GENES = 2000


# ====================================================================== synthetic study
def _gene_stats(rng: np.random.Generator, genes: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"mean": rng.normal(7.5, 1.8, len(genes)),
                         "var": rng.lognormal(-1.0, 0.5, len(genes))}, index=genes)


def _per_gene(rng: np.random.Generator, stats: pd.DataFrame) -> pd.DataFrame:
    """Per-gene MAE and r for every model and test set; models differ per set a little.

    As on real data, weakly expressed and low-variance genes are harder: on the standardized
    scale their measurement noise is a larger part of the signal.
    """
    genes = list(stats.index)
    difficulty = (rng.lognormal(0.0, 0.2, len(genes))
                  * (stats["var"].to_numpy() / 0.37) ** -0.12
                  * (1 + 0.04 * (7.5 - stats["mean"].to_numpy())))
    signal = np.clip(rng.normal(0.38, 0.14, len(genes)), -0.2, 0.9)
    parts = []
    for test_set, (split, scale) in TEST_SETS.items():
        # The RNA-seq set lacks a quarter of the targets, as GEUVADIS does.
        keep = np.arange(len(genes)) if split == "lodo" else np.arange(len(genes) * 3 // 4)
        for model, gain in MODELS.items():
            g = gain * (1 + rng.normal(0, 0.015))  # who wins differs between test sets
            mae = difficulty[keep] * scale * g * rng.lognormal(0, 0.06, len(keep))
            r = np.clip(signal[keep] - 2.0 * (g - 0.93) + rng.normal(0, 0.05, len(keep)),
                        -0.5, 0.97)
            fold = "external" if split == "external" else f"lodo-{test_set}"
            parts.append(pd.DataFrame({
                "model": model, "split": split, "fold": fold, "test_set": test_set,
                "gene": [genes[i] for i in keep], "mae": mae, "r": r, "ccc": r * 0.8,
                "n": 40}))
    return pd.concat(parts, ignore_index=True)


def _metrics(per_gene: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Study-shaped metric rows (both views) summarised from the per-gene table."""
    base = per_gene[per_gene["model"] == "ols"].set_index(["test_set", "gene"])["mae"]
    rows = []
    for (model, split, fold, test_set), sub in per_gene.groupby(
            ["model", "split", "fold", "test_set"], sort=False):
        better = float(np.mean(sub["mae"].to_numpy() < base.loc[test_set].reindex(sub["gene"])))
        common = {"model": model, "model_name": model, "split": split, "fold": fold,
                  "test_set": test_set, "n_samples": int(rng.integers(30, 200)),
                  "n_train": int(rng.integers(150, 260)), "n_genes": len(sub),
                  "fit_seconds": float(rng.uniform(0.5, 90)),
                  "valid_mae": float(sub["mae"].mean() * 0.8)}
        for view, shrink in (("training", 1.0), ("within-study", 0.72)):
            rows.append({**common, "view": view, "mae": sub["mae"].mean() * shrink,
                         "mean_r": sub["r"].mean(), "median_r": sub["r"].median(),
                         "ccc": sub["ccc"].mean(),
                         "better_than_ols": better if view == "training" else np.nan})
    return pd.DataFrame(rows)


def _histories(rng: np.random.Generator) -> dict[str, dict[str, list[float]]]:
    """``model|fold`` learning curves for three networks on every fold."""
    out = {}
    folds = [("external" if s == "external" else f"lodo-{t}") for t, (s, _) in TEST_SETS.items()]
    for model in ("dgex", "autoencoder", "cnn"):
        for fold in folds:
            n = int(rng.integers(15, 40))
            t = np.arange(n)
            floor = rng.uniform(0.25, 0.4)
            out[f"{model}|{fold}"] = {
                "train_loss": list(floor + np.exp(-t / 6) * 0.8),
                "valid_loss": list(floor + 0.05 + np.exp(-t / 8) * 0.7 + 0.002 * t),
            }
    return out


def _calibration(rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for model, gain in MODELS.items():
        for method, shrink, shots in (("none", 1.0, 0), ("center", 0.3, 0),
                                      ("offset-scale", 0.25, 5)):
            rows.append({"model": model, "test_set": "geuvadis", "method": method,
                         "shots": shots, "n_eval_samples": 80, "repeats": 5,
                         "mae": 1.72 * gain * shrink, "mae_std": 0.01 + 0.02 * shrink,
                         "mean_r": 0.35 / gain, "ccc": 0.3 / gain, "n_genes": 1500})
    return pd.DataFrame(rows)


def _biology(rng: np.random.Generator) -> pd.DataFrame:
    """The study's downstream table: 16 columns with long names, wider than the page."""
    rows = []
    for dataset in ("bladderbatch", "nakayama", "borovecki"):
        for model in ("ridge", "dgex", "pcr"):
            acc = rng.uniform(0.6, 0.95, 3)
            rows.append({
                "dataset": dataset, "model": model, "n_samples": 57, "n_classes": 3,
                "acc_full_true": acc[0], "acc_full_true_std": 0.05,
                "acc_landmarks": acc[1], "acc_landmarks_std": 0.06,
                "acc_landmarks_inferred": acc[2], "acc_landmarks_inferred_std": 0.05,
                "majority_class": 0.4, "de_top_n": 100, "de_overlap": 0.42,
                "de_jaccard": 0.27, "de_chance_overlap": 0.011, "de_spearman_logp": 0.61})
    return pd.DataFrame(rows)


def synthetic_study(seed: int = 0) -> ReportData:
    """A realistic :class:`ReportData`: 12 models x 5 test sets x 2,000 genes."""
    rng = np.random.default_rng(seed)
    genes = [str(1000 + i) for i in range(N_GENES)]
    gene_stats = _gene_stats(rng, genes)
    per_gene = _per_gene(rng, gene_stats)
    notes = ["Panel dgex: 839 landmarks and 2000 targets measured in every data set used.",
             "Training pool: 213 samples from bladderbatch, nakayama, borovecki, gse781; "
             "4 near-duplicates removed.",
             "Units: 60 (0 reused from cache); run time 571.2 s."]
    return ReportData(
        title="geneinfer study: synthetic <shared>", metrics=_metrics(per_gene, rng),
        per_gene=per_gene, gene_stats=gene_stats, histories=_histories(rng),
        calibration=_calibration(rng), biology=_biology(rng),
        config_text="[study]\nname = 'synthetic & shared'\n" + "# long line " * 40,
        versions={"geneinfer": "0.1.0", "numpy": np.__version__}, notes=notes,
        baseline="ols")


@pytest.fixture(scope="module")
def study() -> ReportData:
    return synthetic_study()


@pytest.fixture(scope="module")
def page(study, tmp_path_factory) -> Path:
    return write_report(study, tmp_path_factory.mktemp("report") / "report.html")


# ====================================================================== parsing the page
class _Page(HTMLParser):
    """Images, summary-table cells and the order in which landmarks of the page appear."""

    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict[str, str]] = []
        self.events: list[str] = []  # "summary-mae", "img", "details", ...
        self.cells: dict[str, list[tuple[str, str, str, bool]]] = {}
        self.headers: list[str] = []
        self.text: list[str] = []
        self._table: str | None = None
        self._row: str | None = None
        self._cell: tuple[str, bool] | None = None
        self._in_th = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a)
            self.events.append("img")
        elif tag == "details":
            self.events.append("details")
        elif tag == "table":
            self._table = a.get("id")
            if self._table:
                self.events.append(self._table)
                self.cells[self._table] = []
        elif tag == "tr":
            self._row = a.get("data-model")
        elif tag == "td" and self._table and self._row:
            self._cell = (a.get("data-col", ""), "best" in a.get("class", "").split())
        elif tag == "th":
            self._in_th = True

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag == "th":
            self._in_th = False
        elif tag == "td":
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._in_th:
            self.headers.append(data.strip())
        if self._cell is not None:
            col, best = self._cell
            self.cells[self._table].append((self._row, col, data.strip(), best))


def parse(path: Path) -> _Page:
    parser = _Page()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def decode_png(src: str) -> np.ndarray:
    """The pixels of a base64 PNG data URI (checked to be a PNG)."""
    assert src.startswith("data:image/png;base64,"), src[:40]
    raw = base64.b64decode(src.split(",", 1)[1], validate=True)
    assert raw[:8] == PNG_MAGIC
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


def training_mae(metrics: pd.DataFrame) -> pd.DataFrame:
    """Models x test sets MAE (training view, mean over folds), computed independently."""
    train = metrics[metrics["view"] == "training"]
    return train.groupby(["model", "test_set"])["mae"].mean().unstack()


# ====================================================================== static checks
def test_every_image_is_an_inline_png_with_content(page):
    parser = parse(page)
    assert len(parser.imgs) >= 9  # 3 per split + learning curves + calibration + reliability
    for attrs in parser.imgs:
        pixels = decode_png(attrs["src"])
        assert pixels.shape[0] > 50 and pixels.shape[1] > 50
        assert pixels.std() > 0, attrs.get("alt")
        # width/height attributes match the PNG, so the browser lays out before decoding
        assert (int(attrs["width"]), int(attrs["height"])) == (pixels.shape[1], pixels.shape[0])


def test_page_is_self_contained(page):
    text = page.read_text(encoding="utf-8")
    for needle in ("<script", "<link", "http://", "https://", "url(", "<iframe"):
        assert needle not in text, needle


def test_summary_comes_first_then_figures_then_details(page):
    events = parse(page).events
    first_img, first_details = events.index("img"), events.index("details")
    assert events.index("summary-mae") < events.index("summary-r") < first_img
    last_img = len(events) - 1 - events[::-1].index("img")
    assert last_img < first_details
    assert events[0] == "summary-mae"  # nothing (no other table, no figure) before it


def test_summary_rows_are_ordered_by_mean_mae_and_best_cells_match_metrics(page, study):
    cells = parse(page).cells["summary-mae"]
    mae = training_mae(study.metrics)
    means = mae.mean(axis=1).sort_values()
    rows = list(dict.fromkeys(model for model, *_ in cells))
    assert rows == list(means.index)
    split_of = {t: s for t, (s, _) in TEST_SETS.items()}
    marked = {(model, col) for model, col, _, best in cells if best}
    expected = {(model, f"{split_of[t]}/{t}") for t in mae
                for model in mae.index[mae[t].round(3) == mae[t].round(3).min()]}
    expected |= {(model, "/mean") for model in means.index[means.round(3) == means.round(3).min()]}
    assert marked == expected
    shown = {(model, col): text for model, col, text, _ in cells}
    assert shown[("ols", "lodo/gse781")] == f"{mae.loc['ols', 'gse781']:.3f}"


def test_median_r_table_marks_the_highest_value(page, study):
    cells = parse(page).cells["summary-r"]
    train = study.metrics[study.metrics["view"] == "training"]
    med = train.groupby(["model", "test_set"])["median_r"].mean().unstack()
    marked = {(model, col.split("/")[1]) for model, col, _, best in cells if best and
              col != "/mean"}
    assert marked == {(m, t) for t in med for m in med.index[med[t].round(3) ==
                                                             med[t].round(3).max()]}


def test_summary_sentence_is_computed_from_the_metrics(page, study):
    text = " ".join(parse(page).text)
    mae = training_mae(study.metrics)
    means = mae.mean(axis=1).sort_values()
    win, second = means.index[:2]
    wins = int((mae.loc[win].round(3) == mae.round(3).min()).sum())
    pct = lambda other: 100 * (means[other] - means[win]) / means[other]  # noqa: E731
    expected = (f"{win} has the lowest mean MAE over the 5 test sets ({means[win]:.3f}), "
                f"{pct(second):.1f}% below {second} and {pct('ols'):.1f}% below ols "
                f"(the baseline); it is best on {wins} of 5 test sets.")
    assert expected in text


def test_header_lines_and_detail_tables(page):
    parser = parse(page)
    text = " ".join(parser.text)
    assert "Training pool: 213 samples" in text and "Panel dgex: 839 landmarks" in text
    assert "synthetic &lt;shared&gt;" in page.read_text(encoding="utf-8")
    for heading in ("Models x test sets", "Per-gene reliability", "Calibration on the "
                    "cross-platform set", "Downstream biology", "Configuration", "Versions"):
        assert heading in text, heading
    # model_name repeats model on every row, so the metrics table leaves it out
    assert "model_name" not in parser.headers and "better_than_ols" in parser.headers


# ====================================================================== in a browser
def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("headless Chromium not found (Debian: apt-get install chromium); "
                "the browser layout checks of the report are skipped")


def _chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
           f"--user-data-dir={profile}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


# Appended to a copy of the page: measures after every image has loaded, then opens every
# <details> and measures the widest state; the result lands in the DOM that --dump-dom prints.
_PROBE = """<script>
window.addEventListener('load', function () {
  var doc = document.documentElement;
  function box(el) {
    if (!el) return null;
    var r = el.getBoundingClientRect();
    return {top: r.top + scrollY, bottom: r.bottom + scrollY, left: r.left, right: r.right};
  }
  function outside() {  // elements sticking out of the page, other than inside a scroll box
    return Array.from(document.body.querySelectorAll('*')).filter(function (el) {
      var parent = el.parentElement;
      return !(parent && parent.closest('.scroll, pre')) &&
        el.getBoundingClientRect().right > doc.clientWidth + 0.5;
    }).map(function (el) { return el.tagName + '#' + el.id + '.' + el.className; });
  }
  var out = {innerWidth: innerWidth, clientWidth: doc.clientWidth,
    height: doc.scrollHeight, scrollWidth: doc.scrollWidth, outside: outside(),
    title: box(document.querySelector('h1')), summary: box(document.getElementById('summary')),
    table: box(document.getElementById('summary-mae')),
    verdict: box(document.querySelector('.verdict')),
    figure: box(document.querySelector('figure img')),
    images: Array.from(document.images).map(function (i) { return i.complete && i.naturalWidth; })};
  document.querySelectorAll('details').forEach(function (d) { d.open = true; });
  out.openScrollWidth = doc.scrollWidth;
  out.openOutside = outside();
  out.boxes = Array.from(document.querySelectorAll('.scroll')).map(function (d) {
    return {id: (d.firstElementChild.id || d.closest('details').id),
            scrollWidth: d.scrollWidth, clientWidth: d.clientWidth};
  });
  var pre = document.createElement('pre');
  pre.id = 'layout-probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


@pytest.fixture(scope="module")
def layout(page, tmp_path_factory) -> dict:
    """Positions measured by Chromium in a 1400 px wide window."""
    browser = _browser()
    tmp = tmp_path_factory.mktemp("chromium")
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"),
                     encoding="utf-8")
    done = _chromium(browser, tmp / "profile", f"--window-size={WIDTH},{FIRST_SCREEN}",
                     "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="layout-probe">(.*?)</pre>', done.stdout, flags=re.S)
    assert found, "the probe script did not run: " + done.stderr[-2000:]
    return {**json.loads(html.unescape(found.group(1))), "browser": browser, "tmp": tmp}


def test_first_screen_shows_the_summary_and_the_first_figure(layout):
    assert layout["innerWidth"] == WIDTH
    assert all(layout["images"])  # every figure decoded in the browser
    assert layout["table"]["bottom"] <= FIRST_SCREEN  # the whole summary table
    assert layout["verdict"]["bottom"] <= FIRST_SCREEN
    # the first figure starts on the first screen with a good part of it visible
    assert layout["figure"]["top"] <= FIRST_SCREEN - 200


def test_nothing_is_wider_than_the_page(layout):
    for state in ("", "open"):  # details closed (as delivered) and all opened
        width = layout[f"{state}ScrollWidth" if state else "scrollWidth"]
        assert width <= layout["clientWidth"] <= layout["innerWidth"]
        assert layout[f"{state}Outside" if state else "outside"] == []
    # the biology table really is wider than the page, and scrolls inside its own box
    biology = next(b for b in layout["boxes"] if b["id"] == "details-biology")
    assert biology["scrollWidth"] > biology["clientWidth"]


def test_screenshots(layout, page):
    tmp, browser = layout["tmp"], layout["browser"]
    first, full = tmp / "first.png", tmp / "full.png"
    _chromium(browser, tmp / "profile", f"--window-size={WIDTH},{FIRST_SCREEN}",
              f"--screenshot={first}", page.as_uri())
    _chromium(browser, tmp / "profile", f"--window-size={WIDTH},{layout['height']}",
              f"--screenshot={full}", page.as_uri())
    shots = {p: Image.open(p).convert("RGB") for p in (first, full)}
    assert shots[first].size == (WIDTH, FIRST_SCREEN)
    assert shots[full].size == (WIDTH, layout["height"])
    for img in shots.values():
        assert np.asarray(img).std() > 10  # a rendered page, not a blank canvas
    if os.environ.get("GENEINFER_UPDATE_SCREENSHOTS") == "1":
        _save_screenshot(shots[first], DOCS / "report-first-screen.png", scale=1.0)
        _save_screenshot(shots[full], DOCS / "report-full-page.png", scale=0.5)


def _save_screenshot(img: Image.Image, path: Path, *, scale: float) -> None:
    """Save ``img`` scaled by ``scale``; fall back to a 256-colour palette above the limit."""
    if scale != 1.0:
        img = img.resize((round(img.width * scale), round(img.height * scale)),
                         Image.Resampling.LANCZOS)
    img.save(path, optimize=True)
    if path.stat().st_size > MAX_SCREENSHOT_BYTES:
        img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    assert path.stat().st_size <= MAX_SCREENSHOT_BYTES, path
