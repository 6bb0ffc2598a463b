"""Calibration for a new study or platform: the estimators and applying them to a model.

* :class:`OffsetScaleCalibrator` learns a per-gene offset (and slope) from a few samples
  with full profiles; :func:`fit_offset_calibrator` fits it for a model.
* :func:`centering_shift` moves a study's mean landmark profile onto the training mean.
* :class:`CalibratedModel` wraps a model with both, for streaming prediction.
"""

from geneinfer.calibration.apply import CalibratedModel, centering_shift, fit_offset_calibrator
from geneinfer.calibration.estimator import OffsetScaleCalibrator, center_per_study

__all__ = [
    "CalibratedModel",
    "OffsetScaleCalibrator",
    "center_per_study",
    "centering_shift",
    "fit_offset_calibrator",
]
