"""Per-gene standardization (zero mean, unit variance) with statistics from training samples.

D-GEX reported errors on this scale, so model inputs and targets are standardised with the
training set's per-gene mean and standard deviation. Same numbers as
:class:`sklearn.preprocessing.StandardScaler` (population std, NaN ignored in ``fit`` and kept
in ``transform``) but the state is two plain arrays that go into a model file.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from geneinfer.errors import GeneinferError, ModelFileError

#: A gene whose std is below this (relative to its mean's size) is constant: its scale is 1,
#: so it becomes all zeros instead of blowing up.
_REL_EPS = 1e-7


def _blockwise_mean_std(X: np.ndarray, block: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Per-column NaN-ignoring mean and population std in float64, two passes over row
    blocks (exact and stable, without a float64 copy of the whole matrix)."""
    n_genes = X.shape[1]
    total, count = np.zeros(n_genes), np.zeros(n_genes)
    blocks = [X[i : i + block] for i in range(0, X.shape[0], block)]
    has_nan = [bool(np.isnan(b).any()) for b in blocks]
    for part, nan in zip(blocks, has_nan):
        if nan:
            ok = ~np.isnan(part)
            total += np.where(ok, part, 0.0).sum(axis=0)
            count += ok.sum(axis=0)
        else:
            total += part.sum(axis=0, dtype=np.float64)
            count += part.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count  # all-NaN genes -> NaN, on purpose
    ss = np.zeros(n_genes)
    for part, nan in zip(blocks, has_nan):
        dev = part - mean  # float64
        if nan:
            dev[np.isnan(dev)] = 0.0
        ss += np.einsum("ij,ij->j", dev, dev)
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.sqrt(ss / count)
    return mean, std


class Standardizer(TransformerMixin, BaseEstimator):
    """Per-gene ``(x - mean_) / scale_`` with training statistics.

    Attributes
    ----------
    mean_, scale_ : ndarray of shape (n_features,)
        ``scale_`` is the population std, replaced by 1 for (near-)constant genes. A gene
        with no observed training value has mean NaN, so its output is NaN.
    """

    def fit(self, X: np.ndarray, y: object = None) -> Standardizer:
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[0] == 0:
            raise GeneinferError(f"standardization: cannot fit on shape {X.shape}")
        mean, std = _blockwise_mean_std(X)
        constant = ~(std > _REL_EPS * np.maximum(1.0, np.abs(mean)))
        self.mean_ = mean
        self.scale_ = np.where(constant, 1.0, std)
        self.n_features_in_ = X.shape[1]
        return self

    def partial_fit(self, X: np.ndarray, y: object = None) -> Standardizer:
        """Add a block of training rows (NaN ignored); ``mean_`` / ``scale_`` are those of
        all blocks so far. Sums run in float64 about the first block's means, so they do
        not lose digits to cancellation."""
        X = np.asarray(X)
        if X.ndim != 2:
            raise GeneinferError(f"standardization: cannot fit on shape {X.shape}")
        if getattr(self, "_shift", None) is None:
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
                shift = np.nanmean(X, axis=0, dtype=np.float64) if len(X) else np.zeros(
                    X.shape[1])
            self._shift = np.nan_to_num(shift)
            self._s1 = np.zeros(X.shape[1])
            self._s2 = np.zeros(X.shape[1])
            self._n = np.zeros(X.shape[1])
            self.n_features_in_ = X.shape[1]
        elif X.shape[1] != self.n_features_in_:
            raise GeneinferError(f"standardization: block has {X.shape[1]} genes, earlier "
                                 f"blocks {self.n_features_in_}")
        for start in range(0, X.shape[0], 512):
            dev = X[start:start + 512] - self._shift  # float64
            ok = ~np.isnan(dev)
            if not ok.all():
                dev[~ok] = 0.0
            self._s1 += dev.sum(axis=0)
            self._s2 += np.einsum("ij,ij->j", dev, dev)
            self._n += ok.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            m1 = self._s1 / self._n
            std = np.sqrt(np.maximum(self._s2 / self._n - m1 * m1, 0.0))
        mean = self._shift + m1
        constant = ~(std > _REL_EPS * np.maximum(1.0, np.abs(mean)))
        self.mean_ = mean
        self.scale_ = np.where(constant, 1.0, std)
        return self

    def accumulator_state(self) -> dict[str, np.ndarray]:
        """The running sums of :meth:`partial_fit` (to checkpoint a long fit)."""
        return {k: np.asarray(getattr(self, f"_{k}")) for k in ("shift", "s1", "s2", "n")}

    @classmethod
    def from_accumulator_state(cls, arrays: dict[str, np.ndarray]) -> Standardizer:
        """Continue a :meth:`partial_fit` from :meth:`accumulator_state`."""
        obj = cls()
        for k in ("shift", "s1", "s2", "n"):
            setattr(obj, f"_{k}", np.array(arrays[k], dtype=np.float64))
        obj.n_features_in_ = obj._shift.size
        return obj.partial_fit(np.empty((0, obj.n_features_in_)))

    def _check(self, X: np.ndarray) -> np.ndarray:
        if not hasattr(self, "mean_"):
            raise GeneinferError("Standardizer is not fitted; call fit() first")
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise GeneinferError(
                f"standardization: input has shape {X.shape}, expected (n, {self.n_features_in_})"
            )
        return X

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = self._check(X).astype(np.float32, copy=True)
        # in place, in float32: no float64 copy of compendium-sized matrices
        X -= self.mean_.astype(np.float32)
        X /= self.scale_.astype(np.float32)
        return X

    def inverse_transform(self, X: np.ndarray) -> np.ndarray:
        X = self._check(X).astype(np.float32, copy=True)
        X *= self.scale_.astype(np.float32)
        X += self.mean_.astype(np.float32)
        return X

    def state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean_.copy(), "scale": self.scale_.copy()}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray]) -> Standardizer:
        mean = np.asarray(arrays["mean"], dtype=np.float64)
        scale = np.asarray(arrays["scale"], dtype=np.float64)
        if mean.ndim != 1 or mean.shape != scale.shape or not (scale > 0).all():
            raise ModelFileError("standardizer state needs 1-D mean and positive scale arrays")
        obj = cls()
        obj.mean_, obj.scale_, obj.n_features_in_ = mean, scale, mean.size
        return obj
