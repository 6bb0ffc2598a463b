"""Standardization and the fitted landmark / target preprocessing, with a leakage test."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from geneinfer.errors import GeneinferError, ModelFileError
from geneinfer.expression import ExpressionData
from geneinfer.preprocess import ProfilePreprocessor, QuantileNormalizer, Standardizer


@pytest.fixture(scope="module")
def blocks(bladder) -> dict[str, np.ndarray]:
    """Real profiles split into a 'landmark' and a 'target' gene block, train / test rows."""
    rng = np.random.default_rng(0)
    genes = rng.permutation(bladder.shape[1])
    lm, tg = genes[:978], genes[978:4000]
    rows = rng.permutation(bladder.shape[0])
    train, test = rows[:45], rows[45:]
    return {
        "X_train": bladder[np.ix_(train, lm)],
        "Y_train": bladder[np.ix_(train, tg)],
        "X_test": bladder[np.ix_(test, lm)],
        "Y_test": bladder[np.ix_(test, tg)],
    }


def test_standardizer_matches_sklearn(bladder):
    X = bladder[:30, :500].copy()
    X[3, 4] = np.nan
    X[:, 7] = 5.0  # constant gene
    ours = Standardizer().fit(X)
    ref = StandardScaler().fit(X)
    np.testing.assert_allclose(ours.mean_, ref.mean_, rtol=1e-10)
    np.testing.assert_allclose(ours.scale_, ref.scale_, rtol=1e-10)
    Z = ours.transform(bladder[30:40, :500])
    np.testing.assert_allclose(Z, ref.transform(bladder[30:40, :500]), rtol=1e-5, atol=1e-5)
    assert np.all(ours.transform(X)[:, 7] == 0)
    assert np.isnan(ours.transform(X)[3, 4])
    np.testing.assert_allclose(ours.inverse_transform(ours.transform(X)), X, rtol=1e-5)
    clone = Standardizer.from_state(ours.state())
    np.testing.assert_array_equal(clone.transform(X), ours.transform(X))


def _state_copy(pp: ProfilePreprocessor) -> tuple[dict[str, np.ndarray], str]:
    arrays, meta = pp.state()
    return {k: v.copy() for k, v in arrays.items()}, json.dumps(meta, sort_keys=True)


def test_no_test_set_statistic_reaches_the_state(blocks):
    pp = ProfilePreprocessor().fit(blocks["X_train"], blocks["Y_train"])
    before, meta_before = _state_copy(pp)
    Xt, Yt = blocks["X_test"].copy(), blocks["Y_test"].copy()
    first = pp.transform_landmarks(Xt), pp.transform_targets(Yt)
    # perturb the test set heavily and transform again: the state must not move
    Xt += np.random.default_rng(1).normal(3.0, 2.0, size=Xt.shape)
    Yt *= 1.7
    pp.transform_landmarks(Xt)
    pp.transform_targets(Yt)
    after, meta_after = _state_copy(pp)
    assert meta_after == meta_before and before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])
    # test rows transformed alone or in a batch with others give the same result (no
    # statistics borrowed across the batch)
    single = pp.transform_landmarks(blocks["X_test"][:1])
    np.testing.assert_array_equal(single, first[0][:1])
    # fitting on train + test would have given a different state
    leaky = ProfilePreprocessor().fit(
        np.vstack([blocks["X_train"], blocks["X_test"]]),
        np.vstack([blocks["Y_train"], blocks["Y_test"]]),
    )
    leaky_arrays, _ = leaky.state()
    for key in before:
        assert not np.allclose(leaky_arrays[key], before[key], rtol=0, atol=1e-9), key


def test_outputs_are_standardized_training_profiles(blocks):
    pp = ProfilePreprocessor().fit(blocks["X_train"], blocks["Y_train"])
    Z = pp.transform_targets(blocks["Y_train"])
    np.testing.assert_allclose(Z.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(Z.std(axis=0), 1, atol=1e-3)
    # inverse gives log2 on the training reference's scale: the quantile-normalised targets
    qn_targets = QuantileNormalizer().fit(blocks["Y_train"]).transform(blocks["Y_test"])
    back = pp.inverse_transform_targets(pp.transform_targets(blocks["Y_test"]))
    np.testing.assert_allclose(back, qn_targets, rtol=1e-5, atol=1e-5)


def test_landmark_reference_stands_alone(blocks):
    """At inference only landmarks exist: their state must not depend on the targets."""
    with_targets = ProfilePreprocessor().fit(blocks["X_train"], blocks["Y_train"])
    alone = ProfilePreprocessor().fit(blocks["X_train"])
    np.testing.assert_array_equal(
        alone.transform_landmarks(blocks["X_test"]),
        with_targets.transform_landmarks(blocks["X_test"]),
    )
    with pytest.raises(GeneinferError, match="no fitted targets"):
        alone.transform_targets(blocks["Y_test"])


@pytest.mark.parametrize(
    ("quantile", "standardize"), [(True, True), (True, False), (False, True), (False, False)]
)
def test_state_roundtrip(blocks, quantile, standardize):
    pp = ProfilePreprocessor(quantile=quantile, standardize=standardize)
    pp.fit(blocks["X_train"], blocks["Y_train"])
    arrays, meta = pp.state()
    meta = json.loads(json.dumps(meta))  # what a model file stores
    clone = ProfilePreprocessor.from_state(arrays, meta)
    np.testing.assert_array_equal(
        clone.transform_landmarks(blocks["X_test"]), pp.transform_landmarks(blocks["X_test"])
    )
    Z = pp.transform_targets(blocks["Y_test"])
    np.testing.assert_array_equal(
        clone.inverse_transform_targets(Z), pp.inverse_transform_targets(Z)
    )
    if not quantile and not standardize:
        np.testing.assert_allclose(Z, blocks["Y_test"], rtol=1e-6)


def test_broken_state_and_bad_input(blocks, bladder):
    pp = ProfilePreprocessor().fit(blocks["X_train"], blocks["Y_train"])
    arrays, meta = pp.state()
    with pytest.raises(ModelFileError, match=r"lacks array targets\.mean"):
        ProfilePreprocessor.from_state(
            {k: v for k, v in arrays.items() if k != "targets.mean"}, meta
        )
    with pytest.raises(ModelFileError, match="length"):
        ProfilePreprocessor.from_state(arrays, {**meta, "n_targets": 10})
    with pytest.raises(ModelFileError, match="version"):
        ProfilePreprocessor.from_state(arrays, {**meta, "version": 99})
    with pytest.raises(GeneinferError, match="fitted on 978 genes"):
        pp.transform_landmarks(blocks["X_test"][:, :900])
    linear = ExpressionData(
        values=np.exp2(bladder[:3, :978]),
        gene_ids=range(978),
        sample_ids=range(3),
        scale="linear",
        source="a.gct",
    )
    with pytest.raises(GeneinferError, match=r"a\.gct.*expects log2"):
        pp.transform_landmarks(linear)
