"""Calibration of a trained model for a new study or platform.

Across studies and platforms most of the inference error is a fixed per-gene offset. Two
remedies are offered around any :class:`~geneinfer.models.bundle.InferenceModel`:

* **Per-study centering of landmarks** (within-study analysis): the input file is taken as
  one study; its mean model input (the landmarks after the saved quantile normalisation and
  standardisation) is moved onto the training mean, so the model sees the study's samples
  relative to their own average, on the training footing. The shift is applied where it is a
  per-gene constant (in the model's input space, not to log2 values before the per-sample
  quantile normalisation, which would reorder genes within samples), so a linear model's
  within-study correlations are unchanged. Predicted values are then meaningful relative to
  each other (differences between samples of the study), not as absolute levels.
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
    input_shift
        ``(n_landmarks,)`` shift added to every profile's model inputs (see
        :func:`centering_shift`).
    calibrator
        A fitted :class:`OffsetScaleCalibrator` over all of the model's targets.
    """

    def __init__(
        self,
        model: Any,
        *,
        input_shift: np.ndarray | None = None,
        calibrator: OffsetScaleCalibrator | None = None,
    ) -> None:
        self.model = model
        self.input_shift = (
            None if input_shift is None else np.asarray(input_shift, dtype=np.float32)
        )
        self.calibrator = calibrator
        for name in _DELEGATED:
            setattr(self, name, getattr(model, name, None))

    def predict_log2(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        Y = (self.model.predict_log2(X) if self.input_shift is None
             else self.model.predict_log2(X, input_shift=self.input_shift))
        if self.calibrator is not None:
            Y = self.calibrator.transform(Y)
        return np.asarray(Y, dtype=np.float32)


def centering_shift(model: Any, input_path: str | os.PathLike[str] | ExpressionData, *,
                    block_size: int = 10000, data_dir: str | os.PathLike[str] | None = None,
                    max_impute_fraction: float = MAX_IMPUTE_FRACTION,
                    nonfinite: str | NonFinite | None = None, scale: str | None = None,
                    annotation: Any = None) -> np.ndarray:
    """Per landmark, the training mean of the model inputs minus the input study's mean
    (:meth:`~geneinfer.models.bundle.InferenceModel.model_inputs`: after the saved
    preprocessing). Pass it to :class:`CalibratedModel` as ``input_shift``.

    The input is read in blocks (flat memory) and harmonised like any prediction input;
    landmarks absent from the input are imputed with the training means (and so barely move;
    at most ``max_impute_fraction`` of them may be absent, as in prediction). ``nonfinite``
    is the readers' policy for infinite values; ``scale`` and ``annotation`` as for
    :func:`geneinfer.preprocess.harmonize` (the prediction input's).
    """
    if getattr(model, "landmark_means", None) is None:
        raise GeneinferError(
            "this model has no training landmark means; retrain it with this geneinfer "
            "version to use --center-landmarks"
        )
    n_land = len(model.landmark_ids)
    total, count = np.zeros(n_land), np.zeros(n_land)
    with open_blocks(input_path, nonfinite=nonfinite) as reader:
        harmonizer = Harmonizer.for_reader(reader, scale=scale, annotation=annotation,
                                           data_dir=data_dir, known=model.known_genes(),
                                           to=getattr(model, "gene_id_kind", "entrez"))
        inputs = LandmarkInputs.plan(harmonizer, model.landmark_ids, means=model.landmark_means,
                                     missing="impute", max_impute_fraction=max_impute_fraction)
        for start in range(0, reader.n_samples, block_size):
            stop = min(start + block_size, reader.n_samples)
            X, _ = inputs.landmarks(reader.read(start, stop, inputs.read_cols),
                                    sample_ids=reader.sample_ids()[start:stop],
                                    where=f"samples {start}..{stop}")
            Z = np.asarray(model.model_inputs(X), dtype=np.float64)
            total += Z.sum(axis=0)
            count += len(Z)
    shift = (np.asarray(model.model_input_means(), dtype=np.float64) - total / count)
    logger.info("centering: median |shift| %.3f over %d landmarks (model input scale)",
                float(np.median(np.abs(shift))), n_land)
    return shift.astype(np.float32)


def fit_offset_calibrator(
    model: Any,
    profiles: ExpressionData,
    *,
    scale: bool = False,
    data_dir: str | os.PathLike[str] | None = None,
    input_shift: np.ndarray | None = None,
    max_impute_fraction: float = MAX_IMPUTE_FRACTION,
    annotation: Any = None,
) -> tuple[OffsetScaleCalibrator, int]:
    """Learn a per-gene offset (and slope with ``scale``) from full profiles of a new platform.

    ``profiles`` hold landmarks and targets measured on the new platform; they are harmonised
    like any input (log2, canonical gene ids; probes through ``annotation`` when given).
    Targets not measured there keep no correction.

    Returns the calibrator over all model targets and the number of targets it could learn.
    """
    genes, _ = harmonize(profiles, annotation=annotation, data_dir=data_dir,
                         known=model.known_genes(),
                         to=getattr(model, "gene_id_kind", "entrez"))
    landmarks = match_genes(model.landmark_ids, genes.gene_ids)
    check_imputable(landmarks.n_missing, model.landmark_ids, landmarks.missing,
                    max_fraction=max_impute_fraction, source=genes.source)
    X = landmarks.take(genes.values, fill=np.asarray(model.landmark_means, dtype=np.float32))
    X = np.where(np.isnan(X), np.asarray(model.landmark_means)[None, :], X)
    X = X.astype(np.float32)
    pred = np.asarray(model.predict_log2(X) if input_shift is None
                      else model.predict_log2(X, input_shift=input_shift), dtype=np.float64)
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
