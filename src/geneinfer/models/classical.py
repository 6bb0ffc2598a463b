"""Shared plumbing of the classical models: input checks, 1-D targets, linear prediction.

:class:`ClassicalModel` handles scikit-learn input validation (``n_features_in_``,
``feature_names_in_``, 1-D ``y``), returns float32 predictions and makes
``fitted_state()`` JSON/array-only. :class:`GramLinearModel` is the base of every model
whose prediction is ``mean_y + (x - mean_x) @ coef.T`` and whose fit needs only the Gram
statistics of :mod:`geneinfer.models.gram` (OLS, ridge, PCR, KNN-GE); it adds
``partial_fit`` and ``fit_blocks`` for data larger than memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import (
    check_array,
    check_consistent_length,
    check_is_fitted,
    validate_data,
)

from geneinfer.errors import GeneinferError
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
from geneinfer.models.gram_cv import (
    GroupedGramStats,
    HeldOutGroup,
    grouped_stats,
    iter_folds,
)
from geneinfer.models.selection import (
    GroupFolds,
    GroupScores,
    check_validation_pair,
    n_distinct,
    plan_folds,
    score_gene_subset,
    selection_record,
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
    #: fitted attributes of one selection rule, dropped when a new fit starts
    _selection_attrs: tuple[str, ...] = ()

    # -- subclasses -------------------------------------------------------------------
    def _solve(self, gram: CenteredGram) -> np.ndarray:
        """Coefficients (n_landmarks x n_targets, float64) from the centred statistics."""
        raise NotImplementedError

    # -- fitting ------------------------------------------------------------------------
    def fit(
        self,
        X: Any,
        Y: Any,
        *,
        groups: Any = None,
        X_val: Any = None,
        Y_val: Any = None,
    ) -> GramLinearModel:
        """Fit on in-memory ``X`` (samples x landmarks) and ``Y`` (samples x targets).

        Models that choose a hyper-parameter from data choose it on ``X_val``/``Y_val`` when
        given (and fit on ``X`` alone), else by study-aware cross-validation over ``groups``
        (one label per row, e.g. the study; see :mod:`geneinfer.models.selection`) and refit
        on every row, else by their single-group rule. ``selection_`` records which.
        Models that choose nothing ignore ``groups`` and the validation set.
        """
        X, Y = self._validate_fit(X, Y, gram_checks_finite=True)
        n_groups = n_distinct(groups, X.shape[0])
        self._forget_selection()
        if not self._chooses():
            self._fit_all(X, Y)
            return self
        if check_validation_pair(X_val, Y_val):
            X_val, Y_val = self._validate_val(X_val, Y_val, X.shape[1], Y.shape[1])
            train = self._accumulate(X, Y)
            val = GramStats(precision=self.precision, shift_x=train.shift_x,
                            shift_y=train.shift_y)
            for xb, yb in iter_row_blocks(X_val, Y_val, self.block_rows):
                val.update(xb, yb, where="validation rows")
            val.release_workspace()
            self._fit_holdout(train, val, train)
            self.selection_ = {**self.selection_, "holdout": "given", "n_groups": n_groups}
            return self
        folds = plan_folds(groups, X.shape[0])
        if folds is None:
            self._fit_single(X, Y)
            self.selection_ = {**self.selection_, "n_groups": n_groups}
        else:
            self._fit_grouped(X, Y, folds)
        return self

    def _accumulate(self, X: np.ndarray, Y: np.ndarray) -> GramStats:
        stats = GramStats(precision=self.precision)
        step = self.block_rows or default_block_rows(Y.shape[1])
        for i, (xb, yb) in enumerate(iter_row_blocks(X, Y, step)):
            stats.update(xb, yb, where=f"rows {i * step + 1}-{i * step + len(xb)}")
        stats.release_workspace()
        return stats

    def _fit_all(self, X: np.ndarray, Y: np.ndarray) -> None:
        """Fit with the hyper-parameters as they are (or chosen by ``_solve``'s own rule)."""
        self._stats = self._accumulate(X, Y)
        self._finish(self._stats.centered())

    def _validate_val(
        self, X_val: Any, Y_val: Any, p: int, t: int
    ) -> tuple[np.ndarray, np.ndarray]:
        X_val = check_array(X_val, dtype=(np.float32, np.float64), input_name="X_val")
        Y_val = check_array(Y_val, dtype=(np.float32, np.float64), ensure_2d=False,
                            input_name="Y_val")
        Y_val = Y_val[:, None] if Y_val.ndim == 1 else Y_val
        check_consistent_length(X_val, Y_val)
        if X_val.shape[1] != p or Y_val.shape[1] != t:
            raise GeneinferError(
                f"X_val/Y_val have {X_val.shape[1]}/{Y_val.shape[1]} genes; expected {p}/{t} "
                "like X/Y"
            )
        return X_val, Y_val

    # -- hyper-parameter choice (subclasses that choose override these) -------------------
    def _chooses(self) -> bool:
        """Whether this configuration chooses anything from data."""
        return False

    def _fit_single(self, X: np.ndarray, Y: np.ndarray) -> None:
        """The single-group rule (GCV or a random hold-out); sets ``selection_``."""
        self._fit_all(X, Y)

    def _fit_holdout(self, train: GramStats, val: GramStats, final: GramStats) -> None:
        """Choose on ``val`` with a model fitted on ``train``, then fit on ``final``."""
        raise NotImplementedError

    def _fit_random_holdout(self, X: np.ndarray, Y: np.ndarray, fraction: float,
                            random_state: int | None) -> None:
        """The single-group rule of models without GCV: choose on a seeded random share
        ``fraction`` of the rows, then fit on every row."""
        mask = validation_mask(X.shape[0], fraction, random_state)
        train, val = split_stats(X, Y, mask, precision=self.precision,
                                 block_rows=self.block_rows)
        full = GramStats(precision=self.precision)
        full += train
        full += val
        self._fit_holdout(train, val, full)
        self.selection_["holdout"] = "random"

    def _cv_genes(self, n_targets: int) -> np.ndarray:
        """Target columns the cross-validation scores (all when chosen per gene)."""
        per_gene = bool(getattr(self, "alpha_per_gene", False))
        n_genes = None if per_gene else getattr(self, "cv_genes", None)
        return score_gene_subset(n_targets, n_genes, getattr(self, "random_state", 0))

    def _cv_prepare(self, full: CenteredGram) -> tuple[np.ndarray, Any]:
        """(candidate grid, anything the fold scores and the final solve reuse)."""
        raise NotImplementedError

    def _cv_fold_scores(
        self, train: CenteredGram, held: list[HeldOutGroup], grid: np.ndarray, ctx: Any,
        n_total: int, genes: np.ndarray, floor: np.ndarray,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``(group code, (H, S) scores)`` of every held-out group of one fold."""
        raise NotImplementedError

    def _cv_solve(
        self, full: CenteredGram, grid: np.ndarray, ctx: Any, board: GroupScores,
        genes: np.ndarray,
    ) -> np.ndarray:
        """Final coefficients (p, T) on all rows with the candidate(s) the scores pick."""
        raise NotImplementedError

    def _fit_grouped(self, X: np.ndarray, Y: np.ndarray, folds: GroupFolds) -> None:
        """Study-aware choice from per-group sums, then the fit on every row."""
        genes = self._cv_genes(Y.shape[1])
        stats = grouped_stats(X, Y, folds, genes, precision=self.precision,
                              block_rows=self.block_rows)
        self._fit_from_groups(stats)

    def _forget_selection(self) -> None:
        """Drop the fitted attributes of an earlier fit's selection rule."""
        for key in ("selection_", "cv_scores_", "cv_genes_", *self._selection_attrs):
            self.__dict__.pop(key, None)

    def _fit_from_groups(self, stats: GroupedGramStats) -> None:
        folds = stats.folds
        full = stats.total.centered()
        grid, ctx = self._cv_prepare(full)
        floor = stats.variance_floor()
        genes = stats.genes
        board = GroupScores(len(grid), len(genes))
        for train, held in iter_folds(stats):
            for code, scores in self._cv_fold_scores(train, held, grid, ctx, full.n, genes,
                                                     floor):
                board.add(code, scores)
        self._stats = stats.total
        coef = self._cv_solve(full, grid, ctx, board, genes)
        self.cv_scores_ = board.per_gene().astype(np.float32)
        self.cv_genes_ = genes.astype(np.int64)
        self.selection_ = selection_record(
            folds.method, n_groups=folds.n_groups, folds=folds, grid=self._grid_values(grid),
            scores=board.overall(), score="within-group-z-mse", genes_scored=len(genes),
        )
        self._set_coefficients(full, coef)

    def chooses_hyperparameters(self) -> bool:
        """Whether this configuration chooses a hyper-parameter from data (and so can use
        :meth:`fit_grouped_gram`)."""
        return self._chooses()

    def scored_genes(self, n_targets: int) -> np.ndarray:
        """Target columns study-aware selection scores (the per-group sums to keep)."""
        return self._cv_genes(n_targets)

    def fit_grouped_gram(self, stats: GroupedGramStats) -> GramLinearModel:
        """Choose over the held-out groups of ``stats.folds`` and fit on every row, from
        per-group sums accumulated elsewhere (e.g. streamed out of core and standardised,
        see :mod:`geneinfer.train.outofcore`); the same choice and fit as :meth:`fit` with
        ``groups`` on the rows they came from. ``stats.genes`` must be
        :meth:`scored_genes`."""
        if not self._chooses():
            return self.fit_gram(stats.total.centered())
        self._forget_selection()
        self._start_from_sums(stats.total.n_features, stats.total.n_targets)
        self._fit_from_groups(stats)
        self._stats = None
        return self

    def _grid_values(self, grid: np.ndarray) -> Any:
        """The candidates as recorded in ``selection_``."""
        return np.asarray(grid)

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
        self._start_from_sums(gram.cxx.shape[0], gram.cxy.shape[1])
        self._finish(gram)
        return self

    def _start_from_sums(self, n_features: int, n_targets: int) -> None:
        """What ``fit`` learns from ``X`` and ``Y`` themselves, for a fit from sums."""
        self.n_features_in_ = int(n_features)
        self.__dict__.pop("feature_names_in_", None)
        self.single_target_ = False
        self.n_targets_ = int(n_targets)

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
