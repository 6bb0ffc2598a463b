"""Cross-study calibration on a GEUVADIS-based simulation and per-study centering."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from geneinfer.calibration import OffsetScaleCalibrator, center_per_study
from geneinfer.errors import GeneinferError
from geneinfer.preprocess import counts_to_log2cpm


@pytest.fixture(scope="module")
def truth(geuvadis) -> np.ndarray:
    """Real log2 CPM of 85 GEUVADIS LCLs, 2,000 expressed genes."""
    Y = counts_to_log2cpm(geuvadis.to_numpy(dtype=float)).astype(np.float64)
    expressed = np.flatnonzero(Y.mean(axis=0) > 4)
    return Y[:, np.random.default_rng(0).choice(expressed, 2000, replace=False)]


def simulate(truth, *, offset_sd=1.0, shrink=1.0, noise=0.5, seed=0) -> np.ndarray:
    """Array-trained model on RNA-seq: per-gene platform offsets, predictions pulled toward
    the gene mean, noise proportional to each gene's spread (heteroscedastic)."""
    rng = np.random.default_rng(seed)
    mu, sd = truth.mean(axis=0), truth.std(axis=0)
    offsets = rng.normal(0, offset_sd, truth.shape[1]) * rng.gamma(2.0, 0.5, truth.shape[1])
    err = rng.normal(size=truth.shape) * noise * sd
    return mu + shrink * (truth - mu) + offsets + err


def _mae(a, b):
    return float(np.mean(np.abs(a - b)))


@pytest.mark.parametrize("n_cal", [2, 5, 20])
def test_offsets_learned_from_few_samples(truth, n_cal):
    pred = simulate(truth)
    cal, rest = np.arange(n_cal), np.arange(n_cal, len(truth))
    calib = OffsetScaleCalibrator().fit(pred[cal], truth[cal])
    raw = _mae(pred[rest], truth[rest])
    fixed = _mae(calib.transform(pred[rest]), truth[rest])
    assert fixed < 0.5 * raw, (raw, fixed)
    assert calib.tau2_offset_ > 0.5


def test_zero_samples_changes_nothing(truth):
    pred = simulate(truth)
    calib = OffsetScaleCalibrator().fit(pred[:0], truth[:0])
    np.testing.assert_allclose(calib.transform(pred), pred, rtol=1e-6)


def test_one_sample_needs_known_noise(truth):
    pred = simulate(truth)
    rest = slice(1, None)
    blind = OffsetScaleCalibrator().fit(pred[:1], truth[:1])
    np.testing.assert_allclose(blind.transform(pred), pred, rtol=1e-6)  # cannot judge noise
    noise_var = (0.5 * truth.std(axis=0)) ** 2  # e.g. the model's validation MSE per gene
    informed = OffsetScaleCalibrator().fit(pred[:1], truth[:1], noise_var=noise_var)
    assert _mae(informed.transform(pred[rest]), truth[rest]) < 0.6 * _mae(pred[rest], truth[rest])


@pytest.mark.parametrize("n_cal", [1, 2])
def test_no_harm_without_offsets(truth, n_cal):
    """When the new study has no offsets, 1-2 samples must not make things worse."""
    noise_var = (0.5 * truth.std(axis=0)) ** 2
    ratios = []
    for seed in range(8):
        pred = simulate(truth, offset_sd=0.0, seed=seed)
        idx = np.random.default_rng(seed).permutation(len(truth))
        cal, rest = idx[:n_cal], idx[n_cal:]
        calib = OffsetScaleCalibrator().fit(pred[cal], truth[cal], noise_var=noise_var)
        ratios.append(
            _mae(calib.transform(pred[rest]), truth[rest]) / _mae(pred[rest], truth[rest])
        )
        if n_cal == 2:
            calib = OffsetScaleCalibrator().fit(pred[cal], truth[cal])
            ratios.append(
                _mae(calib.transform(pred[rest]), truth[rest]) / _mae(pred[rest], truth[rest])
            )
    assert max(ratios) < 1.02, ratios


def test_scale_fixes_compressed_predictions(truth):
    pred = simulate(truth, shrink=0.4, noise=0.3)
    cal, rest = np.arange(30), np.arange(30, len(truth))
    offset_only = OffsetScaleCalibrator().fit(pred[cal], truth[cal])
    with_scale = OffsetScaleCalibrator(scale=True).fit(pred[cal], truth[cal])
    e_off = _mae(offset_only.transform(pred[rest]), truth[rest])
    e_scale = _mae(with_scale.transform(pred[rest]), truth[rest])
    assert e_scale < 0.97 * e_off, (e_off, e_scale)
    assert np.median(with_scale.scale_) > 1.3  # slopes moved from 1 toward 1 / 0.4
    # too few samples for slopes: offsets only
    few = OffsetScaleCalibrator(scale=True).fit(pred[:3], truth[:3])
    assert np.all(few.scale_ == 1.0)


def test_missing_truth_and_state(truth):
    pred = simulate(truth)
    T = truth[:6].copy()
    T[:, 0] = np.nan  # a gene never measured in the calibration samples
    T[2, 1] = np.nan
    calib = OffsetScaleCalibrator(scale=True, min_samples_scale=5).fit(pred[:6], T)
    assert calib.offset_[0] == 0 and calib.scale_[0] == 1 and np.isfinite(calib.offset_).all()
    arrays, meta = calib.state()
    clone = OffsetScaleCalibrator.from_state(arrays, meta)
    np.testing.assert_array_equal(clone.transform(pred[6:]), calib.transform(pred[6:]))
    assert clone.get_params() == calib.get_params()
    with pytest.raises(GeneinferError, match="same"):
        calib.fit(pred[:3], truth[:4])
    with pytest.raises(GeneinferError, match="expected"):
        calib.transform(pred[:, :10])


def test_center_per_study(bladder, bladder_batches):
    X = bladder[:, :300].copy()
    X[0, 0] = np.nan
    out = center_per_study(X, bladder_batches)
    frame = pd.DataFrame(X)
    expected = frame - frame.groupby(bladder_batches).transform("mean")
    np.testing.assert_allclose(out, expected.to_numpy(), rtol=1e-4, atol=1e-4)
    assert np.isnan(out[0, 0])
    for b in np.unique(bladder_batches):
        np.testing.assert_allclose(np.nanmean(out[bladder_batches == b], axis=0), 0, atol=1e-4)
    with pytest.raises(GeneinferError, match="one label per sample"):
        center_per_study(X, bladder_batches[:-1])
