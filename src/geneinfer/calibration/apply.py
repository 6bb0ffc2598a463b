"""Calibration of a trained model for a new study or platform.

Across studies and platforms most of the inference error is a fixed per-gene offset. Two
remedies are offered around any :class:`~geneinfer.models.bundle.InferenceModel`:

* **Per-study centering of landmarks** (within-study analysis): the input file is taken as
  one study; its mean landmark profile is moved onto the training mean before prediction, so
  the model sees the study's samples relative to their own average, on the training footing.
  Predicted values are then meaningful relative to each other (differences between samples of
  the study), not as absolute levels.
* **Per-gene offset/scale** learned from a few samples of the new platform that have full
  profiles (landmarks and targets measured), with empirical-Bayes shrinkage toward no change
  (:class:`~geneinfer.calibration.OffsetScaleCalibrator`). Outputs are then on the new
  platform's scale.

Both wrap the model in a :class:`CalibratedModel`, which streaming prediction treats like any
model (it has ``predict_log2`` and the gene ids), also in worker processes.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from geneinfer.calibration.estimator import OffsetScaleCalibrator
from geneinfer.errors import GeneinferError
from geneinfer.expression import ExpressionData
from geneinfer.genes.matching import match_genes
from geneinfer.io import NonFinite, open_blocks
from geneinfer.preprocess import (
    MAX_IMPUTE_FRACTION,
    Harmonizer,
    LandmarkInputs,
    check_imputable,
    harmonize,
)

logger = logging.getLogger(__name__)

_DELEGATED = (
    "landmark_ids",
    "target_ids",
    "landmark_symbols",
    "target_symbols",
    "gene_metrics",
    "landmark_means",
    "gene_id_kind",
    "known_genes",
)


class CalibratedModel:
    """A model with a landmark shift before and/or a per-gene correction after prediction.

    Parameters
    ----------
    model
        An :class:`~geneinfer.models.bundle.InferenceModel` (or anything with
        ``predict_log2`` and the gene-id attributes).
    landmark_shift
        ``(n_landmarks,)`` log2 shift added to every input profile (see
        :func:`centering_shift`).
    calibrator
        A fitted :class:`OffsetScaleCalibrator` over all of the model's targets.
    """

    def __init__(
        self,
        model: Any,
        *,
        landmark_shift: np.ndarray | None = None,
        calibrator: OffsetScaleCalibrator | None = None,
    ) -> None:
        self.model = model
        self.landmark_shift = (
            None if landmark_shift is None else np.asarray(landmark_shift, dtype=np.float32)
        )
        self.calibrator = calibrator
        for name in _DELEGATED:
            setattr(self, name, getattr(model, name, None))

    def predict_log2(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if self.landmark_shift is not None:
            X = X + self.landmark_shift[None, :]
        Y = self.model.predict_log2(X)
        if self.calibrator is not None:
            Y = self.calibrator.transform(Y)
        return np.asarray(Y, dtype=np.float32)


def centering_shift(model: Any, input_path: str | os.PathLike[str] | ExpressionData, *,
                    block_size: int = 10000, data_dir: str | os.PathLike[str] | None = None,
                    max_impute_fraction: float = MAX_IMPUTE_FRACTION,
                    nonfinite: str | NonFinite | None = None) -> np.ndarray:
    """Training landmark means minus the input's landmark means (log2), per landmark.

    The input is read in blocks (flat memory) and harmonised like any prediction input;
    landmarks absent from the input, or with no observed value, get a shift of 0 (at most
    ``max_impute_fraction`` of them may be absent, as in prediction). ``nonfinite`` is the
    readers' policy for infinite values.
    """
    means = getattr(model, "landmark_means", None)
    if means is None:
        raise GeneinferError(
            "this model has no training landmark means; retrain it with this geneinfer "
            "version to use --center-landmarks"
        )
    n_land = len(model.landmark_ids)
    total, count = np.zeros(n_land), np.zeros(n_land)
    with open_blocks(input_path, nonfinite=nonfinite) as reader:
        harmonizer = Harmonizer.for_reader(reader, data_dir=data_dir, known=model.known_genes(),
                                           to=getattr(model, "gene_id_kind", "entrez"))
        inputs = LandmarkInputs.plan(harmonizer, model.landmark_ids, means=means,
                                     missing="impute", max_impute_fraction=max_impute_fraction)
        for start in range(0, reader.n_samples, block_size):
            stop = min(start + block_size, reader.n_samples)
            raw = reader.read(start, stop, inputs.read_cols)
            values = harmonizer.transform(raw, outputs=inputs.outputs, columns=inputs.read_cols,
                                          sample_ids=reader.sample_ids()[start:stop])
            X = inputs.match.place(values).astype(np.float64)
            total += np.nansum(X, axis=0)
            count += np.sum(np.isfinite(X), axis=0)
    observed = count > 0
    shift = np.zeros(n_land, dtype=np.float32)
    shift[observed] = np.asarray(means, dtype=np.float64)[observed] - total[observed] / count[
        observed]
    logger.info("centering: median |shift| %.3f log2 over %d landmarks",
                float(np.median(np.abs(shift[observed]))) if observed.any() else 0.0,
                int(observed.sum()))
    return shift


def fit_offset_calibrator(
    model: Any,
    profiles: ExpressionData,
    *,
    scale: bool = False,
    data_dir: str | os.PathLike[str] | None = None,
    landmark_shift: np.ndarray | None = None,
    max_impute_fraction: float = MAX_IMPUTE_FRACTION,
) -> tuple[OffsetScaleCalibrator, int]:
    """Learn a per-gene offset (and slope with ``scale``) from full profiles of a new platform.

    ``profiles`` hold landmarks and targets measured on the new platform; they are harmonised
    like any input (log2, canonical gene ids). Targets not measured there keep no correction.

    Returns the calibrator over all model targets and the number of targets it could learn.
    """
    genes, _ = harmonize(profiles, data_dir=data_dir, known=model.known_genes(),
                         to=getattr(model, "gene_id_kind", "entrez"))
    landmarks = match_genes(model.landmark_ids, genes.gene_ids)
    check_imputable(landmarks.n_missing, model.landmark_ids, landmarks.missing,
                    max_fraction=max_impute_fraction, source=genes.source)
    X = landmarks.take(genes.values, fill=np.asarray(model.landmark_means, dtype=np.float32))
    X = np.where(np.isnan(X), np.asarray(model.landmark_means)[None, :], X)
    if landmark_shift is not None:
        X = X + landmark_shift[None, :]
    pred = np.asarray(model.predict_log2(X.astype(np.float32)), dtype=np.float64)
    targets = match_genes(model.target_ids, genes.gene_ids)
    if not targets.present.any():
        raise GeneinferError(
            f"calibration profiles{' in ' + genes.source if genes.source else ''} measure none "
            f"of the model's {len(model.target_ids)} target genes (expected full profiles with "
            "the same genes)"
        )
    truth = genes.values[:, targets.columns()].astype(np.float64)
    present = targets.present
    part = OffsetScaleCalibrator(scale=scale).fit(pred[:, present], truth)
    return part.expand(present), int(present.sum())
