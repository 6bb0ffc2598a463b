"""Neural estimators on real GPL96 data (leave-one-dataset-out) and their contracts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from gpl96_data import fold, gene_mae, load_gpl96
from sklearn.base import clone
from sklearn.linear_model import LinearRegression

from geneinfer.errors import GeneinferError
from geneinfer.models.linear import Ridge
from geneinfer.models.neural import DGEX, BottleneckMLP, LandmarkCNN, RidgeResidualMLP
from geneinfer.models.registry import make_model

FAST = {"progress": False, "batch_size": 32, "patience": 6, "device": "cpu"}


@pytest.fixture(scope="module")
def gpl96(shared):
    return load_gpl96(shared)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # small networks on a shared 2-core machine: one thread each is fastest
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _linear(model, X, Y, Xt):
    mean, std = X.mean(0), X.std(0)
    return model.fit((X - mean) / std, Y).predict((Xt - mean) / std)


@pytest.fixture(scope="module")
def borovecki(gpl96) -> dict[str, np.ndarray]:
    """Train on bladderbatch + nakayama, test on borovecki (another lab and normalization)."""
    X, Y, Xt, Yt = fold(gpl96, "borovecki")
    maes = {
        "mean": gene_mae(np.broadcast_to(Y.mean(0), Yt.shape), Yt, Y),
        "ols": gene_mae(_linear(LinearRegression(), X, Y, Xt), Yt, Y),
        "ridge": gene_mae(_linear(Ridge(), X, Y, Xt), Yt, Y),
    }
    models = {
        "dgex": DGEX(hidden=(256,), max_epochs=40, **FAST),
        "ridge-mlp": RidgeResidualMLP(hidden=(256,), max_epochs=40, **FAST),
        "autoencoder": BottleneckMLP(encoder=(256,), bottleneck=32, decoder=(256,),
                                     max_epochs=40, **FAST),
        "cnn": LandmarkCNN(channels=(8, 16), hidden=128, max_epochs=40, **FAST),
    }
    for name, model in models.items():
        maes[name] = gene_mae(model.fit(X, Y).predict(Xt), Yt, Y)
    return maes


def test_dgex_and_ridge_mlp_beat_per_gene_ols_on_held_out_dataset(borovecki):
    for name in ("dgex", "ridge-mlp"):
        assert borovecki[name].mean() < 0.9 * borovecki["ols"].mean(), name
        assert np.mean(borovecki[name] < borovecki["ols"]) > 0.75, name


def test_bottleneck_and_cnn_learn_transferable_structure(borovecki):
    # honest bar: better than predicting the training mean, which ridge does not reach here
    for name in ("autoencoder", "cnn"):
        assert borovecki[name].mean() < borovecki["mean"].mean(), name
        assert borovecki[name].mean() < borovecki["ols"].mean(), name


def test_ridge_mlp_not_worse_than_ridge(gpl96, borovecki):
    assert borovecki["ridge-mlp"].mean() <= 1.03 * borovecki["ridge"].mean()
    X, Y, Xt, Yt = fold(gpl96, "bladderbatch")
    ridge = gene_mae(_linear(Ridge(), X, Y, Xt), Yt, Y).mean()
    mlp = RidgeResidualMLP(hidden=(256,), max_epochs=40, **FAST).fit(X, Y)
    assert gene_mae(mlp.predict(Xt), Yt, Y).mean() <= 1.03 * ridge


def test_ridge_mlp_starts_at_ridge_and_falls_back_to_it(gpl96):
    X, Y, Xt, _ = fold(gpl96, "borovecki")
    # an absurd learning rate wrecks the MLP; early stopping keeps the epoch-0 (= ridge) model
    model = RidgeResidualMLP(hidden=(64,), lr=50.0, max_epochs=3, **FAST)
    model.fit(X[:120], Y[:120], X_val=X[120:], Y_val=Y[120:])
    assert model.history_[0]["best_epoch"] == 0
    xm, xs = X[:120].mean(0), X[:120].std(0)
    ym, ys = Y[:120].mean(0), Y[:120].std(0)
    ridge = Ridge().fit((X[:120] - xm) / xs, (Y[:120] - ym) / ys)
    expected = ridge.predict((Xt - xm) / xs) * ys + ym
    np.testing.assert_allclose(model.predict(Xt), expected, atol=2e-3)


# --------------------------------------------------------------------------- contracts
def _toy(n=160, p=20, q=30, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 4))
    X = 8 + z @ rng.normal(size=(4, p)) + 0.3 * rng.normal(size=(n, p))
    Y = 6 + 2 * np.tanh(z @ rng.normal(size=(4, q))) + 0.2 * rng.normal(size=(n, q))
    return X.astype(np.float32), Y.astype(np.float32)


SMALL = [
    DGEX(hidden=(32,), max_epochs=3, **FAST),
    BottleneckMLP(encoder=(32,), bottleneck=8, decoder=(32,), max_epochs=3, **FAST),
    LandmarkCNN(channels=(4,), kernel_size=3, hidden=32, max_epochs=3, **FAST),
    RidgeResidualMLP(hidden=(32,), max_epochs=3, **FAST),
]


@pytest.mark.parametrize("model", SMALL, ids=lambda m: m.name)
def test_fitted_state_round_trip_without_pickle(model):
    X, Y = _toy()
    fitted = clone(model).fit(X, Y)
    pred = fitted.predict(X)
    assert pred.dtype == np.float32 and pred.shape == Y.shape and np.isfinite(pred).all()
    arrays, meta = fitted.fitted_state()
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    meta = json.loads(json.dumps(meta))  # JSON-able
    restored = make_model(model.name, **model.get_params())
    restored.load_fitted_state(arrays, meta)
    np.testing.assert_allclose(restored.predict(X), pred, atol=1e-6)
    hist = restored.history_[0]["history"]
    assert hist[0]["epoch"] == 0 and all("val_loss" in h and "train_loss" in h for h in hist)


def test_target_chunks_train_separate_networks():
    X, Y = _toy(q=25)
    model = DGEX(hidden=(16,), max_epochs=2, target_chunk_size=10, **FAST).fit(X, Y)
    assert len(model.modules_) == 3
    assert [h["targets"] for h in model.history_] == [[0, 10], [10, 20], [20, 25]]
    assert model.modules_[2].out.out_features == 5
    assert model.predict(X).shape == (len(X), 25)


def test_given_validation_set_drives_early_stopping():
    X, Y = _toy()
    model = DGEX(hidden=(32,), max_epochs=5, **FAST).fit(X[:120], Y[:120], X_val=X[120:],
                                                      Y_val=Y[120:])
    z = (model.predict(X[120:]) - Y[120:]) / model.y_scale_
    assert float(np.mean(z.astype(np.float64) ** 2)) == pytest.approx(
        model.history_[0]["best_val_loss"], rel=1e-3)


def test_missing_targets_are_left_out_not_zeroed():
    X, Y = _toy()
    Y[::3, 0] = np.nan  # a third of gene 0 unmeasured
    model = DGEX(hidden=(16,), max_epochs=2, validation_fraction=0, **FAST).fit(X, Y)
    assert model.y_mean_[0] == pytest.approx(np.nanmean(Y[:, 0]), rel=1e-5)
    assert model.y_scale_[0] == pytest.approx(np.nanstd(Y[:, 0]), rel=1e-4)
    assert all(np.isfinite(h["train_loss"]) for h in model.history_[0]["history"][1:])
    assert np.isfinite(model.predict(X)).all()


def test_bad_input_is_a_clear_user_error():
    X, Y = _toy()
    bad = X.copy()
    bad[5, 3] = np.nan
    with pytest.raises(GeneinferError, match="missing"):
        DGEX(max_epochs=1, **FAST).fit(bad, Y)
    with pytest.raises(GeneinferError, match="samples"):
        DGEX(max_epochs=1, **FAST).fit(X, Y[:-1])
    fitted = DGEX(hidden=(8,), max_epochs=1, **FAST).fit(X, Y)
    with pytest.raises(GeneinferError, match="fitted on 20"):
        fitted.predict(X[:, :10])


# --------------------------------------------------------------------------- groups
def _grouped_toy(n_groups=4, per_group=40, seed=0):
    X, Y = _toy(n=n_groups * per_group, seed=seed)
    groups = np.repeat([f"s{g}" for g in range(n_groups)], per_group)
    return X, Y, groups


def test_groups_hold_out_whole_studies_then_refit_on_all_rows():
    X, Y, groups = _grouped_toy()
    model = DGEX(hidden=(16,), max_epochs=6, validation_fraction=0.25, **FAST)
    model.fit(X, Y, groups=groups)
    sel = model.selection_
    assert sel["method"] == "group-holdout" and sel["refit"] is True
    assert sel["validation_rows"] == 40 and sel["n_groups_scored"] == 1  # one whole study
    early = model.history_[0]["early_stopping"]
    best = early["best_epoch"]
    assert sel["best_epochs"] == [best] and 1 <= best <= 6
    # the refit trains on all 160 rows for exactly the best epoch count
    assert model.history_[0]["best_epoch"] == best
    assert model.history_[0]["steps"] == best * (160 // 32)
    assert len(model.history_[0]["history"]) == best + 1
    # early stopping watched the within-study score, not the MSE: values in [0, 4]
    losses = [h["val_loss"] for h in early["history"]]
    assert all(0.0 <= v <= 4.0 for v in losses)
    assert early["best_val_loss"] == min(losses)


def test_given_validation_data_wins_over_groups():
    X, Y, groups = _grouped_toy()
    model = DGEX(hidden=(16,), max_epochs=3, **FAST)
    model.fit(X[:120], Y[:120], groups=groups[:120], X_val=X[120:], Y_val=Y[120:])
    assert model.selection_["method"] == "holdout"
    assert model.selection_["holdout"] == "given"
    assert "early_stopping" not in model.history_[0]
    # one group (or none): the random split of today
    one = DGEX(hidden=(16,), max_epochs=2, **FAST).fit(X, Y, groups=["a"] * len(X))
    assert one.selection_["method"] == "holdout" and one.selection_["holdout"] == "random"


def test_ridge_mlp_groups_reach_its_ridge_base(gpl96):
    X, Y, _, _ = fold(gpl96, "borovecki")
    groups = np.repeat(["bladderbatch", "nakayama"], [57, 105])
    model = RidgeResidualMLP(hidden=(32,), max_epochs=4, validation_fraction=0.3, **FAST)
    model.fit(X, Y, groups=groups)
    assert model.selection_["method"] == "group-holdout"
    # the refit's ridge base was chosen over the two studies, on all rows
    xm, xs = X.mean(0), X.std(0)
    ym, ys = Y.mean(0), Y.std(0)
    ridge = Ridge().fit((X - xm) / xs, (Y - ym) / ys, groups=groups)
    assert model.ridge_alpha_ == pytest.approx(ridge.alpha_, rel=1e-4)
