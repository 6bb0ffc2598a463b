"""Report building blocks: the models x test sets table, its best marks and summary sentence,
the reliability counts, and the figures (shared axes, readable ticks, legends off the data).

The whole page (order of sections, images, layout in a browser) is tested in
``test_report_page.py``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from geneinfer.evaluate import plots
from geneinfer.evaluate.report import (
    MEAN_COL,
    ReportData,
    best_mask,
    model_test_table,
    reliability_table,
    render_html,
    summary_sentence,
)


def _metrics(values: dict[str, dict[str, list[float]]], *, view: str = "training"
             ) -> pd.DataFrame:
    """Metric rows from ``{model: {test_set: [mae per fold]}}`` (split "lodo")."""
    rows = [{"model": m, "model_name": m, "split": "lodo", "fold": f"f{k}", "test_set": t,
             "view": view, "mae": v, "median_r": 1 - v}
            for m, sets in values.items() for t, folds in sets.items()
            for k, v in enumerate(folds)]
    return pd.DataFrame(rows)


# ====================================================================== tables
def test_reliability_table_counts_thresholds():
    pg = pd.DataFrame({
        "model": "m", "split": "lodo", "test_set": "a", "gene": list("abcdef"),
        "r": [0.1, 0.35, 0.55, 0.75, 0.9, np.nan],
    })
    row = reliability_table(pg).iloc[0]
    assert row["n_genes"] == 5
    assert (row["r>=0.3"], row["r>=0.5"], row["r>=0.7"]) == (4, 3, 2)
    assert row["share r>=0.7"] == pytest.approx(0.4)
    assert "stored_vs_test_r" not in row  # no stored r: no promise to check


def test_reliability_table_checks_the_stored_r_against_the_test_r():
    rng = np.random.default_rng(0)
    test_r = rng.uniform(-0.2, 0.9, 200)
    pg = pd.DataFrame({"model": "m", "split": "lodo", "test_set": "a",
                       "gene": [str(i) for i in range(200)], "r": test_r,
                       "stored_r": test_r + 0.3 + rng.normal(0, 0.1, 200)})
    pg.loc[0, "stored_r"] = np.nan
    row = reliability_table(pg).iloc[0]
    ok = pg["stored_r"].notna()
    assert row["stored_vs_test_r"] == pytest.approx(
        np.corrcoef(pg["stored_r"][ok], test_r[ok])[0, 1])
    assert 0.9 < row["stored_vs_test_r"] < 1.0
    assert row["stored_r_median"] - row["test_r_median"] == pytest.approx(0.3, abs=0.05)


def test_model_test_table_averages_folds_and_orders_by_mean():
    m = _metrics({"ols": {"a": [1.0, 1.2], "b": [0.9]},
                  "ridge": {"a": [0.8], "b": [1.0]},
                  "knn": {"a": [0.5]}})  # lacks b: its mean is not comparable
    t = model_test_table(m)
    assert list(t.index) == ["ridge", "ols", "knn"]
    assert list(t.columns) == [("lodo", "a"), ("lodo", "b"), MEAN_COL]
    assert t.loc["ols", ("lodo", "a")] == pytest.approx(1.1)
    assert t.loc["ols", MEAN_COL] == pytest.approx(1.0)
    assert np.isnan(t.loc["knn", MEAN_COL])
    # the within-study rows are a separate table; rows of other views never leak in
    both = pd.concat([m, _metrics({"ols": {"a": [9.0]}}, view="within-study")])
    assert model_test_table(both).equals(t)
    assert model_test_table(both, view="within-study").loc["ols", ("lodo", "a")] == 9.0


def test_best_mask_marks_ties_at_the_shown_precision():
    t = pd.DataFrame({"a": [0.9121, 0.9124, 0.95], "b": [1.0, 0.7, np.nan]},
                     index=["x", "y", "z"])
    low = best_mask(t)
    assert low["a"].tolist() == [True, True, False]  # both show as 0.912
    assert low["b"].tolist() == [False, True, False]
    assert best_mask(t, higher_is_better=True)["a"].tolist() == [False, False, True]


@pytest.mark.parametrize(("values", "expected"), [
    ({"ols": {"a": [1.0], "b": [1.0]}, "ridge": {"a": [0.9], "b": [1.08]},
      "pcr": {"a": [0.95], "b": [0.95]}},
     "pcr has the lowest mean MAE over the 2 test sets (0.950), 4.0% below ridge and 5.0% "
     "below ols (the baseline); it is best on 1 of 2 test sets."),
    ({"ols": {"a": [1.0], "b": [1.0]}, "ridge": {"a": [0.8], "b": [0.9]}},
     "ridge has the lowest mean MAE over the 2 test sets (0.850), 15.0% below ols "
     "(the baseline); it is best on 2 of 2 test sets."),
    ({"ols": {"a": [0.7]}, "knn": {"a": [0.8]}},
     "ols (the baseline) has the lowest mean MAE over the 1 test set (0.700), 12.5% below "
     "knn; it is best on 1 of 1 test set."),
    ({"knn": {"a": [0.8]}},
     "knn has the lowest mean MAE over the 1 test set (0.800); it is best on 1 of 1 test set."),
])
def test_summary_sentence(values, expected):
    assert summary_sentence(model_test_table(_metrics(values)), baseline="ols") == expected


def test_summary_sentence_without_a_complete_model():
    t = model_test_table(_metrics({"ols": {"a": [1.0]}, "ridge": {"b": [0.9]}}))
    assert summary_sentence(t, baseline="ols").startswith("No model has an MAE on all 2")


def test_page_from_minimal_inputs_keeps_differing_model_names():
    """Old-style inputs: no view / median_r columns, histories keyed by model only."""
    m = _metrics({"ols": {"a": [1.0]}, "ridge": {"a": [0.9]}}).drop(
        columns=["view", "median_r"])
    m.loc[m["model"] == "ridge", "model_name"] = "ridge-cv"
    data = ReportData(title="t", metrics=m, histories={"dgex": {"train_loss": [1.0, 0.5]}},
                      training="200 arrays", panel="l1000", headline="Does ridge win?",
                      notes=["Panel x: ignored, the field wins"])
    text = render_html(data)
    assert "model_name" in text  # differs from model on one row: kept
    assert 'id="summary-mae"' in text and 'id="summary-r"' not in text
    assert "200 arrays" in text and "l1000" in text and "Panel x" not in text.split("<h2>")[0]
    assert text.index("Does ridge win?") < text.index("ridge has the lowest mean MAE")
    assert 'id="fig-learning"' in text and text.count("<img") == 1


def test_page_without_results_says_so():
    text = render_html(ReportData(title="empty", metrics=pd.DataFrame()))
    assert "No MAE results to compare." in text and "<img" not in text


# ====================================================================== figures
def _drawn(fig: Figure) -> Figure:
    fig.canvas.draw()
    return fig


def _legends_clear_of_axes(fig: Figure) -> None:
    """Every legend box lies outside every axes box (pixels, after layout)."""
    renderer = fig.canvas.get_renderer()
    legends = list(fig.legends) + [a.get_legend() for a in fig.axes if a.get_legend()]
    assert legends, "figure has no legend"
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), ax.get_title()


def test_gene_scatter_shares_axes_orders_panels_and_reports_share_better(rng):
    base = rng.uniform(0.6, 1.8, 500)
    per_gene = {"ols": base, "ridge": base * 0.9, "knn": base * 1.1,
                "pcr": np.where(np.arange(500) < 400, base * 0.8, base * 1.2)}
    fig = _drawn(plots.gene_scatter_vs_baseline(per_gene, base, baseline_name="ols",
                                                order=["pcr", "ridge", "ols", "knn"]))
    assert [ax.get_title() for ax in fig.axes] == [
        "pcr\n80% of genes better than ols", "ridge\n100% of genes better than ols",
        "knn\n0% of genes better than ols"]
    assert len({ax.get_xlim() for ax in fig.axes}) == 1
    assert len({ax.get_ylim() for ax in fig.axes}) == 1
    assert fig.axes[0].get_xlim() == fig.axes[0].get_ylim()
    _legends_clear_of_axes(fig)


def test_gene_distributions_have_one_row_per_model_in_order(rng):
    order = ["pcr", "ridge", "ols"]
    mae = {m: rng.uniform(0.7, 1.8, 300) for m in ("ols", "ridge", "pcr")}
    r = {m: rng.uniform(0.1, 0.6, 300) for m in mae}
    fig = _drawn(plots.gene_distributions(mae, r, order=order, baseline_name="ols"))
    ax_mae, ax_r = fig.axes
    assert [t.get_text() for t in ax_mae.get_yticklabels()] == order
    # one box per model in each panel; the baseline's box is coloured differently
    assert len(ax_mae.patches) == len(ax_r.patches) == 3
    colors = [p.get_facecolor() for p in ax_mae.patches]
    assert colors[0] == colors[1] != colors[2]
    # each box spans its model's quartiles
    for patch, name in zip(ax_mae.patches, order):
        xs = patch.get_path().vertices[:, 0]
        assert (xs.min(), xs.max()) == pytest.approx(tuple(np.percentile(mae[name], [25, 75])))


def test_error_vs_expression_labels_several_ticks_on_a_narrow_log_range(rng):
    n = 2000
    var = rng.uniform(0.2, 0.8, n)  # less than one decade: a bare log axis labels nothing
    mean = rng.normal(7.5, 1.5, n)
    mae = {m: rng.uniform(0.7, 1.8, n) for m in ("ridge", "ols")}
    fig = _drawn(plots.error_vs_expression(mae, mean, var, order=["ridge", "ols"]))
    for ax in fig.axes:
        lo, hi = ax.get_xlim()
        shown = [t.get_text() for t in ax.get_xticklabels()
                 if t.get_text() and lo <= t.get_position()[0] <= hi]
        assert len(shown) >= 4, shown
    assert fig.axes[1].get_xscale() == "log"
    _legends_clear_of_axes(fig)


def test_log_ticks_are_round_and_inside_the_range():
    ticks = plots.log_ticks(0.21, 0.83)
    assert len(ticks) >= 4
    assert ticks.min() >= 0.21 and ticks.max() <= 0.83
    assert all(float(f"{t:.2g}") == t for t in ticks)
    with pytest.raises(ValueError):
        plots.log_ticks(0.0, 1.0)


def test_learning_curves_one_panel_per_model_labelled_by_fold():
    hist = {"dgex|lodo-a": {"train_loss": [1.0, 0.6, 0.5], "valid_loss": [1.1, 0.8, 0.7]},
            "dgex|lodo-b": {"train_loss": [1.0, 0.7], "valid_loss": [1.2, 0.9]},
            "cnn|lodo-a": {"train_loss": [0.9, 0.4]},
            "mlp": {"train_loss": [2.0, 1.0]}}  # old style: fold not recorded
    fig = _drawn(plots.learning_curves(hist, order=["cnn", "dgex"]))
    assert [ax.get_title() for ax in fig.axes] == ["cnn", "dgex", "mlp"]
    assert len(fig.axes[1].get_lines()) == 4  # 2 folds x 2 series
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["fold lodo-a", "fold lodo-b", "fold not named", "train_loss",
                      "valid_loss"]
    _legends_clear_of_axes(fig)


def test_reliability_plot_bars_are_the_shares_averaged_over_test_sets():
    pg = pd.DataFrame({"model": ["a"] * 4 + ["b"] * 4, "split": "lodo",
                       "test_set": ["x", "x", "y", "y"] * 2, "gene": ["g1", "g2"] * 4,
                       "r": [0.8, 0.1, 0.4, 0.6, 0.2, 0.2, 0.9, 0.9]})
    fig = _drawn(plots.reliability_plot(reliability_table(pg), order=["b", "a"]))
    ax = fig.axes[0]
    widths = {c.get_label(): [p.get_width() for p in c] for c in ax.containers}
    # a: r>=0.3 on 1/2 genes in x and 2/2 in y -> 0.75; b: 0/2 and 2/2 -> 0.5
    assert widths["r>=0.3"] == pytest.approx([0.5, 0.75])
    assert widths["r>=0.7"] == pytest.approx([0.5, 0.25])
    _legends_clear_of_axes(fig)


def test_calibration_plot_rows_follow_the_order():
    cal = pd.DataFrame({"model": ["a", "a", "b", "b"], "test_set": "rnaseq",
                        "method": ["none", "offset-scale"] * 2, "mae": [1.7, 0.4, 1.6, 0.5],
                        "mae_std": 0.02, "mean_r": [0.3, 0.31, 0.35, 0.36]})
    fig = _drawn(plots.calibration_plot(cal, order=["b", "a"]))
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["b", "a"]
    assert [ax.get_xlabel() for ax in fig.axes] == ["mae on rnaseq", "mean_r on rnaseq"]
    _legends_clear_of_axes(fig)


def test_model_styles_stay_distinct_past_the_palette():
    styles = plots.model_styles([f"m{i}" for i in range(14)])
    combos = {(s["color"], s["linestyle"]) for s in styles.values()}
    assert len(combos) == 14
    assert plots.model_styles(["x", "y"])["x"] == styles["m0"]
