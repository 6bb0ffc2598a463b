"""Detect the value scale of expression data and bring it to log2.

Expression compendia mix scales: RMA / GCRMA / L1000 data are already log2, MAS5 / dChip
arrays are linear intensities, RNA-seq arrives as raw counts. D-GEX trained on log2 values, so
every input is first put on log2 with :func:`to_log2`.

Detection heuristics (:func:`detect_scale`), on the finite values only:

1. **counts** – at least 99.9 % of the values are whole numbers, none is negative and the
   largest exceeds 30. Log2 data is essentially never integer-valued (the RMA set
   ``bladderbatch`` has 0.0008 % whole numbers, MAS5 sets written with one decimal ~10 %).
2. **log2** – the 99th percentile is at most 25 (2**25 ≈ 3.4e7, beyond any linear
   microarray intensity's bulk) and the maximum at most 40, or there are clearly negative
   values (log ratios, log2 of intensities below 1) without linear-sized values.
3. **linear** – everything else (MAS5 data has a 99th percentile in the thousands).

Integer-rounded linear intensities are indistinguishable from counts; state the scale
(``scale="linear"``) for such data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from geneinfer.data import ExpressionData
from geneinfer.errors import GeneinferError

DetectedScale = Literal["log2", "linear", "counts"]

#: Linear intensities are clipped at this value before log2 (MAS5 values below 1 are noise;
#: the floor keeps log2 >= 0 and avoids -inf for zeros).
LINEAR_FLOOR = 1.0

#: Prior count added to counts-per-million before log2.
CPM_PRIOR = 1.0

_LOG2_Q99_MAX = 25.0
_LOG2_MAX = 40.0
_COUNTS_MIN_MAX = 30.0
_INTEGER_SHARE = 0.999


@dataclass(frozen=True)
class ScaleStats:
    """Summary statistics behind :func:`detect_scale` (also used in error messages)."""

    n_finite: int
    minimum: float
    maximum: float
    q99: float
    negative_share: float
    integer_share: float

    @classmethod
    def of(cls, values: np.ndarray, *, max_values: int = 2_000_000) -> ScaleStats:
        v = np.asarray(values, dtype=np.float64).ravel()
        v = v[np.isfinite(v)]
        if v.size == 0:
            return cls(0, np.nan, np.nan, np.nan, np.nan, np.nan)
        # Quantiles and integer share on an evenly strided subsample keep this fast on
        # compendium-sized matrices; min/max use every value.
        sub = v[:: max(1, v.size // max_values)]
        return cls(
            n_finite=int(v.size),
            minimum=float(v.min()),
            maximum=float(v.max()),
            q99=float(np.quantile(sub, 0.99)),
            negative_share=float(np.mean(sub < 0)),
            integer_share=float(np.mean(sub == np.round(sub))),
        )

    def describe(self) -> str:
        return (
            f"min {self.minimum:.4g}, 99th percentile {self.q99:.4g}, max {self.maximum:.4g}, "
            f"{100 * self.integer_share:.3g}% whole numbers"
        )


def _values_of(data: ExpressionData | np.ndarray) -> np.ndarray:
    return data.values if isinstance(data, ExpressionData) else np.asarray(data)


def detect_scale(values: ExpressionData | np.ndarray) -> DetectedScale:
    """Guess whether ``values`` are log2, linear intensities or raw counts.

    Parameters
    ----------
    values
        An expression matrix (any shape) or :class:`~geneinfer.data.ExpressionData`.
        NaN / inf values are ignored.

    Returns
    -------
    ``"log2"``, ``"linear"`` or ``"counts"`` (see the module docstring for the rules).

    Raises
    ------
    GeneinferError
        If there is no finite value to judge from.
    """
    stats = ScaleStats.of(_values_of(values))
    if stats.n_finite == 0:
        src = getattr(values, "source", None)
        where = f" in {src}" if src else ""
        raise GeneinferError(f"cannot detect the value scale{where}: no finite values")
    return _classify(stats)


def _classify(s: ScaleStats) -> DetectedScale:
    if s.integer_share >= _INTEGER_SHARE and s.minimum >= 0 and s.maximum > _COUNTS_MIN_MAX:
        return "counts"
    if s.q99 <= _LOG2_Q99_MAX and s.maximum <= _LOG2_MAX:
        return "log2"
    return "linear"


def _contradiction(stated: str, s: ScaleStats) -> str | None:
    """Why the stated scale is clearly impossible for these values, or None."""
    if stated == "log2" and (s.q99 > _LOG2_Q99_MAX + 7 or s.maximum > 64):
        return "values this large are not log2 (2**64 exceeds any measurement)"
    if stated in ("linear", "counts") and s.negative_share > 0.001:
        return f"{100 * s.negative_share:.3g}% of values are negative, impossible for {stated}"
    if stated == "linear" and _classify(s) == "log2" and s.maximum < 20:
        return "all values are below 20, as in log2 data, not linear intensities"
    if stated == "counts" and s.integer_share < 0.5 and s.maximum <= _LOG2_MAX:
        return "values are small and mostly fractional, as in log2 data, not counts"
    return None


def _resolve_scale(data: ExpressionData, scale: str | None) -> str:
    stated = scale if scale is not None else data.scale
    src = data.source or "the input data"
    if stated in (None, "unknown"):
        return detect_scale(data)
    if stated not in ("log2", "linear", "counts"):
        raise GeneinferError(
            f"{src}: cannot convert scale {stated!r} to log2 (expected log2, linear or counts)"
        )
    stats = ScaleStats.of(data.values)
    if stats.n_finite == 0:
        return stated
    why = _contradiction(stated, stats)
    if why:
        guess = _classify(stats)
        raise GeneinferError(
            f"{src}: stated scale {stated!r} contradicts the values ({stats.describe()}): {why}; "
            f"set the scale to {guess!r} (e.g. --scale {guess}) or check the file"
        )
    return stated


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
        The scale the values are in. ``None`` uses ``data.scale`` unless it is ``"unknown"``,
        in which case :func:`detect_scale` decides. A stated scale wins over detection, but
        one that the values clearly contradict (e.g. ``"log2"`` with values up to 50,000)
        raises :class:`~geneinfer.errors.GeneinferError` naming the source and the scale
        to set instead.
    floor
        Linear values are clipped at ``floor`` before ``log2`` (default 1: MAS5 values
        below 1 are noise, and this keeps zeros finite).
    prior_count
        Counts become ``log2(CPM + prior_count)``.
    """
    resolved = _resolve_scale(data, scale)
    if resolved == "log2":
        return data if data.scale == "log2" else data.with_values(data.values, scale="log2")
    if resolved == "linear":
        return data.with_values(linear_to_log2(data.values, floor=floor), scale="log2")
    from geneinfer.preprocess.rnaseq import counts_to_log2cpm

    return counts_to_log2cpm(data, prior_count=prior_count)
