"""Shared plumbing of the classical models: input checks, 1-D targets, linear prediction.

:class:`ClassicalModel` handles scikit-learn input validation (``n_features_in_``,
``feature_names_in_``, 1-D ``y``), returns float32 predictions and makes
``fitted_state()`` JSON/array-only. :class:`GramLinearModel` is the base of every model
whose prediction is ``mean_y + (x - mean_x) @ coef.T`` and whose fit needs only the Gram
statistics of :mod:`geneinfer.models.gram` (OLS, ridge, PCR, KNN-GE); it adds
``partial_fit`` and ``fit_blocks`` for data larger than memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import (
    check_array,
    check_consistent_length,
    check_is_fitted,
    validate_data,
)

from geneinfer.models.base import GeneModel, JSONValue
from geneinfer.models.gram import (
    CenteredGram,
    GramStats,
    Precision,
    accumulate,
    blas_threads,
    default_block_rows,
    iter_row_blocks,
)


class ClassicalModel(GeneModel):
    """Input validation and output formatting shared by the classical models."""

    def _validate_fit(
        self, X: Any, Y: Any, *, gram_checks_finite: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Arrays as float; ``gram_checks_finite``: leave the NaN/inf check to the Gram
        accumulation (:meth:`GramStats.update` detects them for free, a scan costs ~0.3 s
        at the D-GEX shapes)."""
        if gram_checks_finite:
            if Y is None:
                raise ValueError(
                    f"{type(self).__name__} requires y to be passed, but the target y is None"
                )
            # validate_data would scan y for NaN whatever it is told about X
            X = validate_data(self, X, dtype=(np.float32, np.float64), ensure_all_finite=False)
            Y = check_array(Y, dtype=(np.float32, np.float64), ensure_2d=False,
                            ensure_all_finite=False, input_name="y")
            check_consistent_length(X, Y)
        else:
            X, Y = validate_data(
                self, X, Y, multi_output=True, y_numeric=True, dtype=(np.float32, np.float64)
            )
        Y = np.asarray(Y)
        if Y.dtype not in (np.float32, np.float64):
            Y = Y.astype(np.float64)
        self.single_target_ = Y.ndim == 1
        if Y.ndim == 1:
            Y = Y[:, None]
        self.n_targets_ = int(Y.shape[1])
        return X, Y

    def _validate_predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=(np.float32, np.float64))

    def _output(self, pred: np.ndarray) -> np.ndarray:
        pred = np.asarray(pred, dtype=np.float32)
        return pred[:, 0] if self.single_target_ else pred

    # feature_names_in_ is an object array: keep it as a JSON list
    def fitted_state(self) -> tuple[dict[str, np.ndarray], dict[str, JSONValue]]:
        names = self.__dict__.pop("feature_names_in_", None)
        try:
            arrays, meta = super().fitted_state()
        finally:
            if names is not None:
                self.feature_names_in_ = names
        if names is not None:
            meta["feature_names_in_"] = [str(n) for n in names]
        return arrays, meta

    def load_fitted_state(self, arrays: dict[str, np.ndarray], meta: dict[str, JSONValue]) -> None:
        meta = dict(meta)
        names = meta.pop("feature_names_in_", None)
        super().load_fitted_state(arrays, meta)
        if names is not None:
            self.feature_names_in_ = np.asarray(names, dtype=object)


class GramLinearModel(ClassicalModel):
    """Linear multi-output model fitted from Gram statistics; subclasses give ``_solve``.

    Fitted attributes: ``coef_`` (n_targets x n_landmarks, float32), ``intercept_``
    (n_targets,), ``mean_x_`` (n_landmarks,), ``mean_y_`` (n_targets,), ``n_samples_seen_``.
    Prediction is ``mean_y_ + (X - mean_x_) @ coef_.T`` (centring first keeps float32
    products accurate), identical to ``X @ coef_.T + intercept_`` in exact arithmetic.
    """

    precision: Precision
    block_rows: int | None

    # -- subclasses -------------------------------------------------------------------
    def _solve(self, gram: CenteredGram) -> np.ndarray:
        """Coefficients (n_landmarks x n_targets, float64) from the centred statistics."""
        raise NotImplementedError

    # -- fitting ------------------------------------------------------------------------
    def fit(self, X: Any, Y: Any) -> GramLinearModel:
        """Fit on in-memory ``X`` (samples x landmarks) and ``Y`` (samples x targets)."""
        X, Y = self._validate_fit(X, Y, gram_checks_finite=True)
        self._stats = GramStats(precision=self.precision)
        step = self.block_rows or default_block_rows(Y.shape[1])
        for i, (xb, yb) in enumerate(iter_row_blocks(X, Y, step)):
            self._stats.update(xb, yb, where=f"rows {i * step + 1}-{i * step + len(xb)}")
        self._stats.release_workspace()
        self._finish(self._stats.centered())
        return self

    def _can_partial_fit(self) -> bool:
        """Whether the hyper-parameters allow fitting from running statistics."""
        return True

    @available_if(lambda self: self._can_partial_fit())
    def partial_fit(self, X: Any, Y: Any) -> GramLinearModel:
        """Add one block of samples and re-solve (cost: one small eigen-solve per call).

        The running statistics are not part of :meth:`fitted_state`; a restored model
        predicts but cannot continue ``partial_fit``.
        """
        first = getattr(self, "_stats", None) is None
        X, Y = validate_data(
            self, X, Y, multi_output=True, y_numeric=True, dtype=(np.float32, np.float64),
            reset=first,
        )
        Y = np.asarray(Y, dtype=np.float64) if np.asarray(Y).dtype.kind != "f" else np.asarray(Y)
        if first:
            self._stats = GramStats(precision=self.precision)
            self.single_target_ = Y.ndim == 1
        Y2 = Y[:, None] if Y.ndim == 1 else Y
        if not first and Y2.shape[1] != self.n_targets_:
            raise ValueError(
                f"partial_fit got {Y2.shape[1]} targets, but earlier blocks had {self.n_targets_}"
            )
        self.n_targets_ = int(Y2.shape[1])
        for xb, yb in iter_row_blocks(X, Y2, self.block_rows):
            self._stats.update(xb, yb)
        self._stats.release_workspace()
        self._finish(self._stats.centered())
        return self

    @available_if(lambda self: self._can_partial_fit())
    def fit_blocks(
        self,
        blocks: Iterable[tuple[np.ndarray, np.ndarray]],
        *,
        progress: bool = False,
        total: int | None = None,
    ) -> GramLinearModel:
        """Fit from an iterable of row-aligned ``(X_block, Y_block)`` pairs in one pass.

        Only one block is held at a time; see :func:`geneinfer.models.gram.npy_blocks` for
        reading blocks from ``.npy`` files and :func:`~geneinfer.models.gram.iter_row_blocks`
        for h5py datasets or memory maps. Missing values raise a ``GeneinferError`` naming
        the block.
        """
        stats = accumulate(blocks, precision=self.precision, progress=progress, total=total)
        self.fit_gram(stats.centered())
        self._stats = stats
        return self

    @available_if(lambda self: self._can_partial_fit())
    def fit_gram(self, gram: CenteredGram) -> GramLinearModel:
        """Fit from centred statistics accumulated elsewhere (e.g. streamed out of core and
        rescaled, see :mod:`geneinfer.train.outofcore`); the same solution as
        :meth:`fit_blocks` on the blocks they came from."""
        self._stats = None
        self.n_features_in_ = gram.cxx.shape[0]
        self.__dict__.pop("feature_names_in_", None)
        self.single_target_ = False
        self.n_targets_ = int(gram.cxy.shape[1])
        self._finish(gram)
        return self

    def _finish(self, gram: CenteredGram) -> None:
        self._set_coefficients(gram, self._solve(gram))

    def _set_coefficients(self, gram: CenteredGram, coef: np.ndarray) -> None:
        """Fitted attributes from coefficients ``coef`` (p, T) on the centred problem."""
        self.coef_ = np.ascontiguousarray(coef.T, dtype=np.float32)
        self.mean_x_ = gram.mean_x.astype(np.float64)
        self.mean_y_ = gram.mean_y.astype(np.float64)
        self.intercept_ = gram.mean_y - gram.mean_x @ coef
        self.n_samples_seen_ = int(gram.n)

    # -- prediction ---------------------------------------------------------------------
    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets, float32, shape (n_samples, n_targets) (1-D if fitted on 1-D y)."""
        X = self._validate_predict(X)
        xc = (X - self.mean_x_).astype(np.float32)
        with blas_threads(2.0 * xc.size * self.coef_.shape[0]):
            pred = xc @ self.coef_.T
        pred += self.mean_y_.astype(np.float32)
        return self._output(pred)


def split_stats(
    X: np.ndarray,
    Y: np.ndarray,
    val_mask: np.ndarray,
    *,
    precision: Precision,
    block_rows: int | None = None,
) -> tuple[GramStats, GramStats]:
    """Training and validation statistics in one pass, without copying ``Y`` by rows.

    Both share the same shifts so that ``train += val`` gives the full-data statistics.
    """
    step = block_rows or default_block_rows(Y.shape[1])
    first = slice(0, min(step, X.shape[0]))
    sx = X[first].mean(axis=0, dtype=np.float64)
    sy = Y[first].mean(axis=0, dtype=np.float64)
    train = GramStats(precision=precision, shift_x=sx, shift_y=sy)
    val = GramStats(precision=precision, shift_x=sx, shift_y=sy)
    for start in range(0, X.shape[0], step):
        m = val_mask[start : start + step]
        xb, yb = X[start : start + step], Y[start : start + step]
        where = f"rows {start + 1}-{start + len(xb)}"
        train.update(xb[~m], yb[~m], where=where)
        val.update(xb[m], yb[m], where=where)
    train.release_workspace()
    val.release_workspace()
    return train, val


def validation_mask(n: int, fraction: float, random_state: int | None) -> np.ndarray:
    """Boolean mask of ``round(fraction * n)`` held-out rows (at least 1, at most n - 2)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {fraction}")
    if n < 3:
        raise ValueError(
            f"choosing a hyper-parameter on held-out data needs at least 3 samples, got "
            f"n_samples = {n}"
        )
    n_val = int(min(max(1, round(fraction * n)), n - 2))
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(random_state).choice(n, n_val, replace=False)] = True
    return mask
