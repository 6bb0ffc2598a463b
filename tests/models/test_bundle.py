"""Saved models: exact round trips, integrity checks, no pickle, landmark handling."""

from __future__ import annotations

import json
import logging
import os
import pickle
import stat

import numpy as np
import pandas as pd
import pytest

from geneinfer.errors import GeneinferError, InputFormatError, MissingGenesError, ModelFileError
from geneinfer.expression import ExpressionData
from geneinfer.models.bundle import (
    DIGEST_KEY,
    FORMAT_VERSION,
    MODEL_JSON,
    WEIGHTS_FILE,
    InferenceModel,
    json_digest,
)
from geneinfer.models.registry import make_model
from geneinfer.preprocess import ProfilePreprocessor

N_LM, N_TG = 30, 50


def _expression(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Log2-like profiles with shared low-rank structure (as in real arrays)."""
    factors = rng.normal(size=(n, 5))
    lm = 7 + factors @ rng.normal(size=(5, N_LM)) + 0.3 * rng.normal(size=(n, N_LM))
    tg = 6 + factors @ rng.normal(size=(5, N_TG)) + 0.3 * rng.normal(size=(n, N_TG))
    return lm.astype(np.float32), tg.astype(np.float32)


def _bundle(kind: str, rng: np.random.Generator, **params) -> tuple[InferenceModel, np.ndarray]:
    lm, tg = _expression(rng, 120)
    pre = ProfilePreprocessor(quantile=True).fit(lm[:100], tg[:100])
    est = make_model(kind, **params)
    est.fit(pre.transform_landmarks(lm[:100]), pre.transform_targets(tg[:100]))
    lm_ids = [str(1000 + i) for i in range(N_LM)]
    tg_ids = [str(5000 + i) for i in range(N_TG)]
    metrics = pd.DataFrame(
        {"valid_r": rng.uniform(0, 1, N_TG), "valid_mae": rng.uniform(0.1, 1, N_TG)},
        index=tg_ids,
    )
    metrics.iloc[3] = np.nan  # a gene without a metric stays NaN through save/load
    bundle = InferenceModel.from_fitted(
        est,
        pre,
        lm_ids,
        tg_ids,
        landmark_symbols=[f"LM{i}" for i in range(N_LM)],
        target_symbols=[f"TG{i}" for i in range(N_TG)],
        gene_metrics=metrics,
        info={"model": kind, "training_files": ["a.gct"], "n_train_samples": 100},
        landmark_means=lm[:100].mean(axis=0),
    )
    return bundle, lm[100:]


@pytest.fixture
def ridge_bundle(rng):
    return _bundle("ridge", rng)[0]


def _data(X: np.ndarray, ids: list[str], kind: str = "entrez") -> ExpressionData:
    return ExpressionData(
        values=X,
        gene_ids=ids,
        sample_ids=[f"GSM{i}" for i in range(len(X))],
        scale="log2",
        gene_id_kind=kind,
        source="query.gct",
    )


@pytest.mark.parametrize(
    ("kind", "params"),
    [("ridge", {}),
     ("dgex", {"hidden": (32,), "max_epochs": 3, "random_state": 0, "progress": False})],
)
def test_round_trip_identical_predictions(tmp_path, rng, kind, params):
    bundle, X = _bundle(kind, rng, **params)
    before = bundle.predict_log2(X)
    assert before.dtype == np.float32 and before.shape == (len(X), N_TG)
    assert np.isfinite(before).all()
    path = bundle.save(tmp_path / "model")
    assert sorted(p.name for p in path.iterdir()) == [MODEL_JSON, WEIGHTS_FILE]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o777 & ~umask  # not mkdtemp's 0700
    assert stat.S_IMODE((path / WEIGHTS_FILE).stat().st_mode) == 0o666 & ~umask
    loaded = InferenceModel.load(path)
    np.testing.assert_array_equal(loaded.predict_log2(X), before)
    assert loaded.kind == kind
    assert loaded.landmark_ids == bundle.landmark_ids
    assert loaded.target_symbols == bundle.target_symbols
    assert loaded.info == bundle.info
    assert loaded.estimator.get_params() == bundle.estimator.get_params()
    pd.testing.assert_frame_equal(loaded.gene_metrics, bundle.gene_metrics, check_names=False)
    np.testing.assert_array_equal(loaded.landmark_means, bundle.landmark_means)


@pytest.mark.parametrize("kind", ["ols", "lasso", "knn-ge", "knn", "pcr", "svr"])
def test_round_trip_other_classical_models(tmp_path, rng, kind):
    bundle, X = _bundle(kind, rng)
    loaded = InferenceModel.load(bundle.save(tmp_path / kind))
    assert type(loaded.estimator) is type(bundle.estimator)
    # svr: float32 RBF kernel sums differ in the last bits after restoring (see report)
    tol = 1e-5 if kind == "svr" else 0
    np.testing.assert_allclose(loaded.predict_log2(X), bundle.predict_log2(X), rtol=tol, atol=tol)


def test_model_json_is_plain_and_records_checksums(tmp_path, ridge_bundle):
    path = ridge_bundle.save(tmp_path / "m")
    doc = json.loads((path / MODEL_JSON).read_text())
    assert doc["format"] == "geneinfer-model" and doc["format_version"] == FORMAT_VERSION
    assert doc["kind"] == "ridge"
    assert len(doc["files"][WEIGHTS_FILE]["sha256"]) == 64
    assert doc["landmarks"]["ids"][:2] == ["1000", "1001"]
    assert doc["gene_metrics"]["valid_r"][3] is None  # NaN stored as null


def test_save_replaces_a_model_but_not_other_folders(tmp_path, ridge_bundle, rng):
    path = ridge_bundle.save(tmp_path / "m")
    other, X = _bundle("ridge", rng, alphas=[1e4])
    other.save(path)
    np.testing.assert_array_equal(InferenceModel.load(path).predict_log2(X), other.predict_log2(X))
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary leftovers
    busy = tmp_path / "results"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    with pytest.raises(GeneinferError, match="not a geneinfer model"):
        ridge_bundle.save(busy)
    assert (busy / "notes.txt").read_text() == "keep me"


def test_failed_save_leaves_nothing(tmp_path, ridge_bundle):
    ridge_bundle.info["bad"] = object()  # not JSON-able
    with pytest.raises(ModelFileError, match="cannot save"):
        ridge_bundle.save(tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_tampered_weights_rejected(tmp_path, ridge_bundle):
    path = ridge_bundle.save(tmp_path / "m")
    raw = bytearray((path / WEIGHTS_FILE).read_bytes())
    raw[-5] ^= 0xFF  # flip bits inside the last array, same size
    (path / WEIGHTS_FILE).write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        InferenceModel.load(path)


def test_truncated_weights_rejected(tmp_path, ridge_bundle):
    path = ridge_bundle.save(tmp_path / "m")
    raw = (path / WEIGHTS_FILE).read_bytes()
    (path / WEIGHTS_FILE).write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        InferenceModel.load(path)


def test_truncated_json_rejected(tmp_path, ridge_bundle):
    path = ridge_bundle.save(tmp_path / "m")
    text = (path / MODEL_JSON).read_text()
    (path / MODEL_JSON).write_text(text[: len(text) // 3])
    with pytest.raises(ModelFileError, match="not valid JSON"):
        InferenceModel.load(path)


def test_future_format_version_rejected(tmp_path, ridge_bundle):
    path = ridge_bundle.save(tmp_path / "m")
    doc = json.loads((path / MODEL_JSON).read_text())
    doc["format_version"] = FORMAT_VERSION + 1
    (path / MODEL_JSON).write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="newer than this geneinfer"):
        InferenceModel.load(path)


def test_missing_files_rejected(tmp_path, ridge_bundle):
    with pytest.raises(ModelFileError, match="no such model"):
        InferenceModel.load(tmp_path / "nope")
    path = ridge_bundle.save(tmp_path / "m")
    (path / WEIGHTS_FILE).unlink()
    with pytest.raises(ModelFileError, match="missing"):
        InferenceModel.load(path)
    (path / MODEL_JSON).unlink()
    with pytest.raises(ModelFileError, match="missing"):
        InferenceModel.load(path)


def _reseal(path, doc) -> None:
    """Write an edited model.json with a matching digest, as a careful forger would, to reach
    the checks behind the digest."""
    doc["files"][MODEL_JSON][DIGEST_KEY] = json_digest(doc)
    (path / MODEL_JSON).write_text(json.dumps(doc))


def test_inconsistent_json_is_a_model_file_error(tmp_path, ridge_bundle):
    path = ridge_bundle.save(tmp_path / "m")
    doc = json.loads((path / MODEL_JSON).read_text())
    doc["targets"]["ids"] = doc["targets"]["ids"][:-1]  # ids and symbols disagree
    _reseal(path, doc)
    with pytest.raises(ModelFileError, match="inconsistent"):
        InferenceModel.load(path)
    doc["targets"]["symbols"] = doc["targets"]["symbols"][:-1]  # agree, but not with weights
    doc["gene_metrics"] = {k: v[:-1] for k, v in doc["gene_metrics"].items()}
    _reseal(path, doc)
    with pytest.raises(ModelFileError, match="fitted on 50 genes but the model lists 49"):
        InferenceModel.load(path)


@pytest.mark.parametrize("kind", ["ridge", "dgex"])
def test_load_never_unpickles(tmp_path, rng, monkeypatch, kind):
    params = {"hidden": (16,), "max_epochs": 2, "progress": False} if kind == "dgex" else {}
    bundle, X = _bundle(kind, rng, **params)
    path = bundle.save(tmp_path / "m")

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used while loading a model")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    import torch

    monkeypatch.setattr(torch, "load", forbidden)
    loaded = InferenceModel.load(path)
    np.testing.assert_array_equal(loaded.predict_log2(X), bundle.predict_log2(X))


def test_predict_selects_landmarks_by_id_and_reports_metadata(ridge_bundle):
    _, X = _bundle("ridge", np.random.default_rng(1))
    ids = ridge_bundle.landmark_ids
    # shuffled columns plus an extra gene: selection is by id, not position
    order = np.random.default_rng(2).permutation(N_LM)
    extra = np.full((len(X), 1), 5.0, dtype=np.float32)
    data = _data(np.hstack([X[:, order], extra]), [ids[i] for i in order] + ["999999"])
    out = ridge_bundle.predict(data)
    np.testing.assert_allclose(out.values, ridge_bundle.predict_log2(X), rtol=1e-6)
    assert list(out.gene_ids) == ridge_bundle.target_ids
    assert list(out.sample_ids) == list(data.sample_ids)
    assert out.scale == "log2"
    assert list(out.genes.columns[:3]) == ["symbol", "valid_r", "valid_mae"]
    assert out.genes["symbol"].iloc[0] == "TG0"
    assert np.isnan(out.genes["valid_r"].iloc[3])


def test_missing_landmarks_error_lists_them(ridge_bundle):
    _, X = _bundle("ridge", np.random.default_rng(1))
    data = _data(X[:, 2:], ridge_bundle.landmark_ids[2:])
    with pytest.raises(
        MissingGenesError,
        match=r"2 landmark genes of the model missing in query\.gct: 1000 \(LM0\), 1001 \(LM1\); "
        r"train a model on the landmarks this input measures \(geneinfer train --landmarks-from",
    ):
        ridge_bundle.predict(data)


def test_missing_landmarks_imputed_from_training_means(ridge_bundle, caplog):
    _, X = _bundle("ridge", np.random.default_rng(1))
    data = _data(X[:, 2:], ridge_bundle.landmark_ids[2:])
    with caplog.at_level(logging.WARNING):
        out = ridge_bundle.predict(data, missing_landmarks="impute")
    assert "2 of 30 landmark genes missing in query.gct; imputed" in caplog.text
    filled = X.copy()
    filled[:, :2] = ridge_bundle.landmark_means[:2]
    np.testing.assert_allclose(out.values, ridge_bundle.predict_log2(filled), rtol=1e-6)
    with pytest.raises(GeneinferError, match="'error' or 'impute'"):
        ridge_bundle.predict(data, missing_landmarks="zero")


def test_nan_landmark_values_are_named_unless_imputed(ridge_bundle):
    """As in ``geneinfer predict``: a missing landmark value is an error naming the sample
    and the gene, or is filled with the training mean when asked to."""
    _, X = _bundle("ridge", np.random.default_rng(1))
    X = X.copy()
    X[0, 5] = np.nan
    data = _data(X, ridge_bundle.landmark_ids)
    with pytest.raises(InputFormatError, match=r"1 missing \(NaN\) landmark values.*1005"):
        ridge_bundle.predict(data)
    imputed = ridge_bundle.predict(data, missing_landmarks="impute")
    assert np.isfinite(imputed.values).all()
    filled = X.copy()
    filled[0, 5] = ridge_bundle.landmark_means[5]
    np.testing.assert_allclose(imputed.values, ridge_bundle.predict_log2(filled), rtol=1e-6)


def test_symbol_keyed_input_uses_landmark_symbols(ridge_bundle):
    _, X = _bundle("ridge", np.random.default_rng(1))
    data = _data(X, ridge_bundle.landmark_symbols, kind="symbol")
    np.testing.assert_allclose(
        ridge_bundle.predict(data).values, ridge_bundle.predict_log2(X), rtol=1e-6
    )


def test_linear_scale_input_is_put_on_log2(ridge_bundle):
    _, X = _bundle("ridge", np.random.default_rng(1))
    linear = ExpressionData(
        values=np.exp2(X) * 40,  # MAS5-like intensities (hundreds to thousands)
        gene_ids=ridge_bundle.landmark_ids,
        sample_ids=[f"s{i}" for i in range(len(X))],
        scale="linear",
    )
    shifted = ridge_bundle.predict_log2(np.log2(np.exp2(X) * 40))
    np.testing.assert_allclose(ridge_bundle.predict(linear).values, shifted, rtol=1e-5)


# ---------------------------------------------------------------------- scikit-learn estimator
def test_inference_model_is_a_scikit_learn_estimator(tmp_path):
    """Pipeline, clone and cross_val_predict on DataFrames with gene ids as columns; a loaded
    model keeps its saved preprocessing."""
    from sklearn.base import clone
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import Pipeline

    from geneinfer.examples import load_embedded
    from geneinfer.genes import get_panel

    data = load_embedded(["bladderbatch"])["bladderbatch"]
    landmarks = [g for g in get_panel("l1000").landmarks if g in data.gene_ids]
    targets = [g for g in data.gene_ids if g not in set(landmarks)][:200]
    X, Y = data.select_genes(landmarks).to_frame(), data.select_genes(targets).to_frame()
    pred = cross_val_predict(InferenceModel("ridge"), X, Y, cv=3)
    assert pred.shape == (57, 200) and np.isfinite(pred).all()
    pipe = Pipeline([("m", InferenceModel("ridge"))]).fit(X, Y)
    out = pipe.predict(X)
    assert list(out.columns) == targets and list(out.index) == list(X.index)
    # save and load: predict on a DataFrame applies the saved preprocessing
    fitted = pipe.named_steps["m"]
    loaded = InferenceModel.load(fitted.save(tmp_path / "m"))
    shuffled = X[X.columns[::-1]]  # columns are matched by gene id
    np.testing.assert_allclose(loaded.predict(shuffled).to_numpy(), out.to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(Pipeline([("m", loaded)]).predict(X), out.to_numpy(), rtol=1e-6)
    again = clone(loaded)
    assert again.get_params() == loaded.get_params() and again.model == "ridge"
    assert not hasattr(again, "estimator_")
    np.testing.assert_allclose(again.fit(X, Y).predict(X), out, rtol=1e-5)
    with pytest.raises(MissingGenesError, match="landmark genes of the model"):
        loaded.predict(X.drop(columns=landmarks[:3]))


@pytest.mark.parametrize("kind", ["ridge", "dgex"])
def test_predict_log2_in_row_batches_equals_one_batch(kind, monkeypatch):
    """Profiles are predicted PREDICT_ROWS at a time (memory stays bounded on a large
    held-out set); rows with a missing landmark stay NaN and the others are unchanged."""
    import geneinfer.models.bundle as bundle_module

    params = {"hidden": [16], "max_epochs": 2, "device": "cpu",
              "progress": False} if kind == "dgex" else {}
    bundle, X = _bundle(kind, np.random.default_rng(3), **params)
    X = np.vstack([X, X[::-1] + 0.1]).astype(np.float32)  # 40 profiles
    X[[4, 17, 33], [0, 9, 29]] = np.nan
    whole = bundle.predict_log2(X)
    monkeypatch.setattr(bundle_module, "PREDICT_ROWS", 7)  # 37 complete rows: 6 batches
    batched = bundle.predict_log2(X)
    assert np.isnan(batched[[4, 17, 33]]).all()
    np.testing.assert_allclose(batched, whole, rtol=1e-6, atol=1e-6, equal_nan=True)
    assert np.isfinite(np.delete(batched, [4, 17, 33], axis=0)).all()
