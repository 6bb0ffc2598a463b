"""PerGeneSelector: per-gene choice among candidates, on real GPL96 data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from gpl96_data import fold, gene_mae, load_gpl96

from geneinfer.errors import ConfigError
from geneinfer.models.ensemble import PerGeneSelector
from geneinfer.models.registry import make_model

PARAMS = {
    "dgex": {"hidden": [128], "max_epochs": 25, "patience": 5, "batch_size": 32,
             "progress": False, "device": "cpu"},
    "ridge-mlp": {"hidden": [128], "max_epochs": 25, "patience": 5, "batch_size": 32,
                  "progress": False, "device": "cpu"},
}


@pytest.fixture(scope="module")
def data(shared):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    X, Y, Xt, Yt = fold(load_gpl96(shared), "borovecki")
    yield X, Y, Xt, Yt
    torch.set_num_threads(before)


def test_picks_each_genes_best_candidate_on_the_given_validation_set(data):
    X, Y, Xt, Yt = data
    # validation = the nakayama samples at the end; candidates scored there, per gene
    Xf, Yf, Xv, Yv = X[:120], Y[:120], X[120:], Y[120:]
    sel = PerGeneSelector(candidates=("ridge", "dgex"), candidate_params=PARAMS)
    sel.fit(Xf, Yf, X_val=Xv, Y_val=Yv)
    solo = {name: make_model(name, **PARAMS.get(name, {})).fit(Xf, Yf) for name in sel.labels_}
    errors = np.vstack([np.mean(np.abs(solo[n].predict(Xv) - Yv), axis=0) for n in sel.labels_])
    np.testing.assert_allclose(sel.val_error_, errors, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(sel.choice_, np.argmin(errors, axis=0))
    assert 0 < sel.chosen_counts()["dgex"] < Y.shape[1]  # each wins somewhere
    pred = sel.predict(Xt)
    for i, name in enumerate(sel.labels_):
        genes = sel.choice_ == i
        np.testing.assert_allclose(pred[:, genes], solo[name].predict(Xt)[:, genes], atol=1e-5)
    # on the held-out dataset the mix is at least as good as the average candidate
    mix = gene_mae(pred, Yt, Y).mean()
    singles = [gene_mae(solo[n].predict(Xt), Yt, Y).mean() for n in sel.labels_]
    assert mix <= np.mean(singles)


def test_internal_split_refit_and_round_trip(data):
    X, Y, Xt, _ = data
    sel = PerGeneSelector(candidates=("ridge", "knn-ge", "ridge-mlp"), candidate_params=PARAMS,
                          validation_fraction=0.25).fit(X, Y)
    assert sel.val_error_.shape == (3, Y.shape[1])
    pred = sel.predict(Xt)
    arrays, meta = sel.fitted_state()
    meta = json.loads(json.dumps(meta))
    restored = PerGeneSelector(**sel.get_params())
    restored.load_fitted_state(arrays, meta)
    np.testing.assert_allclose(restored.predict(Xt), pred, atol=1e-5)


def test_bad_candidates_rejected():
    with pytest.raises(ConfigError, match="unknown model"):
        PerGeneSelector(candidates=("ridge", "nope")).fit(np.ones((10, 3)), np.ones((10, 2)))
    with pytest.raises(ConfigError, match="unique labels"):
        PerGeneSelector(candidates=("ridge", "ridge")).fit(np.ones((10, 3)), np.ones((10, 2)))
