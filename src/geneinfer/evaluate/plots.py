"""Figures of a study: model comparison, gene-wise errors, reliability and learning curves.

Every function takes plain tables / arrays and returns a :class:`matplotlib.figure.Figure`
drawn with the non-interactive Agg canvas (no display needed); :func:`to_png` turns a figure
into PNG bytes for embedding in the HTML report.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg", force=False)

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

__all__ = [
    "error_vs_expression",
    "gene_scatter_vs_baseline",
    "learning_curves",
    "model_comparison",
    "r_distribution",
    "to_png",
]


# 20 distinct colours: a study may compare a dozen models in one panel.
_COLORS = tuple(matplotlib.colormaps["tab20"].colors)


def _figure(width: float, height: float) -> Figure:
    # A bare Figure with an Agg canvas never touches pyplot's global state or a display.
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_png(fig: Figure) -> bytes:
    """PNG bytes of ``fig``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def model_comparison(
    metrics: pd.DataFrame,
    *,
    value: str = "mae",
    model_col: str = "model",
    group_col: str = "split",
    ylabel: str | None = None,
) -> Figure:
    """Bar chart of ``value`` per model and group, error bars = std over folds.

    Parameters
    ----------
    metrics
        One row per (model, fold, test set) with columns ``model_col``, ``group_col`` and
        ``value``; rows sharing model and group are the folds that are averaged.
    """
    stats = metrics.groupby([group_col, model_col], sort=False)[value].agg(["mean", "std", "count"])
    groups = list(dict.fromkeys(metrics[group_col]))
    models = list(dict.fromkeys(metrics[model_col]))
    fig = _figure(max(5.0, 1.0 + 0.5 * len(models) * len(groups)), 3.6)
    ax = fig.add_subplot()
    width = 0.8 / max(len(groups), 1)
    x = np.arange(len(models))
    for i, group in enumerate(groups):
        sub = stats.loc[group].reindex(models) if group in stats.index else None
        if sub is None:
            continue
        err = sub["std"].fillna(0.0).to_numpy()
        ax.bar(
            x + (i - (len(groups) - 1) / 2) * width,
            sub["mean"].to_numpy(),
            width,
            yerr=err,
            capsize=3,
            label=str(group),
        )
    ax.set_xticks(x, models, rotation=30, ha="right")
    ax.set_ylabel(ylabel or value)
    ax.set_title(f"{value} by model (error bars: std over folds)")
    ax.legend(fontsize="small")
    return fig


def gene_scatter_vs_baseline(
    per_gene: Mapping[str, np.ndarray],
    baseline: np.ndarray,
    *,
    baseline_name: str = "ols",
    value: str = "MAE",
) -> Figure:
    """Per-gene error of each model (y) against the baseline's (x), one panel per model.

    Points below the diagonal are genes that the model predicts better than the baseline;
    the share of such genes is printed in each panel (the D-GEX paper's key figure).
    """
    names = [n for n in per_gene if n != baseline_name] or list(per_gene)
    ncol = min(3, len(names))
    nrow = int(np.ceil(len(names) / ncol))
    fig = _figure(3.3 * ncol, 3.1 * nrow)
    base = np.asarray(baseline, dtype=float)
    for k, name in enumerate(names):
        ax = fig.add_subplot(nrow, ncol, k + 1)
        other = np.asarray(per_gene[name], dtype=float)
        ok = np.isfinite(base) & np.isfinite(other)
        ax.scatter(base[ok], other[ok], s=2, alpha=0.3, rasterized=True)
        lim = [0.0, float(np.nanmax(np.r_[base[ok], other[ok], 1e-6]))]
        ax.plot(lim, lim, color="black", lw=0.8)
        better = float(np.mean(other[ok] < base[ok])) if ok.any() else float("nan")
        ax.set_title(f"{name}: {better:.0%} genes better", fontsize="small")
        ax.set_xlabel(f"{baseline_name} {value}")
        ax.set_ylabel(f"{name} {value}")
    return fig


def r_distribution(per_gene_r: Mapping[str, np.ndarray], *, title: str = "") -> Figure:
    """Histogram (step) of per-gene Pearson r for each model."""
    fig = _figure(5.5, 3.4)
    ax = fig.add_subplot()
    ax.set_prop_cycle(color=_COLORS)
    bins = np.linspace(-0.5, 1.0, 61)
    for name, r in per_gene_r.items():
        r = np.asarray(r, dtype=float)
        r = r[np.isfinite(r)]
        ax.hist(np.clip(r, -0.5, 1.0), bins=bins, histtype="step", label=f"{name}", lw=1.2)
    for t in (0.3, 0.5, 0.7):
        ax.axvline(t, color="grey", lw=0.6, ls="--")
    ax.set_xlabel("per-gene Pearson r")
    ax.set_ylabel("genes")
    ax.set_title(title or "distribution of per-gene r")
    ax.legend(fontsize="small")
    return fig


def error_vs_expression(
    per_gene_mae: Mapping[str, np.ndarray],
    gene_mean: np.ndarray,
    gene_var: np.ndarray,
    *,
    n_bins: int = 20,
) -> Figure:
    """Mean per-gene MAE in quantile bins of a gene's mean expression and of its variance."""
    fig = _figure(9.0, 3.4)
    for k, (stat, label) in enumerate(((gene_mean, "mean expression"), (gene_var, "variance"))):
        ax = fig.add_subplot(1, 2, k + 1)
        ax.set_prop_cycle(color=_COLORS)
        stat = np.asarray(stat, dtype=float)
        edges = np.unique(np.nanquantile(stat, np.linspace(0, 1, n_bins + 1)))
        which = np.clip(np.searchsorted(edges, stat, side="right") - 1, 0, len(edges) - 2)
        centers = np.array([np.nanmedian(stat[which == b]) for b in range(len(edges) - 1)])
        for name, mae in per_gene_mae.items():
            mae = np.asarray(mae, dtype=float)
            avg = [np.nanmean(mae[which == b]) if (which == b).any() else np.nan
                   for b in range(len(edges) - 1)]
            ax.plot(centers, avg, marker="o", ms=3, label=name)
        ax.set_xlabel(f"gene {label} (training data)")
        ax.set_ylabel("mean MAE")
        if k == 1:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize="x-small")
    return fig


def learning_curves(histories: Mapping[str, Mapping[str, Sequence[float]]]) -> Figure:
    """Loss per epoch of each torch model (``history_`` dict of named series)."""
    fig = _figure(6.0, 3.6)
    ax = fig.add_subplot()
    ax.set_prop_cycle(color=_COLORS)
    for name, hist in histories.items():
        for series, values in hist.items():
            vals = np.asarray(values, dtype=float)
            if vals.ndim != 1 or not len(vals):
                continue
            ax.plot(np.arange(1, len(vals) + 1), vals, label=f"{name}: {series}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title("learning curves")
    ax.legend(fontsize="x-small")
    return fig
