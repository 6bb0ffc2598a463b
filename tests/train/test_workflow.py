"""Training pipeline on the embedded real studies (bladderbatch RMA log2, GSE781 MAS5 linear)."""

from __future__ import annotations

import numpy as np
import pytest

from geneinfer.errors import ConfigError, GeneinferError, MissingGenesError
from geneinfer.evaluate.metrics import per_gene_mae, per_gene_pearson
from geneinfer.examples import load_embedded
from geneinfer.expression import ExpressionData
from geneinfer.genes import Panel
from geneinfer.models.neural import DGEX
from geneinfer.train import workflow
from geneinfer.train.workflow import DEFAULT_MODEL, train_model, validation_split

N_GENES = 1500  # a gene subset keeps the fits fast; samples are all real


@pytest.fixture(scope="module")
def studies() -> dict[str, ExpressionData]:
    emb = load_embedded(["bladderbatch", "gse781"])
    # genes measured in both studies, most variable in bladderbatch first (real signal)
    bb, gse = emb["bladderbatch"], emb["gse781"]
    shared = bb.gene_ids[bb.gene_ids.isin(gse.gene_ids)]
    var = np.nanvar(bb.select_genes(shared).values, axis=0)
    keep = shared[np.argsort(-var)[:N_GENES]]
    return {"bb": bb.select_genes(keep), "gse": gse.select_genes(keep)}


@pytest.fixture(scope="module")
def panel(studies) -> Panel:
    ids = list(studies["bb"].gene_ids)
    return Panel(name="test", landmarks=ids[::10])  # 150 landmarks, targets = the rest


def test_mixed_scales_train_with_held_out_split(studies, panel):
    bb, gse = studies["bb"], studies["gse"]
    assert (bb.scale, gse.scale) == ("log2", "linear")
    model = train_model([bb, gse], model="ridge", panel=panel, progress=False)
    info = model.info
    assert model.landmark_ids == panel.landmarks
    assert len(model.target_ids) == N_GENES - len(panel.landmarks)
    assert info["panel"]["targets_from_data"] is True
    # two studies: every profile scored by a model fitted on the other study, then the
    # model fitted on all of them
    assert info["validation_rule"] == "out-of-group"
    assert info["groups"]["column"] == "dataset" and info["groups"]["n_groups"] == 2
    assert info["n_train_samples"] + info["dedup"]["removed"] == 74
    assert info["n_valid_samples"] == info["n_train_samples"]
    assert info["selection"]["method"] == "leave-one-group-out"
    # the MAS5 study was put on log2 before stacking: training means are log2-sized
    assert 2 < float(np.median(model.landmark_means)) < 16
    assert info["valid_r_median"] > 0.3  # real co-expression carried to another study
    assert set(model.gene_metrics.columns) >= {"valid_r", "valid_mae", "valid_mae_std"}
    assert model.target_symbols[0] != model.target_ids[0]  # symbols from the annotation


def test_validation_file_metrics_match_predictions(studies, panel):
    model = train_model(
        studies["bb"], model="ridge", panel=panel, valid=studies["gse"], progress=False
    )
    assert model.info["n_train_samples"] == 57 and model.info["n_valid_samples"] == 17
    assert model.info["validation_used_for_early_stopping"] is False  # ridge: GCV inside
    from geneinfer.preprocess import to_log2

    gse = to_log2(studies["gse"])
    pred = model.predict(gse).values
    truth = gse.select_genes(model.target_ids).values
    np.testing.assert_allclose(
        model.gene_metrics["valid_r"], per_gene_pearson(truth, pred), rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(
        model.gene_metrics["valid_mae"], per_gene_mae(truth, pred), rtol=1e-4, atol=1e-6
    )


def test_duplicates_removed_before_split(studies, panel):
    bb = studies["bb"]
    rng = np.random.default_rng(0)
    copies = bb.select_samples([0, 5, 9])
    copies = ExpressionData(
        values=copies.values + rng.normal(0, 0.001, copies.values.shape),
        gene_ids=copies.gene_ids,
        sample_ids=[f"{s}_copy" for s in copies.sample_ids],
        genes=copies.genes,
        scale="log2",
        gene_id_kind=copies.gene_id_kind,
    )
    model = train_model([bb, copies], model="ridge", panel=panel, progress=False)
    assert model.info["dedup"]["removed"] == 3
    assert model.info["dedup"]["dropped"] == {f"{s}_copy": s for s in bb.sample_ids[[0, 5, 9]]}
    kept = train_model([bb, copies], model="ridge", panel=panel, dedup=False, progress=False)
    assert kept.info["n_train_samples"] == 60


def test_missing_values_drop_samples_and_targets(studies, panel, caplog):
    bb = studies["bb"].copy()
    lm_col = bb.gene_ids.get_loc(panel.landmarks[0])
    tg_col = bb.gene_ids.get_loc(studies["bb"].gene_ids[1])
    bb.values[3, lm_col] = np.nan
    bb.values[7, tg_col] = np.nan
    model = train_model(bb, model="ridge", panel=panel, dedup=False, progress=False)
    assert model.info["missing_values"] == {
        "samples_with_missing_landmarks": 1,
        "targets_with_missing_values": 1,
    }
    assert bb.gene_ids[tg_col] not in model.target_ids
    assert model.info["n_train_samples"] == 56  # one study: scored on a share, refit on all
    assert "dropped 1 samples with missing landmark values" in caplog.text


def test_torch_model_gets_the_validation_set(studies, panel, monkeypatch):
    seen = {}
    original = DGEX.fit

    def spy(self, X, Y, *, X_val=None, Y_val=None):
        seen.update(X_val=X_val, Y_val=Y_val)
        return original(self, X, Y, X_val=X_val, Y_val=Y_val)

    monkeypatch.setattr(DGEX, "fit", spy)
    model = train_model(
        studies["bb"],
        model="dgex",
        panel=panel,
        valid=studies["gse"],
        params={"hidden": (16,), "max_epochs": 2},
        device="cpu",
        progress=False,
    )
    assert seen["X_val"].shape == (17, len(panel.landmarks))
    assert seen["Y_val"].shape == (17, len(model.target_ids))
    assert model.estimator.get_params()["device"] == "cpu"
    assert model.info["model"] == "dgex"
    assert model.info["validation_used_for_early_stopping"] is True


def test_validation_split_is_seeded_and_disjoint():
    tr, va = validation_split(50)
    _, va2 = validation_split(50)
    np.testing.assert_array_equal(va, va2)
    assert len(va) == 10 and not set(tr) & set(va) and len(tr) + len(va) == 50
    with pytest.raises(GeneinferError, match="too few"):
        validation_split(5)


def test_user_mistakes_are_clear(studies, panel, tmp_path):
    bb = studies["bb"]
    with pytest.raises(ConfigError, match="unknown model 'boost'"):
        train_model(bb, model="boost", panel=panel)
    with pytest.raises(ConfigError, match="no parameter 'alpha'"):
        train_model(bb, model="ridge", panel=panel, params={"alpha": 1.0})
    with pytest.raises(MissingGenesError, match="landmark genes of panel nowhere"):
        train_model(bb, model="ridge", panel=Panel(name="nowhere", landmarks=["999999999"]))
    with pytest.raises(GeneinferError, match="appears in both"):
        train_model([bb, bb], model="ridge", panel=panel)
    with pytest.raises(GeneinferError, match="no such file"):
        train_model(tmp_path / "absent.gct", panel=panel)
    with pytest.raises(GeneinferError, match="too few"):
        train_model(bb.select_samples(slice(0, 6)), model="ridge", panel=panel)


def test_default_model_is_named_constant(studies, panel):
    model = train_model(studies["gse"], panel=panel, dedup=False, progress=False)
    assert model.info["model"] == DEFAULT_MODEL == workflow.DEFAULT_MODEL


def test_rnaseq_counts_with_ensembl_ids_train_on_l1000(shared):
    """GEUVADIS counts keyed by Ensembl: mapped to Entrez (D-GEX maps), log2-CPM, trained."""
    geuv = load_embedded(["geuvadis"])["geuvadis"]
    assert (geuv.scale, geuv.gene_id_kind) == ("counts", "ensembl")
    model = train_model(geuv, model="ridge", panel="l1000", data_dir=shared, progress=False)
    assert model.gene_id_kind == "entrez"
    assert all(g.isdigit() for g in model.landmark_ids)
    assert 700 < len(model.landmark_ids) < 978
    assert "DDR1" in model.landmark_symbols  # a LINCS landmark, expressed in LCLs
    assert model.info["valid_r_median"] > 0.5
    # prediction maps Ensembl-keyed profiles the same way
    pred = model.predict(geuv.select_samples(slice(0, 5)), data_dir=shared)
    assert pred.shape == (5, len(model.target_ids)) and np.isfinite(pred.values).all()
