"""The value scales of expression data: their names, what files say, and what values show.

This is the one place that decides a scale. Readers record what a file *states* (a GCT
``values`` row, a SOFT ``data_processing`` text, the ``uns`` of an h5ad) with
:func:`scale_from_text`; everything else calls :func:`resolve_scale`, which takes a stated
scale unless the values clearly contradict it, and otherwise :func:`detect_scale`.

Scales
------
``log2``
    log2 expression (RMA / GCRMA arrays, L1000 level 3, log2 CPM or TPM).
``linear``
    Linear intensities or abundances (MAS5 / dChip arrays, TPM, FPKM).
``counts``
    RNA-seq read counts.
``zscore``
    Values centred on zero: per-gene z-scores (L1000 level 4/5) or log ratios. They say how
    a sample differs from others, not how much of a transcript there is, so they cannot be
    put on log2 expression.
``unknown``
    Not stated and not yet looked at (only :class:`~geneinfer.expression.ExpressionData`
    uses it).

Detection rules (:func:`detect_scale`), on the finite values of up to the first
:data:`DETECTION_ROWS` samples (the same values whether a file is read whole or in blocks):

1. **counts**: at least 99.9 % whole numbers, none negative, the largest above 30. Log2
   data is essentially never integer-valued (the RMA set ``bladderbatch`` has 0.0008 %
   whole numbers), and whole-number log2 values stay below 30.
2. **zscore**: the median within 0.5 of zero, 30-70 % negative values, the 1st and 99th
   percentiles within +-10, and a standard deviation between 0.3 and 3. (log2 of TPM with a
   tiny pseudo-count also has many negative values, but a spike far below -10.)
3. **log2**: the 99th percentile at most 25 (2**25 is beyond any linear intensity's bulk)
   and the maximum at most 40.
4. **linear**: everything else (MAS5 data has a 99th percentile in the thousands).

Integer-rounded linear intensities are indistinguishable from counts: state the scale for
such data (``scale="linear"``, ``--scale linear``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from geneinfer.errors import GeneinferError

#: Every scale an :class:`~geneinfer.expression.ExpressionData` may carry.
SCALES: tuple[str, ...] = ("log2", "linear", "counts", "zscore", "unknown")
#: Scales that can be put on log2 expression.
CONVERTIBLE: tuple[str, ...] = ("log2", "linear", "counts")
#: Samples whose values decide a detected scale.
DETECTION_ROWS = 1000

_LOG2_Q99_MAX = 25.0
_LOG2_MAX = 40.0
_COUNTS_MIN_MAX = 30.0
_INTEGER_SHARE = 0.999
_MAX_STAT_VALUES = 2_000_000

_SCALE_WORDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("zscore", re.compile(r"z-?\s?score", re.I)),
    (
        "log2",
        re.compile(r"\blog\s*-?\s*2|\blog\b|\blog[- ]?(?:transformed|scale)|\b(?:gc)?rma\b", re.I),
    ),
    ("linear", re.compile(r"\blinear\b|\bmas\s*-?\s*5|\btpm\b|\bfpkm\b|\brpkm\b", re.I)),
    ("counts", re.compile(r"\b(?:read\s+)?counts?\b", re.I)),
)


def scale_from_text(text: str | None) -> str | None:
    """The scale a free-text description names, else None.

    ``"RMA log2"`` -> ``"log2"``, ``"MAS5 linear"`` or ``"MAS 5.0 Statistical Algorithm"``
    -> ``"linear"``, ``"raw counts"`` -> ``"counts"``. A log transform wins over the
    algorithm name (``"MAS5, log2 transformed"`` -> ``"log2"``).
    """
    if not text:
        return None
    for scale, pattern in _SCALE_WORDS:
        if pattern.search(text):
            return scale
    return None


def stated_scale(texts: list[str] | tuple[str, ...]) -> str:
    """The one scale that several statements (e.g. one per sample) agree on, else unknown."""
    named = {scale_from_text(str(t)) for t in texts} - {None}
    return named.pop() if len(named) == 1 else "unknown"  # type: ignore[return-value]


@dataclass(frozen=True)
class ScaleStats:
    """Summary statistics behind :func:`detect_scale` (also shown in error messages)."""

    n_finite: int
    minimum: float
    maximum: float
    median: float
    q01: float
    q99: float
    std: float
    negative_share: float
    integer_share: float

    @classmethod
    def of(cls, values: np.ndarray) -> ScaleStats:
        """Statistics of the finite values among the first :data:`DETECTION_ROWS` rows."""
        v = np.asarray(values)
        if v.ndim == 2:
            v = v[:DETECTION_ROWS]
        v = np.asarray(v, dtype=np.float64).ravel()
        v = v[np.isfinite(v)]
        if v.size == 0:
            nan = float("nan")
            return cls(0, nan, nan, nan, nan, nan, nan, nan, nan)
        # quantiles and shares on an evenly strided subsample keep this fast on
        # compendium-sized blocks; min and max use every value
        sub = v[:: max(1, v.size // _MAX_STAT_VALUES)]
        q01, median, q99 = np.quantile(sub, [0.01, 0.5, 0.99])
        return cls(
            n_finite=int(v.size),
            minimum=float(v.min()),
            maximum=float(v.max()),
            median=float(median),
            q01=float(q01),
            q99=float(q99),
            std=float(sub.std()),
            negative_share=float(np.mean(sub < 0)),
            integer_share=float(np.mean(sub == np.round(sub))),
        )

    def describe(self) -> str:
        return (
            f"min {self.minimum:.4g}, median {self.median:.4g}, 99th percentile {self.q99:.4g}, "
            f"max {self.maximum:.4g}, {100 * self.integer_share:.3g}% whole numbers"
        )


def classify(stats: ScaleStats) -> str:
    """The scale the statistics point to (see the module docstring for the rules)."""
    s = stats
    if s.integer_share >= _INTEGER_SHARE and s.minimum >= 0 and s.maximum > _COUNTS_MIN_MAX:
        return "counts"
    if (abs(s.median) < 0.5 and 0.3 <= s.negative_share <= 0.7 and s.q01 >= -10
            and s.q99 <= 10 and 0.3 <= s.std <= 3):
        return "zscore"
    if s.q99 <= _LOG2_Q99_MAX and s.maximum <= _LOG2_MAX:
        return "log2"
    return "linear"


def detect_scale(values: np.ndarray, *, source: str | None = None) -> str:
    """Guess the scale of ``values`` (samples x genes): ``log2``, ``linear``, ``counts`` or
    ``zscore``. NaN / inf values are ignored.

    Raises
    ------
    GeneinferError
        If there is no finite value to judge from.
    """
    stats = ScaleStats.of(values)
    if stats.n_finite == 0:
        where = f" in {source}" if source else ""
        raise GeneinferError(f"cannot detect the value scale{where}: no finite values")
    return classify(stats)


def contradiction(stated: str, stats: ScaleStats) -> str | None:
    """Why values cannot be on the ``stated`` scale, or None when they can."""
    s = stats
    if stated == "log2" and (s.q99 > _LOG2_Q99_MAX + 7 or s.maximum > 64):
        return "values this large are not log2 (2**64 exceeds any measurement)"
    if stated in ("linear", "counts") and s.negative_share > 0.001:
        return f"{100 * s.negative_share:.3g}% of values are negative, impossible for {stated}"
    if stated == "linear" and classify(s) == "log2" and s.maximum < 20:
        return "all values are below 20, as in log2 data, not linear intensities"
    if stated == "counts" and s.integer_share < 0.5 and s.maximum <= _LOG2_MAX:
        return "values are small and mostly fractional, as in log2 data, not counts"
    return None


@dataclass(frozen=True)
class ResolvedScale:
    """A scale and how it was decided: ``"given"`` (by the caller), ``"stated"`` (by the
    file) or ``"detected"`` (from the values)."""

    scale: str
    how: str

    def describe(self) -> str:
        return f"{self.scale} ({self.how})"


def resolve_scale(
    values: np.ndarray,
    *,
    stated: str | None = None,
    given: str | None = None,
    source: str | None = None,
) -> ResolvedScale:
    """The scale of ``values``: ``given`` (an option), else ``stated`` (the file), else detected.

    A given or stated scale that the values clearly contradict (e.g. ``log2`` with values up
    to 50,000) raises :class:`~geneinfer.errors.GeneinferError` naming the source and the
    scale to state instead.
    """
    for how, scale in (("given", given), ("stated", stated)):
        if scale in (None, "unknown"):
            continue
        if scale not in SCALES:
            raise GeneinferError(f"unknown scale {scale!r}; expected one of {', '.join(SCALES)}")
        stats = ScaleStats.of(values)
        why = contradiction(scale, stats) if stats.n_finite else None
        if why:
            guess = classify(stats)
            said = "given" if how == "given" else "stated in the file"
            raise GeneinferError(
                f"{source or 'the input data'}: scale {scale!r} ({said}) contradicts the values "
                f"({stats.describe()}): {why}; set the scale to {guess!r} (e.g. --scale "
                f"{guess}) or check the file"
            )
        return ResolvedScale(scale, how)
    return ResolvedScale(detect_scale(values, source=source), "detected")
