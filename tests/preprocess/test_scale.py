"""Scale detection and conversion to log2 on the real HG-U133A and GEUVADIS data."""

from __future__ import annotations

import numpy as np
import pytest

from geneinfer.errors import GeneinferError
from geneinfer.expression import ExpressionData
from geneinfer.preprocess import LINEAR_FLOOR, counts_to_log2cpm, to_log2
from geneinfer.scales import detect_scale


def _data(X: np.ndarray, *, scale: str = "unknown", source: str = "x.gct") -> ExpressionData:
    return ExpressionData(
        values=X,
        gene_ids=[f"g{i}" for i in range(X.shape[1])],
        sample_ids=[f"s{i}" for i in range(X.shape[0])],
        scale=scale,
        source=source,
    )


def test_every_real_set_reads_as_log2_after_conversion(nakayama, borovecki, gse781, geuvadis):
    for X in (nakayama, borovecki, gse781):
        assert detect_scale(to_log2(_data(X)).values) == "log2"
    assert detect_scale(counts_to_log2cpm(geuvadis.to_numpy())) == "log2"


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


def test_zscore_cannot_be_converted(bladder):
    with pytest.raises(GeneinferError, match=r"'zscore' scale.*--scale log2"):
        to_log2(_data(np.zeros((2, 3)), scale="zscore"))
    z = (bladder - bladder.mean(axis=0)) / bladder.std(axis=0)
    with pytest.raises(GeneinferError, match=r"x\.gct: values are on the 'zscore' scale"):
        to_log2(_data(z))
