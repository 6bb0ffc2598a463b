"""Self-contained HTML report of a study: summary first, then figures, then detailed tables.

The report is built from plain tables (see :class:`ReportData`), so it can be rebuilt from a
results folder without rerunning any model. The page is one file: inline CSS, figures as
base64 PNG data URIs, no JavaScript and no external resources.

Layout, top to bottom:

1. title, training data and panel, then the models x test sets table (MAE on the training
   scale, best per column in bold) next to the same table for median per-gene r, with one
   sentence saying which model won and by how much (:func:`summary_sentence`);
2. figures: per split, per-gene MAE of every model against the baseline, per-gene MAE and r
   distributions per model, and MAE against expression level; then learning curves,
   calibration and reliability;
3. collapsed ``<details>`` sections with the full tables, notes, configuration and versions.
   Every table sits in a box that scrolls sideways, so no table widens the page.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from geneinfer.evaluate import plots
from geneinfer.utils.files import atomic_path

__all__ = [
    "ReportData",
    "best_mask",
    "model_test_table",
    "reliability_table",
    "render_html",
    "summary_sentence",
    "write_report",
]

RELIABILITY_THRESHOLDS: tuple[float, ...] = (0.3, 0.5, 0.7)
MEAN_COL: tuple[str, str] = ("", "mean")
DECIMALS = 3  # summary tables and the summary sentence; ties are judged at this precision


@dataclass
class ReportData:
    """Everything the report shows.

    Parameters
    ----------
    title
        Page title.
    metrics
        One row per (model, split, fold, test_set, view) with at least ``model``,
        ``test_set`` and ``mae``; ``split``, ``view`` (``"training"`` or ``"within-study"``),
        ``median_r`` and the other metric columns are used where present.
    per_gene
        Long table with columns ``model``, ``split``, ``test_set``, ``gene``, ``mae``, ``r``
        (training-scale view).
    gene_stats
        Per-gene ``mean`` and ``var`` of the training data's log2 expression (index = gene).
    histories
        Learning curves: ``{"model|fold": {series: [loss per epoch]}}``; a key without ``|``
        is a model whose fold was not recorded.
    calibration, biology
        Optional tables shown as they are (and plotted where the columns allow).
    config_text, versions, notes
        Shown in collapsed sections at the end.
    baseline
        Model every other model is compared with (its label in ``metrics``).
    training, panel
        One line each describing the training data and the gene panel, shown under the title.
        Empty: the first note starting with "Training" / "Panel" is shown instead.
    headline
        Optional sentence shown above the computed summary sentence (e.g. the study's
        question); it never replaces the computed one.
    """

    title: str
    metrics: pd.DataFrame
    per_gene: pd.DataFrame = field(default_factory=pd.DataFrame)
    gene_stats: pd.DataFrame | None = None
    histories: Mapping[str, Mapping[str, Sequence[float]]] = field(default_factory=dict)
    calibration: pd.DataFrame | None = None
    biology: pd.DataFrame | None = None
    config_text: str = ""
    versions: Mapping[str, str] = field(default_factory=dict)
    notes: Sequence[str] = ()
    baseline: str = "ols"
    training: str = ""
    panel: str = ""
    headline: str = ""


# ====================================================================== tables
def reliability_table(
    per_gene: pd.DataFrame, *, thresholds: Sequence[float] = RELIABILITY_THRESHOLDS
) -> pd.DataFrame:
    """Per (model, split, test set): genes evaluated, how many clear each r threshold and,
    where the per-gene table has the model's stored validation r (``stored_r``), how well
    that promise tells the genes apart on the test set: ``stored_vs_test_r``, the
    correlation over genes of stored r and test r, and both medians."""
    rows = []
    for (model, split, test_set), sub in per_gene.groupby(
        ["model", "split", "test_set"], sort=False
    ):
        r = sub["r"].to_numpy(dtype=float)
        n = int(np.isfinite(r).sum())
        row: dict[str, object] = {
            "model": model, "split": split, "test_set": test_set, "n_genes": n,
        }
        for t in thresholds:
            k = int(np.sum(r >= t))
            row[f"r>={t}"] = k
            row[f"share r>={t}"] = k / n if n else float("nan")
        row.update(_promise(sub))
        rows.append(row)
    return pd.DataFrame(rows)


def _promise(sub: pd.DataFrame) -> dict[str, float]:
    """Stored (validation) r against the test set's r, over genes with both."""
    if "stored_r" not in sub:
        return {}
    stored, test = sub["stored_r"].to_numpy(dtype=float), sub["r"].to_numpy(dtype=float)
    ok = np.isfinite(stored) & np.isfinite(test)
    if ok.sum() < 3:
        return {"stored_r_median": float("nan"), "test_r_median": float("nan"),
                "stored_vs_test_r": float("nan")}
    return {"stored_r_median": float(np.median(stored[ok])),
            "test_r_median": float(np.median(test[ok])),
            "stored_vs_test_r": float(np.corrcoef(stored[ok], test[ok])[0, 1])}


def model_test_table(
    metrics: pd.DataFrame,
    *,
    value: str = "mae",
    view: str = "training",
    order: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Models x test sets: ``value`` averaged over folds, plus its mean over the test sets.

    Parameters
    ----------
    metrics
        The study's metrics table (see :class:`ReportData`).
    value
        Metric column to tabulate.
    view
        Rows of this ``view`` are used (all rows where the table has no ``view`` column).
    order
        Row order; by default ascending mean (lowest MAE first), models missing a test set
        last, because a mean over fewer sets is not comparable.

    Returns
    -------
    pandas.DataFrame
        Index = model; columns = MultiIndex (split, test_set) in order of appearance, then
        :data:`MEAN_COL` (NaN where a model lacks a test set). Empty if nothing matches.
    """
    sub = metrics[metrics["view"] == view] if "view" in metrics else metrics
    if value not in sub or sub[value].notna().sum() == 0:
        return pd.DataFrame()
    sub = sub if "split" in sub else sub.assign(split="")
    cols = pd.MultiIndex.from_tuples(list(dict.fromkeys(zip(sub["split"], sub["test_set"]))),
                                     names=["split", "test_set"])
    table = sub.pivot_table(index="model", columns=["split", "test_set"], values=value,
                            aggfunc="mean").reindex(columns=cols)
    table = table.reindex(list(dict.fromkeys(sub["model"])))
    table[MEAN_COL] = table.mean(axis=1, skipna=False)
    if order is None:
        order = table.sort_values(MEAN_COL, kind="stable", na_position="last").index
    return table.reindex([m for m in order if m in table.index])


def best_mask(table: pd.DataFrame, *, higher_is_better: bool = False,
              decimals: int = DECIMALS) -> pd.DataFrame:
    """True where a cell is the best of its column, judged at the shown precision.

    Values equal after rounding to ``decimals`` are all best: a reader sees them as equal.
    """
    rounded = table.round(decimals)
    best = rounded.max() if higher_is_better else rounded.min()
    return rounded.eq(best, axis=1) & table.notna()


def summary_sentence(mae: pd.DataFrame, *, baseline: str, decimals: int = DECIMALS) -> str:
    """One sentence: which model has the lowest mean MAE, by how much, and on how many sets.

    Parameters
    ----------
    mae
        :func:`model_test_table` of ``mae``, rows in ascending mean.
    baseline
        Name of the baseline model, which is always part of the comparison when present.
    """
    if mae.empty:
        return "No MAE results to compare."
    mean = mae[MEAN_COL].dropna().sort_values(kind="stable")
    n_sets = mae.shape[1] - 1
    sets = f"{n_sets} test set" + ("s" if n_sets != 1 else "")
    if mean.empty:
        return f"No model has an MAE on all {sets}, so none is ranked; see the table."
    win = str(mean.index[0])
    name = f"{win} (the baseline)" if win == baseline else win
    text = f"{name} has the lowest mean MAE over the {sets} ({mean.iloc[0]:.{decimals}f})"
    others = list(dict.fromkeys([str(m) for m in mean.index[1:2]]
                                + ([baseline] if baseline in mean.index else [])))
    gaps = [_gap(mean, win, other, baseline=baseline) for other in others if other != win]
    if gaps:
        text += ", " + " and ".join(gaps)
    wins = int(best_mask(mae.drop(columns=[MEAN_COL]), decimals=decimals).loc[win].sum())
    return f"{text}; it is best on {wins} of {sets}."


def _gap(mean: pd.Series, win: str, other: str, *, baseline: str) -> str:
    pct = 100.0 * (mean[other] - mean[win]) / mean[other] if mean[other] else float("nan")
    return f"{pct:.1f}% below {other}" + (" (the baseline)" if other == baseline else "")


def _metrics_for_display(metrics: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """All metric rows, grouped by view, split, fold, then model in summary order.

    ``model_name`` (the registry name) is dropped where it repeats ``model`` on every row.
    """
    m = metrics
    if "model" not in m:
        return m
    if "model_name" in m and m["model_name"].astype(str).eq(m["model"].astype(str)).all():
        m = m.drop(columns=["model_name"])
    rank = {name: i for i, name in enumerate(order)}
    keys = {c: _appearance_rank(m[c]) for c in ("view", "split", "fold") if c in m}
    keys["model"] = m["model"].map(rank).fillna(len(rank))
    sort = pd.DataFrame(keys).sort_values(list(keys), kind="stable").index
    return m.loc[sort]


def _appearance_rank(values: pd.Series) -> pd.Series:
    first = {v: i for i, v in enumerate(dict.fromkeys(values))}
    return values.map(first)


# ====================================================================== html pieces
def _esc(value: object) -> str:
    return html.escape(str(value))


def _scroll(inner: str) -> str:
    # Wide tables scroll inside their own box instead of widening the page.
    return f'<div class="scroll">{inner}</div>'


def _table(df: pd.DataFrame, *, floatfmt: str = "{:.4f}") -> str:
    return _scroll(df.to_html(index=False, border=0, classes="tbl", na_rep="–",
                              float_format=lambda v: floatfmt.format(v)))


def _summary_table(table: pd.DataFrame, *, caption: str, table_id: str, baseline: str,
                   higher_is_better: bool) -> str:
    """A models x test sets table with the best value of each column marked ``best``."""
    mask = best_mask(table, higher_is_better=higher_is_better)
    head = _summary_head(table.columns)
    body = []
    for model, row in table.iterrows():
        tag = ' <span class="tag">baseline</span>' if model == baseline else ""
        cells = [f'<th scope="row">{_esc(model)}{tag}</th>']
        for col, v in row.items():
            best = bool(mask.at[model, col])
            cls = ' class="best"' if best else ""
            text = "–" if pd.isna(v) else f"{v:.{DECIMALS}f}"
            cells.append(f'<td{cls} data-col="{_esc("/".join(map(str, col)))}">{text}</td>')
        body.append(f'<tr data-model="{_esc(model)}">{"".join(cells)}</tr>')
    return _scroll(f'<table class="summary" id="{table_id}"><caption>{_esc(caption)}</caption>'
                   f'<thead>{head}</thead><tbody>{"".join(body)}</tbody></table>')


def _summary_head(columns: pd.MultiIndex) -> str:
    """One header row, or two where the test sets come from more than one split."""
    sets = [c for c in columns if c != MEAN_COL]
    splits = list(dict.fromkeys(s for s, _ in sets))
    if len(splits) < 2:
        cells = "".join(f"<th>{_esc(t)}</th>" for _, t in sets)
        return f"<tr><th>model</th>{cells}<th>mean</th></tr>"
    groups = "".join(f'<th colspan="{sum(s == split for s, _ in sets)}" class="split">'
                     f"{_esc(split)}</th>" for split in splits)
    names = "".join(f"<th>{_esc(t)}</th>" for _, t in sets)
    return (f'<tr><th rowspan="2">model</th>{groups}<th rowspan="2">mean</th></tr>'
            f"<tr>{names}</tr>")


def _png_size(png: bytes) -> tuple[int, int]:
    # Width and height are the first fields of the IHDR chunk, right after the signature.
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _img(fig: Figure, caption: str, *, fig_id: str) -> str:
    """A ``<figure>`` with the PNG inlined; width/height let the browser lay out at once."""
    png = plots.to_png(fig)
    width, height = _png_size(png)
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure id="{fig_id}"><img alt="{_esc(caption)}" width="{width}" '
            f'height="{height}" src="data:image/png;base64,{data}"/>'
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


def _details(title: str, body: str, *, section_id: str) -> str:
    return (f'<details id="{section_id}"><summary>{_esc(title)}</summary>'
            f'<div class="details-body">{body}</div></details>')


# ====================================================================== page sections
def _note_starting(notes: Iterable[str], word: str) -> str:
    return next((n for n in notes if n.lower().startswith(word)), "")


def _header(data: ReportData) -> str:
    training = data.training or _note_starting(data.notes, "training")
    panel = data.panel or _note_starting(data.notes, "panel")
    lines = [f"<h1>{_esc(data.title)}</h1>",
             f'<p class="meta"><b>Training data:</b> {_esc(training or "not given")}</p>',
             f'<p class="meta"><b>Panel:</b> {_esc(panel or "not given")}</p>']
    if data.headline:
        lines.append(f'<p class="headline">{_esc(data.headline)}</p>')
    return f"<header>{''.join(lines)}</header>"


def _summary(data: ReportData, mae: pd.DataFrame) -> str:
    parts = ['<section id="summary"><h2>Models x test sets</h2>',
             f'<p class="verdict">{_esc(summary_sentence(mae, baseline=data.baseline))}</p>']
    tables = []
    if not mae.empty:
        tables.append(_summary_table(
            mae, caption="MAE (training scale), lower is better", table_id="summary-mae",
            baseline=data.baseline, higher_is_better=False))
    median_r = model_test_table(data.metrics, value="median_r", order=list(mae.index))
    if not median_r.empty:
        tables.append(_summary_table(
            median_r, caption="median per-gene r, higher is better", table_id="summary-r",
            baseline=data.baseline, higher_is_better=True))
    parts.append(f'<div class="summary-tables">{"".join(tables)}</div>')
    parts.append(
        '<p class="hint">Mean over folds for each test set; <b>bold</b> = best in its column '
        f"(ties at {DECIMALS} decimals all bold); rows ordered by mean MAE. MAE is on "
        "per-gene standardized expression (training mean and std, as D-GEX reported).</p>"
        "</section>")
    return "".join(parts)


def _gene_average(per_gene: pd.DataFrame, split: str, value: str) -> pd.DataFrame:
    """Genes x models table of ``value`` averaged over the folds and test sets of ``split``."""
    sub = per_gene[per_gene["split"] == split]
    return sub.pivot_table(index="gene", columns="model", values=value, aggfunc="mean")


def _split_figures(data: ReportData, split: str, order: list[str]) -> list[str]:
    pg = data.per_gene
    sets = list(dict.fromkeys(pg.loc[pg["split"] == split, "test_set"]))
    mae, r = _gene_average(pg, split, "mae"), _gene_average(pg, split, "r")
    label = f"{split}: " if split else ""
    about = (f"{len(mae)} genes; each gene's value is its mean over {len(sets)} test "
             f"set{'s' if len(sets) != 1 else ''} ({', '.join(map(str, sets))})")
    out = [f"<h2>Per-gene errors{': ' + _esc(split) if split else ''}</h2>"]
    key = "".join(ch if ch.isalnum() else "-" for ch in split) or "all"
    if data.baseline in mae and mae.shape[1] > 1:
        out.append(_img(plots.gene_scatter_vs_baseline(
            {c: mae[c].to_numpy() for c in mae}, mae[data.baseline].to_numpy(),
            baseline_name=data.baseline, order=order),
            f"{label}per-gene MAE of each model (y) against {data.baseline} (x); below the "
            f"line y = x the model is better. Panels ordered by mean MAE. {about}.",
            fig_id=f"fig-scatter-{key}"))
    out.append(_img(plots.gene_distributions(
        {c: mae[c].to_numpy() for c in mae}, {c: r[c].to_numpy() for c in r},
        order=order, baseline_name=data.baseline),
        f"{label}distribution of per-gene MAE and per-gene r per model (box: quartiles, "
        f"whiskers: 5th-95th percentile; dashed: the baseline's median). {about}.",
        fig_id=f"fig-dist-{key}"))
    if data.gene_stats is not None and len(data.gene_stats):
        stats = data.gene_stats.reindex(mae.index)
        out.append(_img(plots.error_vs_expression(
            {c: mae[c].to_numpy() for c in mae}, stats["mean"].to_numpy(),
            stats["var"].to_numpy(), order=order),
            f"{label}mean per-gene MAE in 15 equal-count bins of the gene's mean log2 "
            "expression and of its variance in the training data.",
            fig_id=f"fig-expr-{key}"))
    return out


def _other_figures(data: ReportData, order: list[str]) -> list[str]:
    out = []
    if data.histories:
        out += ["<h2>Learning curves</h2>", _img(
            plots.learning_curves(data.histories, order=order),
            "Loss per epoch, one panel per model; colour = fold, line style = series.",
            fig_id="fig-learning")]
    cal = data.calibration
    can_plot_cal = cal is not None and {"model", "method", "mae"} <= set(cal.columns)
    if can_plot_cal or len(data.per_gene):
        out.append("<h2>Calibration and reliability</h2>")
    if can_plot_cal:
        out.append(_img(plots.calibration_plot(cal, order=order),
                        "MAE and mean r on the cross-platform set after each calibration "
                        "method (error bars: std over the few-shot repeats).",
                        fig_id="fig-calibration"))
    if len(data.per_gene):
        out.append(_img(plots.reliability_plot(reliability_table(data.per_gene), order=order),
                        "Share of genes whose per-gene r reaches 0.3, 0.5 and 0.7 (mean over "
                        "the test sets of each split).", fig_id="fig-reliability"))
    return out


def _figures(data: ReportData, order: list[str]) -> str:
    parts = ['<section id="figures">']
    pg = data.per_gene
    if len(pg):
        pg = pg if "split" in pg else pg.assign(split="")
        split_data = replace(data, per_gene=pg)
        for split in dict.fromkeys(pg["split"]):
            parts += _split_figures(split_data, split, order)
    parts += _other_figures(data, order)
    parts.append("</section>")
    return "".join(parts)


_METRICS_HELP = (
    "<p>MAE on per-gene standardized expression (training mean/std, as D-GEX reported); "
    "r = Pearson correlation per gene across test samples; CCC = Lin's concordance; "
    "better_than_{b} = share of genes with lower MAE than {b}. View <em>training</em> uses "
    "the training scale; <em>within-study</em> z-scores each test study on its own.</p>"
)
_CALIBRATION_HELP = (
    "<p>Few-shot calibration samples are used only to fit the calibration; the metrics are on "
    "the remaining samples. Method <em>center</em> compares truth and prediction after "
    "removing each one's study mean (relative expression), so its MAE is not on the same "
    "footing as <em>none</em>.</p>"
)
_BIOLOGY_HELP = (
    "<p>Cross-validated accuracy of a standardized logistic regression on true full profiles, "
    "landmarks only, and landmarks + inferred targets (inferred by a model that never saw the "
    "data set); overlap of the top-N differentially expressed genes in true vs inferred "
    "targets.</p>"
)


def _detail_sections(data: ReportData, order: list[str]) -> str:
    parts = ['<section id="details"><h2>Detailed tables</h2>']
    m = data.metrics
    within = model_test_table(m, value="mae", view="within-study", order=order)
    if not within.empty:
        parts.append(_details("Models x test sets, within-study view (MAE)", _summary_table(
            within, caption="MAE after z-scoring truth and prediction within each test study",
            table_id="summary-within", baseline=data.baseline, higher_is_better=False),
            section_id="details-within"))
    parts.append(_details(
        "All metrics (one row per model, split, fold, test set and view)",
        _METRICS_HELP.format(b=_esc(data.baseline)) + _table(_metrics_for_display(m, order)),
        section_id="details-metrics"))
    if len(data.per_gene):
        parts.append(_details("Per-gene reliability (genes clearing r thresholds)",
                              _table(reliability_table(data.per_gene), floatfmt="{:.3f}"),
                              section_id="details-reliability"))
    if data.calibration is not None and len(data.calibration):
        parts.append(_details("Calibration on the cross-platform set",
                              _CALIBRATION_HELP + _table(data.calibration),
                              section_id="details-calibration"))
    if data.biology is not None and len(data.biology):
        parts.append(_details("Downstream biology",
                              _BIOLOGY_HELP + _table(data.biology, floatfmt="{:.3f}"),
                              section_id="details-biology"))
    notes = "".join(f"<li>{_esc(n)}</li>" for n in data.notes)
    parts.append(_details("Notes", f"<ul>{notes}</ul>", section_id="details-notes"))
    parts.append(_details("Configuration", f"<pre>{_esc(data.config_text)}</pre>",
                          section_id="details-config"))
    parts.append(_details("Versions", f"<pre>{_esc(json.dumps(dict(data.versions), indent=2))}"
                          "</pre>", section_id="details-versions"))
    parts.append("</section>")
    return "".join(parts)


_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#222;
 margin:0 auto;padding:12px 20px 40px;max-width:1400px;line-height:1.35;
 overflow-wrap:anywhere}
h1{font-size:22px;margin:4px 0 6px}
h2{font-size:17px;margin:18px 0 6px;border-bottom:1px solid #ccc;padding-bottom:2px}
p{margin:4px 0}
.meta{color:#444;font-size:14px}
.headline{font-size:15px}
.verdict{font-size:16px;font-weight:600;margin:6px 0 8px}
.hint{color:#555;font-size:12px}
.scroll{overflow-x:auto;max-width:100%}
.summary-tables{display:flex;flex-wrap:wrap;gap:8px 32px;align-items:flex-start}
.summary-tables .scroll{flex:0 1 auto}
table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #e2e2e2;padding:2px 8px;text-align:right;white-space:nowrap;
 overflow-wrap:normal}
th[scope=row],table.tbl td:first-child{text-align:left}
thead th{border-bottom:1px solid #999;background:#f4f4f4}
th.split{text-align:center}
caption{caption-side:top;text-align:left;font-size:13px;color:#444;padding:2px 0}
td.best{font-weight:700;background:#dcebf7}
.tag{font-size:10px;color:#fff;background:#D55E00;border-radius:3px;padding:0 3px;
 font-weight:400}
figure{margin:6px 0 14px}
img{max-width:100%;height:auto;display:block}
figcaption{font-size:12px;color:#444;max-width:1100px}
details{margin:4px 0;border:1px solid #ddd;border-radius:4px;padding:4px 8px}
summary{cursor:pointer;font-weight:600}
.details-body{margin-top:6px}
pre{background:#f6f6f6;padding:6px;font-size:12px;overflow-x:auto;white-space:pre;
 overflow-wrap:normal}
"""


def render_html(data: ReportData) -> str:
    """The report as one HTML string (figures embedded as base64 PNG)."""
    mae = model_test_table(data.metrics, value="mae")
    order = list(mae.index)
    return "\n".join([
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{_esc(data.title)}</title><style>{_CSS}</style></head><body>",
        _header(data),
        _summary(data, mae),
        _figures(data, order),
        _detail_sections(data, order),
        "</body></html>",
    ])


def write_report(data: ReportData, path: str | Path) -> Path:
    """Write :func:`render_html` to ``path`` atomically; return the path."""
    path = Path(path)
    text = render_html(data)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
