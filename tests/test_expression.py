"""Tests of the ExpressionData container."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from geneinfer import ExpressionData
from geneinfer.errors import GeneinferError, MissingGenesError


def make(n_samples: int = 4, n_genes: int = 5) -> ExpressionData:
    values = np.arange(n_samples * n_genes, dtype=np.float64).reshape(n_samples, n_genes)
    genes = pd.DataFrame(
        {"symbol": [f"G{i}" for i in range(n_genes)]}, index=[str(i) for i in range(n_genes)]
    )
    samples = pd.DataFrame(
        {"dataset": ["a"] * n_samples}, index=[f"s{i}" for i in range(n_samples)]
    )
    return ExpressionData(
        values, genes.index, samples.index, genes=genes, samples=samples, scale="log2"
    )


def test_values_are_float32_and_ids_strings():
    d = ExpressionData(np.ones((2, 3), dtype=np.float64), [1, 2, 3], ["a", "b"])
    assert d.values.dtype == np.float32
    assert list(d.gene_ids) == ["1", "2", "3"]
    assert d.shape == (2, 3)
    assert d.genes.index.equals(d.gene_ids)


def test_select_genes_orders_and_reports_missing():
    d = make()
    sub = d.select_genes(["3", "1"])
    np.testing.assert_array_equal(sub.values, d.values[:, [3, 1]])
    assert list(sub.genes["symbol"]) == ["G3", "G1"]
    with pytest.raises(MissingGenesError, match=r"2 genes missing.*x, y"):
        d.select_genes(["1", "x", "y"])
    assert d.missing_genes(["1", "x"]) == ["x"]
    dropped = d.select_genes(["1", "x"], missing="drop")
    assert list(dropped.gene_ids) == ["1"]
    padded = d.select_genes(["1", "x"], missing="nan")
    assert np.isnan(padded.values[:, 1]).all()
    assert padded.n_missing() == d.n_samples


def test_select_samples_by_ids_mask_and_slice():
    d = make()
    assert list(d.select_samples(["s2", "s0"]).sample_ids) == ["s2", "s0"]
    mask = np.array([True, False, True, False])
    np.testing.assert_array_equal(d.select_samples(mask).values, d.values[mask])
    view = d.select_samples(slice(1, 3))
    assert np.shares_memory(view.values, d.values)
    with pytest.raises(GeneinferError, match="unknown sample ids: nope"):
        d.select_samples(["nope"])


def test_rejects_duplicates_and_shape_mismatch():
    with pytest.raises(GeneinferError, match=r"duplicate gene ids.*a"):
        ExpressionData(np.ones((1, 2)), ["a", "a"], ["s"])
    with pytest.raises(GeneinferError, match="3 gene ids for 2 matrix columns"):
        ExpressionData(np.ones((1, 2)), ["a", "b", "c"], ["s"])
    with pytest.raises(GeneinferError, match="unknown scale"):
        ExpressionData(np.ones((1, 1)), ["a"], ["s"], scale="ln")


def test_nan_is_kept():
    values = np.array([[1.0, np.nan], [np.nan, 4.0]])
    d = ExpressionData(values, ["a", "b"], ["s1", "s2"])
    assert d.n_missing() == 2
    assert np.isnan(d.values[0, 1])


def test_concat_samples_joins():
    a = make(2, 4)
    b = ExpressionData(np.ones((3, 3)), ["1", "2", "9"], ["t0", "t1", "t2"], scale="log2")
    with pytest.raises(GeneinferError, match="gene ids differ"):
        ExpressionData.concat_samples([a, b])
    inner = ExpressionData.concat_samples([a, b], join="inner")
    assert list(inner.gene_ids) == ["1", "2"] and inner.n_samples == 5
    assert inner.scale == "log2"
    outer = ExpressionData.concat_samples([a, b], join="outer")
    assert outer.n_genes == 5
    assert np.isnan(outer.select_genes(["9"]).values[:2]).all()
    assert np.isnan(outer.select_genes(["0"]).values[2:]).all()


def test_frame_round_trip():
    d = make()
    back = ExpressionData.from_frame(d.to_frame())
    np.testing.assert_array_equal(back.values, d.values)
    t = ExpressionData.from_frame(d.to_frame().T, genes_in_rows=True)
    assert t.gene_ids.equals(d.gene_ids)
