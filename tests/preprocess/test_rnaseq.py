"""Counts -> log2 CPM and TPM on the real GEUVADIS counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from geneinfer.errors import GeneinferError
from geneinfer.expression import ExpressionData
from geneinfer.preprocess import counts_to_log2cpm, counts_to_tpm


@pytest.fixture
def counts(geuvadis: pd.DataFrame) -> ExpressionData:
    sub = geuvadis.iloc[:20]
    return ExpressionData.from_frame(sub, scale="counts", source="geuvadis85_counts.tsv.gz")


def test_log2cpm_matches_pandas(counts, geuvadis):
    frame = geuvadis.iloc[:20].astype(float)
    expected = np.log2(frame.div(frame.sum(axis=1), axis=0) * 1e6 + 1)
    out = counts_to_log2cpm(counts)
    assert out.scale == "log2" and out.gene_ids.equals(counts.gene_ids)
    np.testing.assert_allclose(out.values, expected.to_numpy(), rtol=1e-5, atol=1e-6)
    arr = counts_to_log2cpm(counts.values)
    np.testing.assert_array_equal(arr, out.values)


def test_log2cpm_keeps_nan_and_uses_observed_library(counts):
    X = counts.values.astype(float)
    X[0, :10] = np.nan
    out = counts_to_log2cpm(X)
    assert np.isnan(out[0, :10]).all() and np.isfinite(out[0, 10:]).all()
    lib = np.nansum(X[0])
    np.testing.assert_allclose(out[0, 10:], np.log2(X[0, 10:] / lib * 1e6 + 1), rtol=1e-5)


def test_tpm(counts):
    rng = np.random.default_rng(0)
    lengths = pd.Series(rng.integers(500, 10_000, counts.n_genes), index=counts.gene_ids)
    tpm = counts_to_tpm(counts, lengths.iloc[::-1])  # aligned by gene id, not position
    assert tpm.scale == "linear"
    np.testing.assert_allclose(tpm.values.sum(axis=1), 1e6, rtol=1e-4)
    rate = counts.values / lengths.to_numpy()
    np.testing.assert_allclose(
        tpm.values, rate / rate.sum(axis=1, keepdims=True) * 1e6, rtol=1e-4, atol=1e-3
    )
    # equal lengths: TPM equals CPM
    same = counts_to_tpm(counts.values, np.full(counts.n_genes, 1000.0))
    cpm = counts.values / counts.values.sum(axis=1, keepdims=True) * 1e6
    np.testing.assert_allclose(same, cpm, rtol=1e-4, atol=1e-3)


def test_bad_counts_are_errors(counts):
    lengths = np.full(counts.n_genes, 1000.0)
    lengths[3] = 0
    with pytest.raises(GeneinferError, match=rf"geuvadis85_counts.*{counts.gene_ids[3]}"):
        counts_to_tpm(counts, lengths)
    with pytest.raises(GeneinferError, match="gene lengths for"):
        counts_to_tpm(counts, lengths[:10])
    neg = counts.values.copy()
    neg[2, 7] = -3
    with pytest.raises(GeneinferError, match=rf"negative counts.*{counts.sample_ids[2]}"):
        counts_to_log2cpm(counts.with_values(neg))
    empty = counts.values.copy()
    empty[4] = 0
    with pytest.raises(GeneinferError, match=rf"library size 0.*{counts.sample_ids[4]}"):
        counts_to_log2cpm(counts.with_values(empty))
