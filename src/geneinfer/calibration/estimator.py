"""Calibration for a new study or platform.

On a study unlike the training compendium (RNA-seq vs arrays, a new lab) most of a model's
error is a fixed per-gene offset: the gene is predicted consistently too high or too low.
Two remedies:

* :func:`center_per_study` removes each study's per-gene mean from its samples, for analyses
  within a study (differential expression, correlations) where offsets cancel anyway.
* :class:`OffsetScaleCalibrator` learns the per-gene offset (and optionally a slope) from a
  few samples of the new platform that have full profiles, comparing predictions with the
  truth, with empirical-Bayes shrinkage toward "no change": with few or noisy samples, or
  when offsets are small next to the noise, the correction shrinks to nothing.

Shrinkage model for the offset of gene g: the mean residual ``d_g`` (truth - prediction over
the ``n_g`` calibration samples) is ``o_g + noise`` with noise variance ``s_g^2 / n_g``;
offsets are ``o_g ~ N(0, tau^2)`` across genes. ``tau^2`` is estimated by moments
(``mean(d^2) - mean(s^2/n)``, floored at 0) and the offset is ``tau^2 / (tau^2 + s_g^2/n_g)
* d_g``. Per-gene noise variances are moderated toward their across-gene mean (``prior_df``
pseudo degrees of freedom, as in limma) so genes with a lucky small variance are not trusted
blindly. With one sample the noise cannot be estimated from the data: give ``noise_var``
(e.g. the model's per-gene validation MSE), otherwise nothing is corrected.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from geneinfer.errors import GeneinferError, ModelFileError


def center_per_study(X: np.ndarray, study_labels: Sequence[object] | np.ndarray) -> np.ndarray:
    """Subtract each study's per-gene mean from its samples (NaN ignored in the means).

    A study with one sample becomes all zeros: there is no within-study variation.
    Returns float32.
    """
    X = np.asarray(X, dtype=np.float64)
    labels = np.asarray(study_labels)
    if X.ndim != 2 or labels.shape != (X.shape[0],):
        raise GeneinferError(
            f"center_per_study: {labels.shape[0] if labels.ndim else 0} study labels for "
            f"a matrix of shape {X.shape} (expected one label per sample row)"
        )
    out = np.empty_like(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # genes all-NaN within a study
        for study in np.unique(labels):
            rows = labels == study
            out[rows] = X[rows] - np.nanmean(X[rows], axis=0)
    return out.astype(np.float32)


def _moderated_variance(
    s2: np.ndarray, df: np.ndarray, prior: np.ndarray | float, prior_df: float
) -> np.ndarray:
    """limma-style ``(prior_df * prior + df * s2) / (prior_df + df)``; df=0 gives the prior."""
    s2 = np.where(df > 0, s2, 0.0)
    return (prior_df * prior + df * s2) / (prior_df + df)


def _eb_weights(est: np.ndarray, sampling_var: np.ndarray) -> tuple[np.ndarray, float]:
    """Shrinkage weights tau^2 / (tau^2 + v) for estimates of effects ~ N(0, tau^2)."""
    ok = np.isfinite(est) & np.isfinite(sampling_var)
    if not ok.any():
        return np.zeros_like(est), 0.0
    tau2 = max(0.0, float(np.mean(est[ok] ** 2) - np.mean(sampling_var[ok])))
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(ok, tau2 / (tau2 + sampling_var), 0.0)
    return np.nan_to_num(w), tau2


class OffsetScaleCalibrator(TransformerMixin, BaseEstimator):
    """Per-gene offset (and optional slope) correction learned from a few paired samples.

    ``transform(pred) = scale_ * (pred - center_) + center_ + offset_`` per gene.

    Parameters
    ----------
    scale
        Also learn a per-gene slope (shrunk toward 1). Needs ``min_samples_scale`` samples;
        below that only offsets are learned.
    prior_df
        Pseudo degrees of freedom pulling each gene's noise variance toward the across-gene
        mean (or toward ``noise_var`` when given).
    min_samples_scale
        Fewest samples for slope estimation.

    Attributes
    ----------
    offset_, scale_, center_ : ndarray of shape (n_genes,)
    n_samples_ : int
    tau2_offset_, tau2_scale_ : float
        Estimated across-gene variance of the true offsets / slopes - 1.
    """

    def __init__(
        self, *, scale: bool = False, prior_df: float = 4.0, min_samples_scale: int = 5
    ) -> None:
        self.scale = scale
        self.prior_df = prior_df
        self.min_samples_scale = min_samples_scale

    def fit(
        self,
        pred: np.ndarray,
        truth: np.ndarray,
        *,
        noise_var: float | np.ndarray | None = None,
    ) -> OffsetScaleCalibrator:
        """Learn the correction from predictions and measured truth of the same samples.

        Parameters
        ----------
        pred, truth
            ``(n_samples, n_genes)`` on the same scale (0 samples allowed: no change).
        noise_var
            Known per-gene (or scalar) variance of a single sample's prediction error around
            its offset, e.g. validation MSE. Used as the prior for the noise variance;
            required for any correction from a single sample.
        """
        P = np.asarray(pred, dtype=np.float64)
        T = np.asarray(truth, dtype=np.float64)
        if P.ndim != 2 or P.shape != T.shape:
            raise GeneinferError(
                f"calibration: predictions {P.shape} and truth {T.shape} must be the same "
                "2-D shape (samples x genes)"
            )
        n_genes = P.shape[1]
        self.n_features_in_ = n_genes
        self.n_samples_ = P.shape[0]
        self.offset_ = np.zeros(n_genes)
        self.scale_ = np.ones(n_genes)
        self.center_ = np.zeros(n_genes)
        self.tau2_offset_ = 0.0
        self.tau2_scale_ = 0.0
        if self.n_samples_ == 0:
            return self
        R = T - P  # NaN where either is missing
        n_g = np.sum(np.isfinite(R), axis=0).astype(np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            d = np.nanmean(R, axis=0)
            s2 = np.nanvar(R, axis=0, ddof=1) if self.n_samples_ > 1 else np.full(n_genes, np.nan)
        noise = self._noise_variance(s2, n_g - 1, noise_var, n_genes)
        if noise is None:
            return self  # one sample, no known noise: any correction could hurt
        w, self.tau2_offset_ = _eb_weights(d, noise / np.maximum(n_g, 1))
        self.offset_ = np.where(n_g > 0, w * np.nan_to_num(d), 0.0)
        if self.scale and self.n_samples_ >= self.min_samples_scale:
            self._fit_scale(P, T, noise_var, n_genes)
        return self

    def _noise_variance(
        self, s2: np.ndarray, df: np.ndarray, noise_var: float | np.ndarray | None, n_genes: int
    ) -> np.ndarray | None:
        if noise_var is not None:
            prior = np.broadcast_to(np.asarray(noise_var, dtype=np.float64), (n_genes,))
            if not (np.isfinite(prior) & (prior >= 0)).all():
                raise GeneinferError("calibration: noise_var must be finite and non-negative")
            return _moderated_variance(s2, df, prior, self.prior_df)
        observed = np.isfinite(s2) & (df > 0)
        if not observed.any():
            return None
        prior = float(np.mean(s2[observed]))
        return _moderated_variance(s2, df, prior, self.prior_df)

    def _fit_scale(
        self, P: np.ndarray, T: np.ndarray, noise_var: float | np.ndarray | None, n_genes: int
    ) -> None:
        both = np.isfinite(P) & np.isfinite(T)
        Pm = np.where(both, P, np.nan)
        Tm = np.where(both, T, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            c = np.nanmean(Pm, axis=0)
            pc = Pm - c
            tc = Tm - np.nanmean(Tm, axis=0)
            sxx = np.nansum(pc**2, axis=0)
            slope = np.nansum(pc * tc, axis=0) / sxx
            n_g = both.sum(axis=0).astype(np.float64)
            resid = tc - slope * pc
            s2 = np.nansum(resid**2, axis=0) / np.maximum(n_g - 2, 1)
        usable = (sxx > 1e-12) & np.isfinite(slope) & (n_g >= 3)
        noise = self._noise_variance(np.where(usable, s2, np.nan), n_g - 2, noise_var, n_genes)
        if noise is None:
            return
        est = np.where(usable, slope - 1.0, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            sampling_var = np.where(usable, noise / sxx, np.nan)
        w, self.tau2_scale_ = _eb_weights(est, sampling_var)
        self.scale_ = np.where(usable, 1.0 + w * np.nan_to_num(est), 1.0)
        self.center_ = np.where(usable, c, 0.0)

    def transform(self, pred: np.ndarray) -> np.ndarray:
        if not hasattr(self, "offset_"):
            raise GeneinferError("OffsetScaleCalibrator is not fitted; call fit() first")
        P = np.asarray(pred, dtype=np.float64)
        if P.ndim != 2 or P.shape[1] != self.offset_.size:
            raise GeneinferError(
                f"calibration: predictions have shape {P.shape}, expected (n, {self.offset_.size})"
            )
        return (self.scale_ * (P - self.center_) + self.center_ + self.offset_).astype(np.float32)

    def expand(self, present: np.ndarray) -> OffsetScaleCalibrator:
        """This calibrator, fitted on the genes where ``present`` is True, over all genes:
        the others get no correction (offset 0, slope 1)."""
        present = np.asarray(present, dtype=bool)
        full = OffsetScaleCalibrator(**self.get_params())
        full.n_features_in_, full.n_samples_ = len(present), self.n_samples_
        full.tau2_offset_, full.tau2_scale_ = self.tau2_offset_, self.tau2_scale_
        full.offset_, full.scale_, full.center_ = (np.zeros(len(present)),
                                                   np.ones(len(present)),
                                                   np.zeros(len(present)))
        full.offset_[present] = self.offset_
        full.scale_[present] = self.scale_
        full.center_[present] = self.center_
        return full

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {"offset": self.offset_, "scale": self.scale_, "center": self.center_}
        meta = {
            "n_samples": self.n_samples_,
            "tau2_offset": self.tau2_offset_,
            "tau2_scale": self.tau2_scale_,
            "params": self.get_params(),
        }
        return arrays, meta

    @classmethod
    def from_state(
        cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]
    ) -> OffsetScaleCalibrator:
        obj = cls(**meta.get("params", {}))
        try:
            offset, scale, center = (
                np.asarray(arrays[k], dtype=np.float64) for k in ("offset", "scale", "center")
            )
        except KeyError as exc:
            raise ModelFileError(f"calibration state lacks array {exc.args[0]}") from None
        if not (offset.ndim == 1 and offset.shape == scale.shape == center.shape):
            raise ModelFileError("calibration state arrays must be 1-D and of equal length")
        obj.offset_, obj.scale_, obj.center_ = offset, scale, center
        obj.n_features_in_ = offset.size
        obj.n_samples_ = int(meta.get("n_samples", 0))
        obj.tau2_offset_ = float(meta.get("tau2_offset", 0.0))
        obj.tau2_scale_ = float(meta.get("tau2_scale", 0.0))
        return obj
