"""Calibration for a new study in ``geneinfer predict``: per-study landmark centering and a
per-gene offset/scale learned from a few full profiles (real data: a bladderbatch model
applied to the nakayama sarcoma arrays of another lab, MAS5 instead of RMA)."""

from __future__ import annotations

import numpy as np
import pytest

from geneinfer.calibration import CalibratedModel, centering_shift
from geneinfer.cli import main
from geneinfer.evaluate.metrics import per_gene_pearson
from geneinfer.genes import collapse_probes
from geneinfer.io import read, write
from geneinfer.models.bundle import InferenceModel
from geneinfer.preprocess import to_log2
from geneinfer.train.workflow import train_model

N_CALIBRATION = 5


@pytest.fixture(scope="module")
def cross_study(shared, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("calibration")
    model = train_model([str(shared / "gpl96" / "bladderbatch.gct.gz")], model="ridge",
                        panel="l1000", data_dir=shared, dedup=False, progress=False)
    model.save(tmp / "model")
    raw = read(shared / "gpl96" / "nakayama.gct.gz")  # probe level, MAS5 linear
    write(raw.select_samples(np.arange(N_CALIBRATION)), tmp / "calibration.gct")
    held_out = collapse_probes(to_log2(raw)).select_samples(np.arange(N_CALIBRATION, raw.n_samples))
    write(held_out.select_genes(model.landmark_ids, missing="drop"), tmp / "input.gct")
    truth = held_out.select_genes(model.target_ids, missing="nan").values
    return tmp, model, truth


def _predict(tmp, name, *extra) -> np.ndarray:
    out = tmp / f"{name}.gctx"
    rc = main(["predict", "--model", str(tmp / "model"), "--input", str(tmp / "input.gct"),
               "--output", str(out), "--no-progress", *extra])
    assert rc == 0
    return read(out).values


def test_offset_from_five_profiles_cuts_error_on_the_other_samples(cross_study):
    tmp, _, truth = cross_study
    plain = _predict(tmp, "plain")
    calibrated = _predict(tmp, "offset", "--calibrate", str(tmp / "calibration.gct"))
    mae_plain = np.nanmean(np.abs(plain - truth))
    mae_cal = np.nanmean(np.abs(calibrated - truth))
    assert mae_cal < 0.85 * mae_plain  # measured: 1.28 -> 0.95 log2
    # an offset moves levels only: each gene's correlation with the truth is unchanged
    r_plain, r_cal = per_gene_pearson(truth, plain), per_gene_pearson(truth, calibrated)
    ok = np.isfinite(r_plain) & np.isfinite(r_cal)
    np.testing.assert_allclose(r_cal[ok], r_plain[ok], atol=1e-3)
    with_scale = _predict(tmp, "scale", "--calibrate", str(tmp / "calibration.gct"),
                          "--calibrate-scale")
    assert np.nanmean(np.abs(with_scale - truth)) < mae_plain


def test_centering_moves_the_study_mean_onto_the_training_mean(cross_study):
    tmp, model, truth = cross_study
    shift = centering_shift(model, tmp / "input.gct", block_size=17)  # several blocks
    X = read(tmp / "input.gct").select_genes(model.landmark_ids, missing="nan").values
    X = np.where(np.isnan(X), model.landmark_means[None, :], X).astype(np.float32)
    # where the model sees it (after quantile normalisation and standardisation), the
    # study's mean input is the training mean
    Z = model.model_inputs(X)
    np.testing.assert_allclose(Z.mean(axis=0) + shift, model.model_input_means(), atol=1e-4)
    centered = _predict(tmp, "center", "--center-landmarks")
    plain = _predict(tmp, "plain2")
    wrapped = CalibratedModel(model, input_shift=shift).predict_log2(X[:3])
    np.testing.assert_allclose(centered[:3], wrapped, atol=1e-4)
    # a per-gene constant on a linear model's inputs moves each output gene by a constant:
    # within the study every gene's correlation with the truth is unchanged
    r_c, r_p = per_gene_pearson(truth, centered), per_gene_pearson(truth, plain)
    ok = np.isfinite(r_c) & np.isfinite(r_p)
    np.testing.assert_allclose(r_c[ok], r_p[ok], atol=1e-3)
    offsets = centered - plain
    np.testing.assert_allclose(offsets, offsets[:1].repeat(len(offsets), axis=0), atol=1e-3)
    assert np.abs(offsets).max() > 0.05  # and it does move them


def test_calibration_mistakes_are_one_line_errors(cross_study, tmp_path, capsys):
    tmp = cross_study[0]
    args = ["predict", "--model", str(tmp / "model"), "--input", str(tmp / "input.gct"),
            "--output", str(tmp_path / "o.gctx"), "--no-progress"]
    assert main([*args, "--calibrate-scale"]) == 2
    assert "--calibrate-scale needs --calibrate" in capsys.readouterr().err
    landmarks_only = tmp / "input.gct"  # no target genes measured
    assert main([*args, "--calibrate", str(landmarks_only)]) == 2
    err = capsys.readouterr().err
    assert "measure none of the model's" in err and err.count("\n") == 1
    assert not (tmp_path / "o.gctx").exists()
    assert isinstance(InferenceModel.load(tmp / "model"), InferenceModel)
