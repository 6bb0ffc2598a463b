"""Scale detection and conversion to log2 on the real HG-U133A and GEUVADIS data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from geneinfer.data import ExpressionData
from geneinfer.errors import GeneinferError
from geneinfer.preprocess import LINEAR_FLOOR, counts_to_log2cpm, detect_scale, to_log2


def _data(X: np.ndarray, *, scale: str = "unknown", source: str = "x.gct") -> ExpressionData:
    return ExpressionData(
        values=X,
        gene_ids=[f"g{i}" for i in range(X.shape[1])],
        sample_ids=[f"s{i}" for i in range(X.shape[0])],
        scale=scale,
        source=source,
    )


def test_detects_all_real_sets(bladder, nakayama, borovecki, gse781, geuvadis):
    assert detect_scale(bladder) == "log2"  # RMA
    assert detect_scale(nakayama) == "linear"  # MAS5
    assert detect_scale(borovecki) == "linear"  # MAS5
    assert detect_scale(gse781) == "linear"  # MAS5, GEO SOFT
    assert detect_scale(geuvadis.to_numpy()) == "counts"
    # after conversion every set reads as log2
    for X in (nakayama, borovecki, gse781):
        assert detect_scale(to_log2(_data(X)).values) == "log2"
    assert detect_scale(counts_to_log2cpm(geuvadis.to_numpy())) == "log2"


def test_detects_l1000_level3(l1000_level3):
    assert l1000_level3.shape == (377, 978)
    assert detect_scale(l1000_level3) == "log2"


def test_detection_edge_cases():
    rng = np.random.default_rng(1)
    ratios = rng.normal(0, 1.5, size=(20, 500))  # log ratios: negative values
    assert detect_scale(ratios) == "log2"
    small_counts = rng.poisson(3, size=(20, 500)).astype(float)
    small_counts[0, 0] = 45  # sparse single-cell-like counts
    assert detect_scale(small_counts) == "counts"
    with_nan = np.exp2(rng.normal(7, 2, size=(10, 300)))
    with_nan[:, :50] = np.nan
    assert detect_scale(with_nan) == "linear"
    with pytest.raises(GeneinferError, match="no finite values"):
        detect_scale(np.full((3, 3), np.nan))


def test_linear_to_log2_floor_and_nan(nakayama):
    X = nakayama[:10, :2000].copy()
    X[0, :5] = np.nan
    X[1, 5] = 0.0
    out = to_log2(_data(X))
    assert out.scale == "log2"
    expected = np.log2(np.maximum(X, LINEAR_FLOOR))
    np.testing.assert_allclose(out.values, expected, rtol=1e-6, equal_nan=True)
    assert np.isnan(out.values[0, :5]).all() and np.isfinite(out.values[1:]).all()
    assert out.values[1, 5] == 0.0
    assert np.nanmin(out.values) >= 0


def test_log2_unchanged_and_counts_to_cpm(bladder, geuvadis):
    d = _data(bladder[:5, :1000], scale="log2")
    assert to_log2(d) is d
    d2 = to_log2(_data(bladder[:5, :1000]))
    np.testing.assert_array_equal(d2.values, d.values)
    counts = geuvadis.iloc[:6, :800].to_numpy(dtype=float)
    out = to_log2(_data(counts))
    full_lib = counts.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out.values, np.log2(counts / full_lib * 1e6 + 1), rtol=1e-5)


def test_stated_scale_wins_over_detection(geuvadis):
    counts = geuvadis.iloc[:4, :500].to_numpy(dtype=float)
    as_linear = to_log2(_data(counts), scale="linear")  # integer intensities, user says linear
    np.testing.assert_allclose(as_linear.values, np.log2(np.maximum(counts, 1)), rtol=1e-6)
    from_meta = to_log2(_data(counts, scale="linear"))  # scale recorded by the reader
    np.testing.assert_array_equal(from_meta.values, as_linear.values)


@pytest.mark.parametrize(
    ("which", "stated", "suggested"),
    [("nakayama", "log2", "linear"), ("bladder", "linear", "log2"), ("bladder", "counts", "log2")],
)
def test_contradicting_stated_scale_is_an_error(request, which, stated, suggested):
    X = request.getfixturevalue(which)[:8]
    with pytest.raises(GeneinferError) as err:
        to_log2(_data(X, source=f"{which}.gct.gz"), scale=stated)
    msg = str(err.value)
    assert f"{which}.gct.gz" in msg and f"--scale {suggested}" in msg and "\n" not in msg


def test_negative_values_cannot_be_counts():
    X = np.random.default_rng(0).normal(100, 300, size=(5, 200))
    with pytest.raises(GeneinferError, match="negative"):
        to_log2(_data(X), scale="counts")


def test_zscore_cannot_be_converted():
    with pytest.raises(GeneinferError, match="cannot convert scale 'zscore'"):
        to_log2(_data(np.zeros((2, 3)), scale="zscore"))


def test_dataframe_values_accepted(geuvadis):
    assert detect_scale(pd.DataFrame(geuvadis.iloc[:3, :100]).to_numpy()) == "counts"
