"""Figures of a study, drawn the way the field reads them.

Every function takes plain tables / arrays and returns a :class:`matplotlib.figure.Figure`
drawn with the non-interactive Agg canvas (no display needed); :func:`to_png` turns a figure
into PNG bytes for embedding in the HTML report.

Conventions shared by all figures:

* models appear in the caller's ``order`` (the report passes "best mean MAE first"), and each
  model keeps one colour / line style / marker across figures (:func:`model_styles`);
* colours come from the Okabe-Ito palette, which stays distinguishable under the common forms
  of colour blindness; past seven models, line styles and markers tell the models apart;
* legends sit outside the axes (``fig.legend(loc="outside ...")``), never over the data;
* many models are shown as small multiples with shared axes rather than overlaid lines.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg", force=False)

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter

__all__ = [
    "OKABE_ITO",
    "calibration_plot",
    "error_vs_expression",
    "gene_distributions",
    "gene_scatter_vs_baseline",
    "learning_curves",
    "log_ticks",
    "model_styles",
    "reliability_plot",
    "split_history_key",
    "to_png",
]

# Okabe & Ito (2008) without yellow, which is too faint for thin lines on white.
OKABE_ITO: tuple[str, ...] = (
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000",
)
_LINESTYLES: tuple[str, ...] = ("-", "--", ":", "-.")
_MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X")
BETTER, WORSE = "#0072B2", "#D55E00"  # blue / vermillion: the safest contrasting pair
DPI = 100
# Matplotlib 3.10 replaced boxplot(vert=False) by orientation="horizontal" (and deprecated vert).
_HORIZONTAL: dict[str, object] = (
    {"orientation": "horizontal"}
    if tuple(int(p) for p in matplotlib.__version__.split(".")[:2]) >= (3, 10)
    else {"vert": False}
)


def _figure(width: float, height: float) -> Figure:
    # A bare Figure with an Agg canvas never touches pyplot's global state or a display.
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_png(fig: Figure) -> bytes:
    """PNG bytes of ``fig`` at its own size (``figsize * dpi`` pixels)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def model_styles(models: Iterable[str]) -> dict[str, dict[str, str]]:
    """One ``color`` / ``linestyle`` / ``marker`` per model, stable for a given order.

    The first seven models get solid lines in the seven palette colours; later ones cycle the
    colours again with another line style and marker, so up to 28 models stay distinct.
    """
    out: dict[str, dict[str, str]] = {}
    for i, name in enumerate(dict.fromkeys(models)):
        cycle, k = divmod(i, len(OKABE_ITO))
        out[name] = {
            "color": OKABE_ITO[k],
            "linestyle": _LINESTYLES[cycle % len(_LINESTYLES)],
            "marker": _MARKERS[(k + cycle) % len(_MARKERS)],
        }
    return out


def _ordered(names: Iterable[str], order: Sequence[str] | None) -> list[str]:
    """``names`` in ``order`` first, then the others in their own order."""
    names = list(dict.fromkeys(names))
    first = [n for n in (order or ()) if n in names]
    return first + [n for n in names if n not in first]


def _grid(fig: Figure, n: int, ncols: int, **kw) -> list[Axes]:
    """``n`` axes in rows of ``ncols``; the unused cells of the last row are removed."""
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw).ravel()
    for ax in axes[n:]:
        ax.remove()
    return list(axes[:n])


def _finite(values: object) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    return arr[np.isfinite(arr)]


def _padded_range(values: np.ndarray, *, pad: float = 0.03) -> tuple[float, float]:
    """Range of the finite ``values`` widened by ``pad`` of its span on each side."""
    v = _finite(values)
    if not len(v):
        return 0.0, 1.0
    span = float(v.max() - v.min()) or 1.0
    return float(v.min()) - pad * span, float(v.max()) + pad * span


def log_ticks(lo: float, hi: float, *, n: int = 5) -> np.ndarray:
    """About ``n`` round tick values spread evenly on a log axis from ``lo`` to ``hi``.

    Matplotlib's default log locator labels only powers of ten, so a range within one decade
    (typical of gene variances) gets one or no label; these ticks have two significant digits.
    """
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo < hi):
        raise ValueError(f"log ticks need 0 < lo < hi, got {lo}, {hi}")
    # Interior points only: rounding an end point could push it off the axis.
    raw = np.geomspace(lo, hi, n + 2)[1:-1]
    digits = 1 - np.floor(np.log10(raw)).astype(int)
    rounded = np.array([round(v, int(d)) for v, d in zip(raw, digits)])
    return np.unique(rounded[(rounded >= lo) & (rounded <= hi) & (rounded > 0)])


# ---------------------------------------------------------------------- per-gene errors
def gene_scatter_vs_baseline(
    per_gene: Mapping[str, np.ndarray],
    baseline: np.ndarray,
    *,
    baseline_name: str = "ols",
    value: str = "MAE",
    order: Sequence[str] | None = None,
    ncols: int = 6,
) -> Figure:
    """Per-gene error of each model (y) against the baseline's (x), one panel per model.

    All panels share both axes and show the line y = x; genes below it (the model does
    better) are blue, genes above it vermillion. Each title gives the share of genes the
    model predicts better than the baseline, the D-GEX paper's headline comparison.

    Parameters
    ----------
    per_gene
        Model name -> per-gene error, aligned with ``baseline``.
    baseline
        The baseline's per-gene error; the baseline gets no panel of its own.
    order
        Panel order (models not listed follow in their own order).
    ncols
        Panels per row.
    """
    names = [n for n in _ordered(per_gene, order) if n != baseline_name] or list(per_gene)
    base = np.asarray(baseline, dtype=float)
    ncols = max(1, min(ncols, len(names)))
    fig = _figure(2.15 * ncols + 0.4, 2.2 * int(np.ceil(len(names) / ncols)) + 0.5)
    axes = _grid(fig, len(names), ncols, sharex=True, sharey=True)
    lo, hi = _padded_range(np.concatenate([base] + [np.asarray(per_gene[n], float)
                                                    for n in names]))
    for k, (ax, name) in enumerate(zip(axes, names)):
        _scatter_panel(ax, base, np.asarray(per_gene[name], dtype=float), name=name,
                       baseline_name=baseline_name)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal", adjustable="box")
        ax.label_outer()
        if k + ncols >= len(names):  # nothing below this panel: it shows the x tick labels
            ax.xaxis.set_tick_params(labelbottom=True)
    fig.supxlabel(f"{baseline_name} per-gene {value}", fontsize="medium")
    fig.supylabel(f"model's per-gene {value}", fontsize="medium")
    handles = [Line2D([], [], ls="", marker="o", color=c, label=t) for c, t in
               ((BETTER, f"better than {baseline_name}"), (WORSE, f"worse than {baseline_name}"))]
    fig.legend(handles=handles, loc="outside upper center", ncols=2, fontsize="small",
               frameon=False)
    return fig


def _scatter_panel(ax: Axes, base: np.ndarray, other: np.ndarray, *, name: str,
                   baseline_name: str) -> None:
    ok = np.isfinite(base) & np.isfinite(other)
    better = other < base
    for mask, color in ((ok & better, BETTER), (ok & ~better, WORSE)):
        ax.scatter(base[mask], other[mask], s=2, alpha=0.35, color=color, linewidths=0,
                   rasterized=True)
    ax.axline((0, 0), slope=1, color="black", lw=0.8)
    share = float(np.mean(better[ok])) if ok.any() else float("nan")
    ax.set_title(f"{name}\n{share:.0%} of genes better than {baseline_name}",
                 fontsize="small")
    ax.tick_params(labelsize="small")


def gene_distributions(
    per_gene_mae: Mapping[str, np.ndarray],
    per_gene_r: Mapping[str, np.ndarray],
    *,
    order: Sequence[str] | None = None,
    baseline_name: str | None = None,
    r_thresholds: Sequence[float] = (0.3, 0.5, 0.7),
) -> Figure:
    """Box plots of per-gene MAE and per-gene r, one row per model (best first, on top).

    Whiskers span the 5th to 95th percentile and outliers are not drawn: with thousands of
    genes per model they would only paint the tails black. The baseline's box is vermillion
    and its median is repeated as a dashed line across all rows for comparison.
    """
    names = _ordered(list(per_gene_mae) + list(per_gene_r), order)
    fig = _figure(11.0, 0.32 * len(names) + 1.3)
    ax_mae, ax_r = fig.subplots(1, 2, sharey=True)
    for ax, values, label in ((ax_mae, per_gene_mae, "per-gene MAE"),
                              (ax_r, per_gene_r, "per-gene Pearson r")):
        _box_rows(ax, [_finite(values.get(n, ())) for n in names], names,
                  highlight=names.index(baseline_name) if baseline_name in names else None)
        ax.set_xlabel(label)
    for t in r_thresholds:
        ax_r.axvline(t, color="grey", lw=0.6, ls=":")
    ax_mae.set_yticks(range(len(names)), names)
    ax_mae.invert_yaxis()  # the best model (first in order) on top
    return fig


def _box_rows(ax: Axes, data: list[np.ndarray], names: list[str], *,
              highlight: int | None) -> None:
    rows = [d if len(d) else np.array([np.nan]) for d in data]
    parts = ax.boxplot(rows, positions=range(len(names)), whis=(5, 95), showfliers=False,
                       widths=0.6, patch_artist=True, medianprops={"color": "black"},
                       **_HORIZONTAL)
    for i, box in enumerate(parts["boxes"]):
        box.set_facecolor(WORSE if i == highlight else "#BFD9EC")
        box.set_edgecolor("black")
    if highlight is not None and len(data[highlight]):
        ax.axvline(float(np.median(data[highlight])), color=WORSE, lw=0.8, ls="--")
    ax.grid(axis="x", color="#e5e5e5", lw=0.6)
    ax.set_axisbelow(True)


def error_vs_expression(
    per_gene_mae: Mapping[str, np.ndarray],
    gene_mean: np.ndarray,
    gene_var: np.ndarray,
    *,
    n_bins: int = 15,
    order: Sequence[str] | None = None,
) -> Figure:
    """Mean per-gene MAE in quantile bins of a gene's mean expression and of its variance.

    ``gene_mean`` is already on a log scale (mean log2 expression), so it gets a linear axis;
    the variance gets a log axis with round ticks from :func:`log_ticks`.
    """
    names = _ordered(per_gene_mae, order)
    styles = model_styles(names)
    fig = _figure(11.5, 3.6)
    axes = fig.subplots(1, 2)
    stats = ((np.asarray(gene_mean, dtype=float), "gene mean log2 expression (training data)"),
             (np.asarray(gene_var, dtype=float), "gene variance of log2 expression (log axis)"))
    for ax, (stat, label) in zip(axes, stats):
        which, centers = _quantile_bins(stat, n_bins=n_bins)
        if ax is axes[1]:
            _log_axis(ax, "x", centers)
        for name in names:
            mae = np.asarray(per_gene_mae[name], dtype=float)
            avg = [np.nanmean(mae[which == b]) if np.isfinite(mae[which == b]).any() else np.nan
                   for b in range(len(centers))]
            ax.plot(centers, avg, ms=3, label=name, **styles[name])
        ax.set_xlabel(label)
        ax.set_ylabel("mean per-gene MAE in bin")
        ax.grid(color="#e5e5e5", lw=0.6)
    axes[0].xaxis.set_major_locator(MaxNLocator(nbins=8))
    fig.legend(handles=axes[0].get_lines(), loc="outside right upper", fontsize="small",
               frameon=False)
    return fig


def _quantile_bins(stat: np.ndarray, *, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Bin index of every gene (-1 where ``stat`` is missing) and each bin's median."""
    ok = np.isfinite(stat)
    edges = np.unique(np.quantile(stat[ok], np.linspace(0, 1, n_bins + 1))) if ok.any() \
        else np.array([0.0, 1.0])
    which = np.clip(np.searchsorted(edges, stat, side="right") - 1, 0, max(len(edges) - 2, 0))
    which = np.where(ok, which, -1)
    centers = np.array([np.median(stat[which == b]) if (which == b).any() else np.nan
                        for b in range(max(len(edges) - 1, 1))])
    return which, centers


def _log_axis(ax: Axes, which: str, values: np.ndarray, *, pad: float = 1.08) -> None:
    """Log scale on ``which`` ("x" or "y") spanning ``values``, with round plain labels."""
    positive = _finite(values)
    positive = positive[positive > 0]
    getattr(ax, f"set_{which}scale")("log")
    if not len(positive) or positive.min() == positive.max():
        return
    lo, hi = positive.min() / pad, positive.max() * pad
    axis = getattr(ax, f"{which}axis")
    axis.set_major_locator(FixedLocator(log_ticks(lo, hi)))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())
    getattr(ax, f"set_{which}lim")(lo, hi)


# ---------------------------------------------------------------------- training
def split_history_key(key: str) -> tuple[str, str]:
    """``"model|fold"`` -> ``(model, fold)``; a key without ``|`` is a model on fold ``""``."""
    model, _, fold = key.partition("|")
    return model, fold


def learning_curves(
    histories: Mapping[str, Mapping[str, Sequence[float]]],
    *,
    order: Sequence[str] | None = None,
    ncols: int = 4,
) -> Figure:
    """Loss per epoch, one panel per model; colour = fold, line style = series.

    Parameters
    ----------
    histories
        ``{"model|fold": {series name: [value per epoch]}}``; a key without ``|`` is a model
        whose fold was not recorded (legend: "fold not named").
    order
        Panel order.
    """
    by_model: dict[str, dict[str, Mapping[str, Sequence[float]]]] = {}
    for key, hist in histories.items():
        model, fold = split_history_key(key)
        by_model.setdefault(model, {})[fold] = hist
    models = _ordered(by_model, order)
    folds = list(dict.fromkeys(f for m in models for f in by_model[m]))
    series = list(dict.fromkeys(s for m in models for h in by_model[m].values() for s in h))
    fold_color = {f: OKABE_ITO[i % len(OKABE_ITO)] for i, f in enumerate(folds)}
    series_ls = {s: _LINESTYLES[i % len(_LINESTYLES)] for i, s in enumerate(series)}
    ncols = max(1, min(ncols, len(models)))
    fig = _figure(2.9 * ncols + 1.8, 2.5 * int(np.ceil(len(models) / ncols)) + 0.3)
    for ax, model in zip(_grid(fig, len(models), ncols), models):
        for fold, hist in by_model[model].items():
            for name, values in hist.items():
                vals = np.asarray(values, dtype=float)
                if vals.ndim == 1 and len(vals):
                    ax.plot(np.arange(1, len(vals) + 1), vals, color=fold_color[fold],
                            ls=series_ls[name], lw=1.2)
        _loss_axes(ax, model)
    handles = [Line2D([], [], color=c, label=f"fold {f}" if f else "fold not named")
               for f, c in fold_color.items()]
    handles += [Line2D([], [], color="grey", ls=ls, label=s) for s, ls in series_ls.items()]
    fig.legend(handles=handles, loc="outside right upper", fontsize="small", frameon=False)
    return fig


def _loss_axes(ax: Axes, model: str) -> None:
    ys = _finite(np.concatenate([line.get_ydata() for line in ax.get_lines()] or [[]]))
    if len(ys) and ys.min() > 0:
        _log_axis(ax, "y", ys)
    ax.set_title(model, fontsize="medium")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.grid(color="#e5e5e5", lw=0.6)


# ---------------------------------------------------------------------- summaries
def calibration_plot(calibration: pd.DataFrame, *, order: Sequence[str] | None = None) -> Figure:
    """MAE (and mean r) of each model per calibration method, one row of panels per test set.

    Parameters
    ----------
    calibration
        Columns ``model``, ``method``, ``mae`` and optionally ``test_set``, ``mae_std``
        (drawn as error bars: spread over the few-shot repeats) and ``mean_r``.
    """
    table = calibration if "test_set" in calibration else calibration.assign(test_set="")
    values = [v for v in ("mae", "mean_r") if v in table]
    sets = list(dict.fromkeys(table["test_set"]))
    models = _ordered(table["model"], order)
    methods = list(dict.fromkeys(table["method"]))
    fig = _figure(4.2 * len(values) + 1.8, (0.3 * len(models) + 1.0) * len(sets))
    axes = fig.subplots(len(sets), len(values), squeeze=False, sharey=True)
    for row, test_set in zip(axes, sets):
        sub = table[table["test_set"] == test_set]
        for ax, value in zip(row, values):
            _method_dots(ax, sub, value=value, models=models, methods=methods)
            ax.set_xlabel(value + (f" on {test_set}" if test_set else ""))
        row[0].set_yticks(range(len(models)), models)
        row[0].invert_yaxis()
    handles = [Line2D([], [], ls="", marker=_MARKERS[i % len(_MARKERS)],
                      color=OKABE_ITO[i % len(OKABE_ITO)], label=str(m))
               for i, m in enumerate(methods)]
    fig.legend(handles=handles, title="calibration", loc="outside right upper",
               fontsize="small", frameon=False)
    return fig


def _method_dots(ax: Axes, table: pd.DataFrame, *, value: str, models: list[str],
                 methods: list[str]) -> None:
    # Methods are offset vertically within a model's row so their dots never hide each other.
    step = 0.6 / max(len(methods), 1)
    for i, method in enumerate(methods):
        sub = table[table["method"] == method].groupby("model")
        mean = sub[value].mean().reindex(models)
        err = sub["mae_std"].mean().reindex(models) if value == "mae" and "mae_std" in table \
            else None
        y = np.arange(len(models)) + (i - (len(methods) - 1) / 2) * step
        ax.errorbar(mean.to_numpy(), y, xerr=None if err is None else err.to_numpy(), ls="",
                    marker=_MARKERS[i % len(_MARKERS)], color=OKABE_ITO[i % len(OKABE_ITO)],
                    ms=4, capsize=2, lw=0.8)
    ax.grid(axis="x", color="#e5e5e5", lw=0.6)


def reliability_plot(reliability: pd.DataFrame, *, order: Sequence[str] | None = None) -> Figure:
    """Share of genes with r at or above each threshold, per model; one panel per split.

    Parameters
    ----------
    reliability
        :func:`geneinfer.evaluate.report.reliability_table` output: columns ``model``,
        ``split`` and ``share r>=<t>`` per threshold; shares are averaged over test sets.
    """
    share_cols = [c for c in reliability if str(c).startswith("share r>=")]
    splits = list(dict.fromkeys(reliability["split"]))
    models = _ordered(reliability["model"], order)
    colors = [matplotlib.colormaps["viridis"](x) for x in np.linspace(0.15, 0.85,
                                                                       len(share_cols))]
    fig = _figure(4.0 * len(splits) + 1.6, 0.3 * len(models) + 1.1)
    axes = fig.subplots(1, len(splits), squeeze=False, sharey=True)[0]
    height = 0.8 / max(len(share_cols), 1)
    for ax, split in zip(axes, splits):
        means = reliability[reliability["split"] == split].groupby("model")[share_cols].mean()
        for k, (col, color) in enumerate(zip(share_cols, colors)):
            y = np.arange(len(models)) + (k - (len(share_cols) - 1) / 2) * height
            ax.barh(y, means[col].reindex(models).to_numpy(), height=height, color=color,
                    label=col.removeprefix("share "))
        ax.set_xlim(0, 1)
        ax.set_xlabel(f"share of genes ({split})")
        ax.grid(axis="x", color="#e5e5e5", lw=0.6)
        ax.set_axisbelow(True)
    axes[0].set_yticks(range(len(models)), models)
    axes[0].invert_yaxis()
    fig.legend(handles=axes[0].containers, loc="outside right upper", fontsize="small",
               frameon=False)
    return fig
