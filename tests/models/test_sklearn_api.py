"""scikit-learn API of the classical models: estimator checks, pipelines, saved state."""

from __future__ import annotations

import numpy as np
import pytest
from classical_data import landmark_target_split
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save
from sklearn.model_selection import KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from geneinfer.models.knn import KNNGE, SampleKNN
from geneinfer.models.linear import Lasso, LinearRegression, Ridge
from geneinfer.models.pcr import PCARegression
from geneinfer.models.registry import get_model_class, make_model
from geneinfer.models.sample import SampleLasso
from geneinfer.models.stack import StackedModel
from geneinfer.models.svr import SVRRegression

FLOAT32 = (
    "geneinfer models return float32 predictions by contract (expression is float32); "
    "the check insists on float64. Shape is checked in test_multioutput_shape_and_dtype."
)
ESTIMATORS = [
    LinearRegression(),
    Ridge(),
    Lasso(),
    KNNGE(),
    SampleKNN(),
    PCARegression(),
    SVRRegression(max_genes=2),
    SampleLasso(),
    StackedModel(candidates=("ridge", "knn-ge", "pcr")),
]


@pytest.mark.filterwarnings("ignore:SVR fitted on")
@parametrize_with_checks(
    ESTIMATORS,
    expected_failed_checks=lambda est: {"check_regressor_multioutput": FLOAT32},
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.filterwarnings("ignore:SVR fitted on")
@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_multioutput_shape_and_dtype(est):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 8))
    Y = X @ rng.normal(size=(8, 5)) + rng.normal(0, 0.1, (30, 5))
    pred = est.fit(X, Y).predict(X)
    assert pred.shape == Y.shape and pred.dtype == np.float32
    assert est.fit(X, Y[:, 0]).predict(X).shape == (30,)


@pytest.fixture(scope="module")
def real(shared):
    return landmark_target_split(shared, n_landmarks=100, n_targets=150)


REGISTRY = {
    "ols": {},
    "ridge": {"alpha_per_gene": True},
    "lasso": {"n_alphas": 4, "eps": 0.05},
    "knn-ge": {"k": "auto"},
    "knn": {"k": 3},
    "pcr": {"n_components": "auto"},
    "svr": {"max_genes": 4},
    "sample-lasso": {"n_neighbors": 20},
    "stack": {"candidates": ["ridge", "pcr", "knn-ge"]},
}


@pytest.mark.filterwarnings("ignore:SVR fitted on")
@pytest.mark.parametrize("name", list(REGISTRY))
def test_fitted_state_round_trip_through_safetensors(real, name):
    """Registry name -> fit -> arrays + JSON -> new instance -> identical predictions."""
    X, Y = real
    cls = get_model_class(name)
    assert cls.name == name
    model = make_model(name, **REGISTRY[name]).fit(X[:45], Y[:45])
    arrays, meta = model.fitted_state()
    blob = st_save({k: np.ascontiguousarray(v) for k, v in arrays.items()})
    restored = make_model(name, **model.get_params())
    loaded = st_load(blob)
    for key, value in arrays.items():
        np.testing.assert_array_equal(loaded[key], value)
    restored.load_fitted_state(loaded, meta)
    # bit-identical state; BLAS may round differently for differently aligned buffers
    np.testing.assert_allclose(restored.predict(X[45:]), model.predict(X[45:]), rtol=1e-6)


@pytest.mark.filterwarnings("ignore:SVR fitted on")
@pytest.mark.parametrize("name", list(REGISTRY))
def test_pipeline_and_cross_val_score(real, name):
    X, Y = real
    pipe = make_pipeline(StandardScaler(), make_model(name, **REGISTRY[name]))
    scores = cross_val_score(pipe, X, Y[:, :40], cv=KFold(3, shuffle=True, random_state=0))
    assert scores.shape == (3,) and np.all(np.isfinite(scores))
    # better than predicting the training mean on these correlated probes
    assert scores.mean() > 0.0, scores


def test_feature_names_survive_round_trip(real):
    pd = pytest.importorskip("pandas")
    X, Y = real
    frame = pd.DataFrame(X[:, :10], columns=[f"g{i}" for i in range(10)])
    m = Ridge().fit(frame, Y[:, :3])
    arrays, meta = m.fitted_state()
    assert meta["feature_names_in_"] == list(frame.columns)
    restored = Ridge()
    restored.load_fitted_state(arrays, meta)
    np.testing.assert_array_equal(restored.predict(frame), m.predict(frame))
