"""Self-contained HTML report of a study: tables plus PNG figures embedded as base64.

The report is built from plain tables (see :class:`ReportData`), so it can be rebuilt from a
results folder without rerunning any model. It needs no network and no JavaScript.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from geneinfer.evaluate import plots
from geneinfer.utils.files import atomic_path

__all__ = ["ReportData", "reliability_table", "render_html", "write_report"]

RELIABILITY_THRESHOLDS: tuple[float, ...] = (0.3, 0.5, 0.7)


@dataclass
class ReportData:
    """Everything the report shows.

    Parameters
    ----------
    metrics
        One row per (model, split, fold, test_set, view) with at least ``mae``, ``mean_r``,
        ``n_genes`` and ``n_samples``.
    per_gene
        Long table with columns ``model``, ``split``, ``test_set``, ``gene``, ``mae``, ``r``
        (training-scale view).
    gene_stats
        Per-gene ``mean`` and ``var`` of the training data (index = gene id).
    histories
        Learning curves of torch models: ``{label: {series: [loss per epoch]}}``.
    calibration, biology
        Optional tables shown as they are.
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


def reliability_table(
    per_gene: pd.DataFrame, thresholds: Sequence[float] = RELIABILITY_THRESHOLDS
) -> pd.DataFrame:
    """Per (model, split, test set): genes evaluated and how many clear each r threshold."""
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
        rows.append(row)
    return pd.DataFrame(rows)


def _img(fig, alt: str) -> str:
    data = base64.b64encode(plots.to_png(fig)).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"/>' \
        f"<figcaption>{html.escape(alt)}</figcaption></figure>"


def _table(df: pd.DataFrame, *, floatfmt: str = "{:.4f}") -> str:
    return df.to_html(
        index=False,
        border=0,
        classes="tbl",
        na_rep="–",
        float_format=lambda v: floatfmt.format(v),
    )


def _gene_average(per_gene: pd.DataFrame, split: str, value: str) -> pd.DataFrame:
    """Genes x models table of ``value`` averaged over the test sets of ``split``."""
    sub = per_gene[per_gene["split"] == split]
    return sub.pivot_table(index="gene", columns="model", values=value, aggfunc="mean")


def _figures(data: ReportData) -> list[str]:
    out: list[str] = []
    m = data.metrics
    train_view = m[m["view"] == "training"] if "view" in m else m
    if len(train_view):
        out.append(_img(
            plots.model_comparison(train_view, value="mae", group_col="split",
                                   ylabel="MAE (standardized expression)"),
            "MAE per model and split (mean over folds and test sets; error bars: std)",
        ))
        out.append(_img(
            plots.model_comparison(train_view, value="mean_r", group_col="split",
                                   ylabel="mean per-gene r"),
            "Mean per-gene Pearson r per model and split",
        ))
    within = m[m["view"] == "within-study"] if "view" in m else m.iloc[:0]
    if len(within):
        out.append(_img(
            plots.model_comparison(within, value="mae", group_col="split",
                                   ylabel="MAE (z-scored within each test study)"),
            "MAE after z-scoring truth and prediction within each test study "
            "(removes between-study offsets)",
        ))
    pg = data.per_gene
    if len(pg):
        for split in dict.fromkeys(pg["split"]):
            mae = _gene_average(pg, split, "mae")
            r = _gene_average(pg, split, "r")
            if data.baseline in mae and mae.shape[1] > 1:
                out.append(_img(
                    plots.gene_scatter_vs_baseline(
                        {c: mae[c].to_numpy() for c in mae}, mae[data.baseline].to_numpy(),
                        baseline_name=data.baseline,
                    ),
                    f"{split}: per-gene MAE of each model vs {data.baseline} "
                    "(below the diagonal = better)",
                ))
            out.append(_img(
                plots.r_distribution({c: r[c].to_numpy() for c in r}, title=split),
                f"{split}: distribution of per-gene r",
            ))
            if data.gene_stats is not None and len(data.gene_stats):
                stats = data.gene_stats.reindex(mae.index)
                out.append(_img(
                    plots.error_vs_expression(
                        {c: mae[c].to_numpy() for c in mae},
                        stats["mean"].to_numpy(), stats["var"].to_numpy(),
                    ),
                    f"{split}: per-gene MAE vs the gene's mean expression and variance",
                ))
    if data.histories:
        out.append(_img(plots.learning_curves(data.histories), "Learning curves (torch models)"))
    return out


_CSS = """
body{font-family:sans-serif;margin:2em;max-width:1200px}
table.tbl{border-collapse:collapse;font-size:12px;margin:0.5em 0 1.5em}
table.tbl th,table.tbl td{border-bottom:1px solid #ddd;padding:2px 6px;text-align:right}
figure{display:inline-block;margin:0.5em}
img{max-width:100%}
pre{background:#f6f6f6;padding:0.5em;font-size:12px;overflow:auto}
"""


def render_html(data: ReportData) -> str:
    """The report as one HTML string (figures embedded as base64 PNG)."""
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(data.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(data.title)}</h1>",
    ]
    parts += [f"<p>{html.escape(n)}</p>" for n in data.notes]
    m = data.metrics
    parts.append("<h2>Models x test sets</h2>")
    parts.append(
        "<p>MAE on per-gene standardized expression (training mean/std, as D-GEX reported); "
        "r = Pearson correlation per gene across test samples; CCC = Lin's concordance; "
        f"better_than_{html.escape(data.baseline)} = share of genes with lower MAE than "
        f"{html.escape(data.baseline)}. View <em>training</em> uses the training scale; "
        "<em>within-study</em> z-scores each test study on its own. Calibration method "
        "<em>center</em> compares truth and prediction after removing each one's study mean "
        "(relative expression), so its MAE is not on the same footing as <em>none</em>.</p>"
    )
    for view in (dict.fromkeys(m["view"]) if "view" in m else [None]):
        sub = m[m["view"] == view] if view is not None else m
        parts.append(f"<h3>view: {html.escape(str(view))}</h3>" if view else "")
        parts.append(_table(sub.drop(columns=["view"], errors="ignore")))
    if len(data.per_gene):
        parts.append("<h2>Per-gene reliability (genes clearing r thresholds)</h2>")
        parts.append(_table(reliability_table(data.per_gene), floatfmt="{:.3f}"))
    if data.calibration is not None and len(data.calibration):
        parts.append("<h2>Calibration on the cross-platform set</h2>")
        parts.append(
            "<p>Few-shot calibration samples are used only to fit the calibration; the "
            "metrics are on the remaining samples.</p>"
        )
        parts.append(_table(data.calibration))
    if data.biology is not None and len(data.biology):
        parts.append("<h2>Downstream biology</h2>")
        parts.append(
            "<p>Cross-validated accuracy of a standardized logistic regression on true full "
            "profiles, landmarks only, and landmarks + inferred targets (inferred by a model "
            "that never saw the data set); overlap of the top-N differentially expressed "
            "genes in true vs inferred targets.</p>"
        )
        parts.append(_table(data.biology, floatfmt="{:.3f}"))
    parts.append("<h2>Figures</h2>")
    parts += _figures(data)
    parts.append("<h2>Configuration</h2>")
    parts.append(f"<pre>{html.escape(data.config_text)}</pre>")
    parts.append("<h2>Versions</h2>")
    parts.append(f"<pre>{html.escape(json.dumps(dict(data.versions), indent=2))}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(data: ReportData, path: str | Path) -> Path:
    """Write :func:`render_html` to ``path`` atomically; return the path."""
    path = Path(path)
    text = render_html(data)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
