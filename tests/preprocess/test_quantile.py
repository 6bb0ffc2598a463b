"""Quantile normalization against a straightforward reference on real HG-U133A data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from geneinfer.errors import GeneinferError, ModelFileError
from geneinfer.preprocess import QuantileNormalizer, counts_to_log2cpm, quantile_normalize


def reference_fit(X: np.ndarray) -> np.ndarray:
    """Mean of the sorted samples; a sample with NaN is stretched onto the full grid."""
    n_ref = X.shape[1]
    rows = []
    for x in X.tolist():
        obs = sorted(v for v in x if v == v)  # v != v only for NaN
        grid = np.arange(n_ref) * (len(obs) - 1) / (n_ref - 1)
        rows.append(np.interp(grid, np.arange(len(obs)), obs))
    return np.mean(rows, axis=0)


def reference_transform(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """One sample: tied values share their mean rank; rank r of m -> ref at (r-1)/(m-1)."""
    ref = reference.tolist()
    out = np.full(x.shape, np.nan)
    x = x.tolist()
    observed = [i for i in range(len(x)) if x[i] == x[i]]
    order = sorted(observed, key=lambda i: x[i])
    m = len(order)
    start = 0
    while start < m:
        stop = start
        while stop + 1 < m and x[order[stop + 1]] == x[order[start]]:
            stop += 1
        mean_rank = (start + stop) / 2 + 1  # 1-based average rank of the tie group
        pos = (mean_rank - 1) / (m - 1) * (len(ref) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(ref) - 1)
        value = ref[lo] + (pos - lo) * (ref[hi] - ref[lo])
        for i in order[start : stop + 1]:
            out[i] = value
        start = stop + 1
    return out


@pytest.fixture(scope="module")
def naka_log2(nakayama) -> np.ndarray:
    # MAS5 values with one decimal: many exact ties, a hard case for rank handling
    return np.log2(np.maximum(nakayama, 1.0))


@pytest.mark.parametrize("which", ["bladder", "naka_log2"])
def test_matches_reference_on_real_data(request, which):
    X = request.getfixturevalue(which)
    train, test = X[:30], X[40:44]
    qn = QuantileNormalizer().fit(train)
    np.testing.assert_allclose(qn.reference_, reference_fit(train), rtol=1e-12)
    out = qn.transform(test)
    assert out.dtype == np.float32 and out.shape == test.shape
    for x, y in zip(test, out):
        np.testing.assert_allclose(y, reference_transform(x, qn.reference_), rtol=1e-6)
    if which == "naka_log2":
        assert len(np.unique(test[0])) < test.shape[1] / 2  # ties really were exercised


def test_missing_values(bladder):
    rng = np.random.default_rng(2)
    train = bladder[:30].copy()
    train[rng.random(train.shape) < 0.02] = np.nan
    qn = QuantileNormalizer().fit(train)
    np.testing.assert_allclose(qn.reference_, reference_fit(train), rtol=1e-12)
    test = bladder[30:34].copy()
    test[0, :500] = np.nan
    test[1, rng.random(test.shape[1]) < 0.3] = np.nan
    out = qn.transform(test)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(test))  # NaN stays missing
    for x, y in zip(test, out):
        np.testing.assert_allclose(y, reference_transform(x, qn.reference_), rtol=1e-6)
    # a sample with missing genes still spans the whole reference
    assert np.nanmin(out[1]) == pytest.approx(qn.reference_[0], rel=1e-6)
    assert np.nanmax(out[1]) == pytest.approx(qn.reference_[-1], rel=1e-6)


def test_training_samples_take_the_reference_exactly(bladder):
    X = bladder[:20]
    out = quantile_normalize(X)
    ref = QuantileNormalizer().fit(X).reference_
    for row, y in zip(X, out):
        if len(np.unique(row)) == len(row):
            np.testing.assert_allclose(np.sort(y), ref, rtol=1e-6)
        assert spearmanr(row, y)[0] == pytest.approx(1.0)


def test_rnaseq_mapped_onto_array_reference(bladder, geuvadis):
    """D-GEX mapped GTEx / 1000G RNA-seq onto the microarray reference the same way."""
    n_genes = geuvadis.shape[1]
    qn = QuantileNormalizer().fit(bladder[:, :n_genes])
    rna = counts_to_log2cpm(geuvadis.to_numpy(dtype=float))
    out = qn.transform(rna)
    assert out.shape == rna.shape
    # each RNA-seq sample now has the array distribution (up to tie averaging) and its order
    np.testing.assert_allclose(np.median(out, axis=1), np.median(qn.reference_), atol=0.05)
    assert np.quantile(out, 0.99) == pytest.approx(np.quantile(qn.reference_, 0.99), abs=0.05)
    rho = [spearmanr(a, b)[0] for a, b in zip(rna[:5], out[:5])]
    np.testing.assert_allclose(rho, 1.0, atol=1e-9)
    one = qn.transform(rna[7:8])  # a single new sample works too
    np.testing.assert_array_equal(one, out[7:8])


def test_state_roundtrip_and_errors(bladder):
    qn = QuantileNormalizer().fit(bladder[:10, :300])
    clone = QuantileNormalizer.from_state(qn.state())
    np.testing.assert_array_equal(
        clone.transform(bladder[10:12, :300]), qn.transform(bladder[10:12, :300])
    )
    with pytest.raises(GeneinferError, match=r"input has 200 genes.*fitted on 300"):
        qn.transform(bladder[:2, :200])
    with pytest.raises(GeneinferError, match="not fitted"):
        QuantileNormalizer().transform(bladder[:2])
    with pytest.raises(ModelFileError):
        QuantileNormalizer.from_state({"reference": np.array([1.0, np.nan])})
