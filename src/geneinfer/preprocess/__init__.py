"""Preprocessing as in D-GEX: one harmoniser (any input -> log2 with canonical gene ids),
RNA-seq transforms, duplicate removal, quantile normalization and standardization.

Every fitted step learns from training samples only and exposes its state as plain arrays
(plus JSON metadata) so it can be stored in a model file without pickling.
"""

from geneinfer.preprocess.dedup import DedupReport, remove_duplicates
from geneinfer.preprocess.harmonize import (
    CPM_PRIOR,
    LINEAR_FLOOR,
    MAX_IMPUTE_FRACTION,
    Harmonizer,
    HarmonizeReport,
    LandmarkInputs,
    TooManyAbsentError,
    check_imputable,
    harmonize,
    linear_to_log2,
    to_log2,
)
from geneinfer.preprocess.pipeline import ProfilePreprocessor
from geneinfer.preprocess.quantile import QuantileNormalizer, quantile_normalize
from geneinfer.preprocess.rnaseq import counts_to_cpm, counts_to_log2cpm, counts_to_tpm
from geneinfer.preprocess.standardize import Standardizer

__all__ = [
    "CPM_PRIOR",
    "LINEAR_FLOOR",
    "MAX_IMPUTE_FRACTION",
    "DedupReport",
    "HarmonizeReport",
    "Harmonizer",
    "LandmarkInputs",
    "ProfilePreprocessor",
    "QuantileNormalizer",
    "Standardizer",
    "TooManyAbsentError",
    "check_imputable",
    "counts_to_cpm",
    "counts_to_log2cpm",
    "counts_to_tpm",
    "harmonize",
    "linear_to_log2",
    "quantile_normalize",
    "remove_duplicates",
    "to_log2",
]
