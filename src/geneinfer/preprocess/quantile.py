"""Quantile normalization with a reference learned on training samples.

D-GEX quantile-normalised every profile onto one reference distribution (and mapped GTEx /
1000 Genomes RNA-seq onto the microarray reference the same way). :class:`QuantileNormalizer`
learns the reference -- the mean over training samples of each sample's sorted values -- and
maps any number of new samples onto it.

Conventions
-----------
* **Ties** get their average rank; a fractional rank is read off the reference by linear
  interpolation (for two tied values, the mean of the two reference values they occupy; the
  rule of ``preprocessCore::normalize.quantiles``).
* **NaN** stays NaN. A sample's observed values are ranked among themselves and rank ``r`` of
  ``m`` maps to the reference quantile ``(r - 1) / (m - 1)`` (linearly interpolated), so a
  sample with missing genes still spans the whole reference (a sample with a single observed
  value gets the reference median). Training samples with NaN contribute their observed
  sorted values interpolated onto the full-length grid.
* Large inputs are processed in blocks of rows (bounded memory), with a progress bar beyond
  20,000 samples. Data that does not fit in memory at all is fitted block by block with
  :meth:`QuantileNormalizer.partial_fit` (the same reference as one ``fit`` on all rows).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from tqdm.auto import tqdm

from geneinfer.errors import GeneinferError, ModelFileError
from geneinfer.expression import ExpressionData

#: Values per block of rows: temporaries stay cache-sized (~2 M values, ~90 arrays of 22k).
_BLOCK_VALUES = 2_000_000
_PROGRESS_ROWS = 20_000


def _sorted_on_grid(block: np.ndarray, n_ref: int) -> np.ndarray:
    """Each row's sorted observed values, interpolated onto ``n_ref`` evenly spaced quantiles."""
    s = np.sort(block, axis=1)  # NaN sorts last; input precision (float32 sorts faster)
    m_obs = (~np.isnan(s)).sum(axis=1)
    if (m_obs == block.shape[1]).all() and block.shape[1] == n_ref:
        return s
    out = np.empty((block.shape[0], n_ref))
    grid = np.linspace(0.0, 1.0, n_ref)
    for i, m in enumerate(m_obs):
        if m == 0:
            out[i] = np.nan
        elif m == 1:
            out[i] = s[i, 0]
        else:
            out[i] = np.interp(grid * (m - 1), np.arange(m), s[i, :m])
    return out


def _blocks(shape: tuple[int, ...], progress: bool | None, desc: str) -> tqdm:
    """Row slices of about ``_BLOCK_VALUES`` values each, with an optional progress bar."""
    n, n_cols = shape
    step = max(1, _BLOCK_VALUES // max(1, n_cols))
    show = n > _PROGRESS_ROWS if progress is None else progress
    slices = [slice(i, i + step) for i in range(0, n, step)]
    return tqdm(slices, desc=desc, unit="block", disable=not show)


def quantile_reference(X: np.ndarray, *, progress: bool | None = None) -> np.ndarray:
    """Mean over samples (rows) of the sorted values; samples with no value are skipped."""
    X = np.asarray(X)
    n_ref = X.shape[1]
    total = np.zeros(n_ref)
    count = 0
    for rows in _blocks(X.shape, progress, "quantile reference"):
        grid_vals = _sorted_on_grid(X[rows], n_ref)
        ok = ~np.isnan(grid_vals[:, 0])
        total += grid_vals[ok].sum(axis=0, dtype=np.float64)
        count += int(ok.sum())
    if count == 0:
        raise GeneinferError("quantile normalization: no training sample has an observed value")
    return total / count


def _average_ranks_sorted(sorted_vals: np.ndarray) -> np.ndarray:
    """0-based average rank of each position of row-wise sorted values (ties share it)."""
    n_rows, n = sorted_vals.shape
    new_group = np.ones(sorted_vals.shape, dtype=bool)  # column 0: rows never share a group
    new_group[:, 1:] = sorted_vals[:, 1:] != sorted_vals[:, :-1]
    flat_new = new_group.ravel()
    starts = np.flatnonzero(flat_new)
    ends = np.append(starts[1:], flat_new.size) - 1
    group = np.cumsum(flat_new) - 1
    row_offset = np.repeat(np.arange(n_rows) * n, n)
    return ((starts[group] + ends[group]) / 2.0 - row_offset).reshape(n_rows, n)


def map_to_reference(
    X: np.ndarray, reference: np.ndarray, *, progress: bool | None = None
) -> np.ndarray:
    """Replace each row's values by the reference value at their (average) rank; float32."""
    X = np.asarray(X)
    n_ref = reference.shape[0]
    out = np.empty(X.shape, dtype=np.float32)
    ref_pos = np.arange(n_ref, dtype=np.float64)
    for rows in _blocks(X.shape, progress, "quantile normalization"):
        block = X[rows]
        # One argsort per row gives both the ranks and where to write the results back;
        # NaN sorts last, so the first m sorted positions are the observed values.
        order = np.argsort(block, axis=1)  # tie order is irrelevant: ties share a value
        svals = np.take_along_axis(block, order, axis=1)
        m = (~np.isnan(block)).sum(axis=1, keepdims=True).astype(np.float64)
        ranks0 = _average_ranks_sorted(svals)
        with np.errstate(invalid="ignore", divide="ignore"):
            q = np.where(m > 1, ranks0 / (m - 1.0), 0.5)
        # per row, positions ascend: interpolation reads the reference in order
        vals = np.interp((q * (n_ref - 1)).ravel(), ref_pos, reference).reshape(block.shape)
        vals[np.isnan(svals)] = np.nan
        np.put_along_axis(out[rows], order, vals.astype(np.float32), axis=1)
    return out


class QuantileNormalizer(TransformerMixin, BaseEstimator):
    """Map samples onto a reference distribution learned from training samples.

    ``fit(X)`` stores ``reference_`` (length ``n_genes``): the mean over the training rows of
    their sorted values. ``transform(X)`` replaces each row's values by the reference value
    at their rank. Works for any number of new rows (one L1000 profile, a whole RNA-seq
    study). See the module docstring for ties and NaN.

    Attributes
    ----------
    reference_ : ndarray of shape (n_features,)
    n_features_in_ : int
    """

    def fit(self, X: np.ndarray, y: object = None) -> QuantileNormalizer:
        X = _as_2d(X, "fit")
        if X.shape[0] == 0 or X.shape[1] == 0:
            raise GeneinferError(f"quantile normalization: cannot fit on shape {X.shape}")
        self.reference_ = quantile_reference(X)
        self.n_features_in_ = X.shape[1]
        return self

    def partial_fit(self, X: np.ndarray, y: object = None) -> QuantileNormalizer:
        """Add a block of training rows to the reference (the mean of sorted rows over all
        blocks so far: equal to :meth:`fit` on the stacked blocks)."""
        X = _as_2d(X, "partial_fit")
        if getattr(self, "_ref_sum", None) is None:
            if X.shape[1] == 0:
                raise GeneinferError(f"quantile normalization: cannot fit on shape {X.shape}")
            self._ref_sum, self._ref_count = np.zeros(X.shape[1]), 0
            self.n_features_in_ = X.shape[1]
        elif X.shape[1] != self.n_features_in_:
            raise GeneinferError(f"quantile normalization: block has {X.shape[1]} genes, "
                                 f"earlier blocks {self.n_features_in_}")
        for rows in _blocks(X.shape, False, "quantile reference"):
            grid_vals = _sorted_on_grid(X[rows], X.shape[1])
            ok = ~np.isnan(grid_vals[:, 0])
            self._ref_sum += grid_vals[ok].sum(axis=0, dtype=np.float64)
            self._ref_count += int(ok.sum())
        if self._ref_count:
            self.reference_ = self._ref_sum / self._ref_count
        return self

    def accumulator_state(self) -> dict[str, np.ndarray]:
        """The running sums of :meth:`partial_fit` (to checkpoint a long fit)."""
        return {"sum": np.asarray(getattr(self, "_ref_sum", np.zeros(0))),
                "count": np.asarray(getattr(self, "_ref_count", 0))}

    @classmethod
    def from_accumulator_state(cls, arrays: dict[str, np.ndarray]) -> QuantileNormalizer:
        """Continue a :meth:`partial_fit` from :meth:`accumulator_state`."""
        obj = cls()
        total, count = np.asarray(arrays["sum"], np.float64), int(arrays["count"])
        if total.size:
            obj._ref_sum, obj._ref_count, obj.n_features_in_ = total.copy(), count, total.size
            if count:
                obj.reference_ = total / count
        return obj

    def transform(self, X: np.ndarray) -> np.ndarray:
        self._check_fitted()
        X = _as_2d(X, "transform")
        if X.shape[1] != self.n_features_in_:
            raise GeneinferError(
                f"quantile normalization: input has {X.shape[1]} genes, the reference was "
                f"fitted on {self.n_features_in_}; select the same genes in the same order"
            )
        return map_to_reference(X, self.reference_)

    def _check_fitted(self) -> None:
        if not hasattr(self, "reference_"):
            raise GeneinferError("QuantileNormalizer is not fitted; call fit() first")

    def state(self) -> dict[str, np.ndarray]:
        """Fitted state as plain arrays."""
        self._check_fitted()
        return {"reference": self.reference_.copy()}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray]) -> QuantileNormalizer:
        ref = np.asarray(arrays["reference"], dtype=np.float64)
        if ref.ndim != 1 or ref.size == 0 or not np.isfinite(ref).all():
            raise ModelFileError("quantile reference must be a non-empty finite 1-D array")
        obj = cls()
        obj.reference_ = ref
        obj.n_features_in_ = ref.size
        return obj


def quantile_normalize(X: np.ndarray) -> np.ndarray:
    """Quantile-normalise the rows of ``X`` onto their own mean reference (fit + transform)."""
    return QuantileNormalizer().fit_transform(X)


def _as_2d(X: np.ndarray | ExpressionData, what: str) -> np.ndarray:
    X = X.values if isinstance(X, ExpressionData) else np.asarray(X)
    if X.ndim != 2:
        raise GeneinferError(
            f"quantile normalization {what}: expected a 2-D samples x genes matrix, got {X.ndim}-D"
        )
    return X
