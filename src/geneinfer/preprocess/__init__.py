"""Preprocessing as in D-GEX: scale to log2, RNA-seq transforms, duplicate removal, quantile
normalization, standardization, and cross-study calibration.

Every fitted step learns from training samples only and exposes its state as plain arrays
(plus JSON metadata) so it can be stored in a model file without pickling.
"""

from geneinfer.preprocess.calibrate import OffsetScaleCalibrator, center_per_study
from geneinfer.preprocess.dedup import DedupReport, remove_duplicates
from geneinfer.preprocess.pipeline import ProfilePreprocessor
from geneinfer.preprocess.quantile import QuantileNormalizer, quantile_normalize
from geneinfer.preprocess.rnaseq import counts_to_log2cpm, counts_to_tpm
from geneinfer.preprocess.scale import LINEAR_FLOOR, linear_to_log2, to_log2
from geneinfer.preprocess.standardize import Standardizer

__all__ = [
    "LINEAR_FLOOR",
    "DedupReport",
    "OffsetScaleCalibrator",
    "ProfilePreprocessor",
    "QuantileNormalizer",
    "Standardizer",
    "center_per_study",
    "counts_to_log2cpm",
    "counts_to_tpm",
    "linear_to_log2",
    "quantile_normalize",
    "remove_duplicates",
    "to_log2",
]
