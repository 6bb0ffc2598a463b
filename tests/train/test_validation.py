"""Groups and validation rules of training, on the embedded real studies: reliability is
measured on studies the model did not see, through the same code path as the final model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from geneinfer.errors import ConfigError
from geneinfer.evaluate.metrics import grouped_gene_scores, per_gene_mae, per_gene_pearson
from geneinfer.examples import load_embedded
from geneinfer.expression import ExpressionData
from geneinfer.genes import Panel
from geneinfer.models.neural import DGEX
from geneinfer.preprocess import to_log2
from geneinfer.train.validation import hold_out_groups, training_groups
from geneinfer.train.workflow import train_model

N_GENES = 800


@pytest.fixture(scope="module")
def studies() -> dict[str, ExpressionData]:
    emb = load_embedded(["bladderbatch", "gse781"])
    bb, gse = emb["bladderbatch"], to_log2(emb["gse781"])
    shared = bb.gene_ids[bb.gene_ids.isin(gse.gene_ids)]
    var = np.nanvar(bb.select_genes(shared).values, axis=0)
    keep = shared[np.argsort(-var)[:N_GENES]]
    return {"bb": bb.select_genes(keep), "gse": gse.select_genes(keep)}


@pytest.fixture(scope="module")
def panel(studies) -> Panel:
    return Panel(name="test", landmarks=list(studies["bb"].gene_ids[::8]))


def test_out_of_group_scores_are_the_other_study_models_scores(studies, panel):
    """Two studies: the stored r of a gene is the mean of (bladderbatch predicted by a model
    of GSE781) and (GSE781 predicted by a model of bladderbatch): train_model on each alone,
    scored on the other, gives the same numbers."""
    bb, gse = studies["bb"], studies["gse"]
    both = train_model([bb, gse], model="ridge", panel=panel, dedup=False, progress=False)
    on_bb = train_model(bb, model="ridge", panel=panel, valid=gse, dedup=False, progress=False)
    on_gse = train_model(gse, model="ridge", panel=panel, valid=bb, dedup=False,
                         progress=False)
    r = np.vstack([on_bb.gene_metrics["valid_r"], on_gse.gene_metrics["valid_r"]])
    np.testing.assert_allclose(both.gene_metrics["valid_r"], np.nanmean(r, axis=0),
                               rtol=1e-4, atol=1e-5)
    mae = (17 * on_bb.gene_metrics["valid_mae"] + 57 * on_gse.gene_metrics["valid_mae"]) / 74
    np.testing.assert_allclose(both.gene_metrics["valid_mae"], mae, rtol=1e-4, atol=1e-5)
    assert both.info["validation_rule"] == "out-of-group"
    assert both.info["n_train_samples"] == 74  # and the model itself uses every profile


def test_one_study_keeps_its_rule_and_says_so(studies, panel, caplog):
    model = train_model(studies["bb"], model="ridge", panel=panel, progress=False)
    assert model.info["validation_rule"] == "holdout"
    assert model.info["selection"]["method"] == "gcv"
    assert model.info["n_train_samples"] == 57 and model.info["n_valid_samples"] == 11
    assert "form one group" in caplog.text and "--groups" in caplog.text


def test_groups_none_is_the_single_group_rule(studies, panel):
    model = train_model([studies["bb"], studies["gse"]], model="ridge", panel=panel,
                        groups="none", dedup=False, progress=False)
    assert model.info["groups"] == {"column": "none", "n_groups": 1, "sizes": {"all": 74}}
    assert model.info["validation_rule"] == "holdout"
    assert model.info["selection"]["method"] == "gcv"


def test_groups_column_makes_batches_the_studies(studies, panel):
    model = train_model(studies["bb"], model="ridge", panel=panel, groups="batch",
                        progress=False)
    info = model.info
    assert info["groups"]["column"] == "batch" and info["groups"]["n_groups"] == 5
    assert info["groups"]["sizes"] == {"5": 19, "2": 18, "1": 11, "4": 5, "3": 4}
    assert info["selection"]["method"] == "leave-one-group-out"
    assert info["n_valid_samples"] == 57  # every batch has 3+ arrays: all scored
    # the stored r is the mean of within-batch correlations of out-of-batch predictions
    assert np.isfinite(model.gene_metrics["valid_r"]).mean() > 0.95


def test_bad_groups_column_is_one_line(studies, panel):
    with pytest.raises(ConfigError, match=r"--groups series: no such sample-metadata column"):
        train_model(studies["bb"], model="ridge", panel=panel, groups="series", progress=False)
    bb = studies["bb"].copy()
    samples = bb.samples.copy()
    samples.loc[samples.index[:2], "batch"] = np.nan
    with pytest.raises(ConfigError, match=r"2 training profiles have no value"):
        training_groups(bb.replace(samples=samples), "batch")


@pytest.mark.parametrize("refit", [False, "auto"])
def test_networks_stop_early_on_whole_held_out_studies(studies, panel, monkeypatch, refit):
    calls: list[dict] = []
    original = DGEX.fit

    def spy(self, X, Y, *, groups=None, X_val=None, Y_val=None):
        calls.append({"groups": groups, "n": len(X),
                      "n_val": None if X_val is None else len(X_val)})
        return original(self, X, Y, groups=groups, X_val=X_val, Y_val=Y_val)

    monkeypatch.setattr(DGEX, "fit", spy)
    model = train_model(studies["bb"], model="dgex", panel=panel, groups="batch", refit=refit,
                        params={"hidden": (16,), "max_epochs": 2}, device="cpu", progress=False)
    info = model.info
    assert info["validation_rule"] == "group-holdout"
    assert info["validation_used_for_early_stopping"] is True
    first = calls[0]
    held = set(studies["bb"].samples["batch"]) - set(first["groups"])
    assert held  # whole batches were held out, scored, and used for early stopping
    sizes = studies["bb"].samples["batch"].value_counts()
    assert first["n_val"] == info["n_valid_samples"] == sizes[sorted(held)].sum()
    if refit:  # 57 profiles: small, so a fresh copy is fitted on all of them (with groups)
        assert len(calls) == 2 and calls[1]["n"] == 57 and calls[1]["n_val"] is None
        assert set(calls[1]["groups"]) == set(sizes.index)
        assert info["n_train_samples"] == 57
    else:
        assert len(calls) == 1
        assert info["n_train_samples"] + info["n_valid_samples"] == 57


def test_hold_out_groups_takes_whole_groups_in_a_seeded_order():
    labels = np.repeat(["a", "b", "c", "d", "e"], [40, 30, 20, 8, 2])
    ids = [f"s{i}" for i in range(100)]
    data = ExpressionData(values=np.zeros((100, 1), np.float32), gene_ids=["1"],
                          sample_ids=ids, scale="log2",
                          samples=pd.DataFrame({"study": labels}, index=ids))
    groups = training_groups(data, "study")
    tr, va = hold_out_groups(groups, fraction=0.2, seed=0, min_train=8)
    again = hold_out_groups(groups, fraction=0.2, seed=0, min_train=8)
    np.testing.assert_array_equal(va, again[1])
    held = set(labels[va])
    assert not held & set(labels[tr]) and "e" not in held  # too small to score
    assert len(va) >= 20 and len(tr) + len(va) == 100


def test_grouped_scores_average_within_study_correlations():
    rng = np.random.default_rng(0)
    Y = rng.normal(size=(30, 4))
    P = Y + rng.normal(scale=0.5, size=Y.shape)
    P[15:] += 3.0  # a study offset: within-study r ignores it
    labels = np.repeat(["x", "y"], 15)
    got = grouped_gene_scores(Y, P, labels)
    want = (per_gene_pearson(Y[:15], P[:15]) + per_gene_pearson(Y[15:], P[15:])) / 2
    np.testing.assert_allclose(got["r"], want)
    np.testing.assert_allclose(got["mae"], per_gene_mae(Y, P))
    assert (got["r"] > per_gene_pearson(Y, P)).all()
