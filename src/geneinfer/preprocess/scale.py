"""Bring expression values onto log2.

Expression compendia mix scales: RMA / GCRMA / L1000 data are already log2, MAS5 / dChip
arrays are linear intensities, RNA-seq arrives as raw counts or TPM. D-GEX trained on log2
values, so every input is put on log2 first. Which scale an input is on is decided in one
place, :func:`geneinfer.scales.resolve_scale` (stated by the file or the caller, else
detected); this module only converts.

* linear -> ``log2(max(x, 1))`` (:data:`LINEAR_FLOOR`: MAS5 values below 1 are noise, and the
  floor keeps zeros finite);
* counts -> ``log2(CPM + 1)`` (:data:`CPM_PRIOR`), library size = the sample's total count;
* z-scores / log ratios cannot be converted: they carry no expression level.
"""

from __future__ import annotations

import numpy as np

from geneinfer.errors import GeneinferError
from geneinfer.expression import ExpressionData
from geneinfer.preprocess.rnaseq import counts_to_log2cpm
from geneinfer.scales import resolve_scale

#: Linear intensities are clipped at this value before log2.
LINEAR_FLOOR = 1.0
#: Prior count added to counts-per-million before log2.
CPM_PRIOR = 1.0


def not_convertible(scale: str, source: str | None) -> GeneinferError:
    """The error for values that cannot be put on log2 expression (z-scores, log ratios)."""
    return GeneinferError(
        f"{source or 'the input data'}: values are on the {scale!r} scale (centred on zero: "
        "z-scores or log ratios), which carries no expression level; give expression levels "
        "(log2, linear or counts; for L1000 data the level 3 file), or state the scale "
        "(--scale log2) if these really are log2 expression values"
    )


def linear_to_log2(values: np.ndarray, *, floor: float = LINEAR_FLOOR) -> np.ndarray:
    """``log2(max(x, floor))`` in float32; NaN stays NaN."""
    if floor <= 0:
        raise GeneinferError(f"linear floor must be positive, got {floor}")
    v = np.asarray(values, dtype=np.float32)
    # np.maximum (unlike fmax) propagates NaN, so missing values stay missing.
    return np.log2(np.maximum(v, np.float32(floor)), dtype=np.float32)


def to_log2(
    data: ExpressionData,
    *,
    scale: str | None = None,
    floor: float = LINEAR_FLOOR,
    prior_count: float = CPM_PRIOR,
) -> ExpressionData:
    """Return ``data`` on the log2 scale (``scale="log2"``).

    Parameters
    ----------
    data
        Expression data in any supported scale.
    scale
        The scale the values are in; default: ``data.scale`` as stated by its file, else
        detected (:func:`geneinfer.scales.resolve_scale`). A scale that the values clearly
        contradict (e.g. ``"log2"`` with values up to 50,000) raises
        :class:`~geneinfer.errors.GeneinferError` naming the source and the scale to set.
    floor
        Linear values are clipped at ``floor`` before ``log2``.
    prior_count
        Counts become ``log2(CPM + prior_count)``.
    """
    resolved = resolve_scale(data.values, stated=data.scale, given=scale, source=data.source)
    if resolved.scale == "log2":
        return data if data.scale == "log2" else data.with_values(data.values, scale="log2")
    if resolved.scale == "linear":
        return data.with_values(linear_to_log2(data.values, floor=floor), scale="log2")
    if resolved.scale == "counts":
        return counts_to_log2cpm(data, prior_count=prior_count)
    raise not_convertible(resolved.scale, data.source)
