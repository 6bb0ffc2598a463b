"""Saved inference models: estimator + preprocessing + gene identities, without pickle.

An :class:`InferenceModel` is what ``geneinfer train`` writes and ``geneinfer predict`` reads.
On disk it is a directory::

    MODEL/
      model.json           format name/version, model kind + params, gene ids and symbols,
                           preprocessing and estimator metadata, per-gene validation metrics,
                           training info, SHA-256 of every weights file
      weights.safetensors  estimator arrays ("estimator.*"), preprocessing arrays
                           ("preprocessor.*") and bundle arrays ("bundle.*")

The directory is written to a temporary sibling and swapped into place
(:func:`geneinfer.utils.files.atomic_dir`), so a reader never sees a half-written model and a
save killed half-way leaves a temporary folder that the next save of that model removes.
Loading parses JSON and safetensors only (never pickle), checks every checksum and rebuilds
the estimator through :func:`geneinfer.models.registry.make_model` and
:meth:`~geneinfer.models.base.GeneModel.load_fitted_state`.

Integrity (format version 2): ``model.json`` records the SHA-256 and size of the weights file
*and* the SHA-256 of its own canonical content (:func:`json_digest`: every entry but
``files``, keys sorted, compact separators), so an edit anywhere in it (e.g. two target ids
swapped, which would put predictions under the wrong genes) is refused on load. Files of
format version 1 carry no such digest; they are still loaded, with a warning that changes to
their ``model.json`` cannot be detected and that re-saving the model protects it. A version-1
file that does carry a digest, or a version-2 file without one, is refused. ``model.json``
larger than :data:`MAX_JSON_BYTES` or nested deeper than :data:`MAX_JSON_DEPTH` is refused
before it is used.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import os
import stat
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from geneinfer.errors import GeneinferError, MissingGenesError, ModelFileError
from geneinfer.expression import ExpressionData
from geneinfer.genes import GeneIdMap
from geneinfer.genes.matching import match_genes
from geneinfer.models.base import arrays_under
from geneinfer.models.registry import make_model
from geneinfer.preprocess import (
    MAX_IMPUTE_FRACTION,
    Harmonizer,
    LandmarkInputs,
    ProfilePreprocessor,
)
from geneinfer.utils.files import atomic_dir

logger = logging.getLogger(__name__)

FORMAT_NAME = "geneinfer-model"
#: bump when the layout changes in a way older readers cannot handle (2: model.json digest)
FORMAT_VERSION = 2
MODEL_JSON = "model.json"
WEIGHTS_FILE = "weights.safetensors"
#: the key in ``files`` that holds the digest of model.json's own canonical content
DIGEST_KEY = "sha256_canonical"

#: profiles predicted together: the estimator's and the inverse standardisation's
#: temporaries are this many rows, whatever the input's size
PREDICT_ROWS = 4096
_EST_PREFIX = "estimator."
_PRE_PREFIX = "preprocessor."
_BUNDLE_PREFIX = "bundle."
#: model.json of a real model is a few MB (gene lists, metrics, provenance); larger is refused
MAX_JSON_BYTES = 64 * 1024 * 1024
#: deepest nesting of lists/objects accepted in model.json (real files: under 10)
MAX_JSON_DEPTH = 64


# ---------------------------------------------------------------------- JSON helpers
def to_jsonable(value: Any, *, what: str = "value") -> Any:
    """``value`` as plain JSON types; tuples are tagged so they come back as tuples.

    NaN / infinite floats become ``None`` (JSON has no NaN).
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, tuple):
        return {"__tuple__": [to_jsonable(v, what=what) for v in value]}
    if isinstance(value, list):
        return [to_jsonable(v, what=what) for v in value]
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return to_jsonable(value.item(), what=what)
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.size <= 10_000:
        return [to_jsonable(v, what=what) for v in value.tolist()]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{what}: dict key {k!r} is not a string")
            out[k] = to_jsonable(v, what=what)
        return out
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{what}: {type(value).__name__} value {value!r} cannot be stored as JSON")


def from_jsonable(value: Any) -> Any:
    """Inverse of :func:`to_jsonable` (tuples restored)."""
    if isinstance(value, list):
        return [from_jsonable(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(from_jsonable(v) for v in value["__tuple__"])
        return {k: from_jsonable(v) for k, v in value.items()}
    return value


def json_digest(doc: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a model document without its ``files`` entry (which
    holds this digest and those of the weights)."""
    body = {k: v for k, v in doc.items() if k != "files"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_arrays(arrays: dict[str, np.ndarray], owner: str) -> dict[str, np.ndarray]:
    """Numeric, contiguous copies (safetensors stores only plain numeric tensors)."""
    out = {}
    for key, arr in arrays.items():
        arr = np.asarray(arr)
        if arr.dtype.kind not in "biuf":
            raise TypeError(
                f"{owner} array {key!r} has dtype {arr.dtype}; only numeric arrays can be "
                "saved without pickling (store strings in the JSON metadata)"
            )
        out[key] = np.ascontiguousarray(arr)
    return out


# ---------------------------------------------------------------------- preprocessor state
def _preprocessor_state(pre: Any) -> tuple[dict[str, np.ndarray], dict[str, Any], bool]:
    """(arrays, JSON meta, was-a-tuple) of a fitted preprocessor's ``state()``."""
    state = pre.state()
    if isinstance(state, tuple) and len(state) == 2:
        arrays, meta = state
        return dict(arrays), dict(meta), True
    arrays, meta = {}, {}
    for key, value in dict(state).items():
        if isinstance(value, np.ndarray):
            arrays[key] = value
        else:
            meta[key] = value
    return arrays, meta, False


def _preprocessor_from_state(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Any:
    tuple_form = meta.pop("__state_tuple__", True)
    if tuple_form:
        return ProfilePreprocessor.from_state(arrays, meta)
    merged: dict[str, Any] = dict(meta)
    merged.update(arrays)
    return ProfilePreprocessor.from_state(merged)


def _frame(values: Any, prefix: str) -> pd.DataFrame:
    """``values`` as a DataFrame; arrays get genes named by position (``x0``, ``x1``, ...)."""
    if isinstance(values, pd.DataFrame):
        return values.set_axis(values.columns.astype(str), axis=1)
    arr = np.asarray(values, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[:, None]
    return pd.DataFrame(arr, columns=[f"{prefix}{i}" for i in range(arr.shape[1])])


def _aligned_metrics(metrics: pd.DataFrame | None, target_ids: list[str]) -> pd.DataFrame:
    idx = pd.Index(target_ids, name="gene_id")
    if metrics is None:
        return pd.DataFrame({"valid_r": np.nan, "valid_mae": np.nan}, index=idx, dtype=float)
    gm = metrics.copy()
    gm.index = pd.Index([str(g) for g in gm.index], name="gene_id")
    return gm.reindex(idx)


# ---------------------------------------------------------------------- the model
class InferenceModel(RegressorMixin, BaseEstimator):
    """A landmark -> target model with its preprocessing: what ``geneinfer train`` writes and
    ``geneinfer predict`` reads, and a scikit-learn estimator.

    As an estimator (``Pipeline``, ``clone``, ``cross_val_predict``), :meth:`fit` takes log2
    profiles as DataFrames (samples x genes, gene ids as columns): ``X`` the landmarks and
    ``Y`` the targets; it fits the D-GEX preprocessing (:class:`ProfilePreprocessor`) and the
    registry model ``model`` on them. :meth:`predict` applies the saved preprocessing. A model
    trained by :func:`geneinfer.train.train_model` or loaded by :meth:`load` is fitted the same
    way, so ``clone`` of a loaded model is an unfitted model with the same settings.

    Parameters
    ----------
    model
        Registry name of the estimator (``"ridge"``, ``"dgex"``, ...).
    params
        Its hyper-parameters.
    quantile, standardize
        Preprocessing: quantile-normalise landmark and target blocks onto training
        references; standardise each gene with its training mean and standard deviation.
    missing_landmarks
        In :meth:`predict`: ``"error"`` or ``"impute"`` (training means) for absent
        landmarks and missing values.

    Attributes
    ----------
    estimator_, preprocessor_
        The fitted :class:`~geneinfer.models.base.GeneModel` and ``ProfilePreprocessor``
        (or None).
    landmark_ids_, target_ids_, landmark_symbols_, target_symbols_
        Canonical gene ids (Entrez ids as strings on microarray / L1000 data) and symbols.
    gene_metrics_
        Per-target validation metrics indexed by target id (``valid_r``, ``valid_mae``).
    info_
        Training provenance: model name, params, training files, panel, sample counts,
        duplicate report, geneinfer version, creation time.
    landmark_means_
        Mean log2 expression of each landmark in the training data (for imputing).
    gene_id_kind_
        What the ids are (``"entrez"``, ``"ensembl"``, ...).

    The fitted attributes are also readable without the trailing underscore
    (``model.landmark_ids``).
    """

    def __init__(self, model: str = "ridge", *, params: dict[str, Any] | None = None,
                 quantile: bool = True, standardize: bool = True,
                 missing_landmarks: str = "error") -> None:
        self.model = model
        self.params = params
        self.quantile = quantile
        self.standardize = standardize
        self.missing_landmarks = missing_landmarks

    @classmethod
    def from_fitted(
        cls,
        estimator: Any,
        preprocessor: Any,
        landmark_ids: list[str],
        target_ids: list[str],
        *,
        landmark_symbols: list[str] | None = None,
        target_symbols: list[str] | None = None,
        gene_metrics: pd.DataFrame | None = None,
        info: dict[str, Any] | None = None,
        landmark_means: np.ndarray | None = None,
        gene_id_kind: str = "entrez",
    ) -> InferenceModel:
        """A fitted model from its parts (what training and loading produce)."""
        kind = getattr(estimator, "name", "") or (info or {}).get("model", "")
        obj = cls(str(kind), params=estimator.get_params(deep=False),
                  quantile=bool(getattr(preprocessor, "quantile", False)),
                  standardize=bool(getattr(preprocessor, "standardize", False)))
        obj._set_fitted(estimator, preprocessor, landmark_ids, target_ids,
                        landmark_symbols=landmark_symbols, target_symbols=target_symbols,
                        gene_metrics=gene_metrics, info=info, landmark_means=landmark_means,
                        gene_id_kind=gene_id_kind)
        return obj

    def _set_fitted(self, estimator: Any, preprocessor: Any, landmark_ids: Any,
                    target_ids: Any, *, landmark_symbols: Any = None, target_symbols: Any = None,
                    gene_metrics: pd.DataFrame | None = None, info: dict | None = None,
                    landmark_means: Any = None, gene_id_kind: str = "entrez") -> None:
        self.estimator_ = estimator
        self.preprocessor_ = preprocessor
        self.landmark_ids_ = [str(g) for g in landmark_ids]
        self.target_ids_ = [str(g) for g in target_ids]
        self.landmark_symbols_ = [str(s) for s in (landmark_symbols or self.landmark_ids_)]
        self.target_symbols_ = [str(s) for s in (target_symbols or self.target_ids_)]
        if len(self.landmark_symbols_) != len(self.landmark_ids_):
            raise GeneinferError("landmark_symbols and landmark_ids differ in length")
        if len(self.target_symbols_) != len(self.target_ids_):
            raise GeneinferError("target_symbols and target_ids differ in length")
        self.gene_metrics_ = _aligned_metrics(gene_metrics, self.target_ids_)
        self.info_ = dict(info or {})
        self.gene_id_kind_ = gene_id_kind
        self.landmark_means_ = None
        if landmark_means is not None:
            self.landmark_means_ = np.asarray(landmark_means, dtype=np.float32)
            if self.landmark_means_.shape != (len(self.landmark_ids_),):
                raise GeneinferError(
                    f"landmark_means has shape {self.landmark_means_.shape}, "
                    f"expected ({len(self.landmark_ids_)},)"
                )

    # ------------------------------------------------------------------ as an estimator
    def fit(self, X: Any, Y: Any, **fit_params: Any) -> InferenceModel:
        """Fit the preprocessing and the model on log2 profiles.

        ``X`` (samples x landmarks) and ``Y`` (samples x targets) are DataFrames with gene ids
        as columns, or arrays (genes are then named by position). ``fit_params`` (e.g.
        ``groups``) go to the model's ``fit`` when it takes them.
        """
        X_df, Y_df = _frame(X, "x"), _frame(Y, "y")
        if len(X_df) != len(Y_df):
            raise GeneinferError(f"X has {len(X_df)} samples but Y has {len(Y_df)}")
        Xv = X_df.to_numpy(dtype=np.float32)
        Yv = Y_df.to_numpy(dtype=np.float32)
        pre = ProfilePreprocessor(quantile=self.quantile, standardize=self.standardize).fit(
            Xv, Yv)
        est = make_model(self.model, **(self.params or {}))
        takes = set(inspect.signature(est.fit).parameters)
        est.fit(pre.transform_landmarks(Xv), pre.transform_targets(Yv),
                **{k: v for k, v in fit_params.items() if k in takes})
        self._set_fitted(est, pre, list(X_df.columns), list(Y_df.columns),
                         landmark_means=np.nanmean(Xv, axis=0),
                         info={"model": self.model, "n_train_samples": len(Xv)})
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    # ------------------------------------------------------------------ properties
    estimator = property(lambda self: self._fitted("estimator_"))
    preprocessor = property(lambda self: self._fitted("preprocessor_"))
    landmark_ids = property(lambda self: self._fitted("landmark_ids_"))
    target_ids = property(lambda self: self._fitted("target_ids_"))
    landmark_symbols = property(lambda self: self._fitted("landmark_symbols_"))
    target_symbols = property(lambda self: self._fitted("target_symbols_"))
    gene_metrics = property(lambda self: self._fitted("gene_metrics_"))
    info = property(lambda self: self._fitted("info_"))
    landmark_means = property(lambda self: self._fitted("landmark_means_"))
    gene_id_kind = property(lambda self: self._fitted("gene_id_kind_"))

    def _fitted(self, name: str) -> Any:
        check_is_fitted(self, "estimator_")
        return getattr(self, name)

    @property
    def kind(self) -> str:
        """Registry name of the estimator (e.g. ``"ridge"``)."""
        name = getattr(self.estimator, "name", "") or self.info.get("model", "")
        if not name:
            raise ModelFileError(
                f"{type(self.estimator).__name__} has no registry name; cannot save it"
            )
        return str(name)

    @property
    def n_landmarks(self) -> int:
        return len(self.landmark_ids)

    @property
    def n_targets(self) -> int:
        return len(self.target_ids)

    def __repr__(self, N_CHAR_MAX: int = 700) -> str:
        if not hasattr(self, "estimator_"):
            return super().__repr__(N_CHAR_MAX)
        return (
            f"InferenceModel({self.kind}: {self.n_landmarks} landmarks -> {self.n_targets} targets)"
        )

    # ------------------------------------------------------------------ prediction
    def model_inputs(self, X_landmarks_log2: np.ndarray) -> np.ndarray:
        """What the estimator sees: log2 landmarks after the saved preprocessing (quantile
        normalisation onto the training reference, standardisation)."""
        X = np.asarray(X_landmarks_log2, dtype=np.float32)
        return X if self.preprocessor is None else self.preprocessor.transform_landmarks(X)

    def model_input_means(self) -> np.ndarray:
        """The training mean of :meth:`model_inputs` per landmark: 0 when standardised; the
        log2 training means otherwise (exact without quantile normalisation, close with)."""
        if self.preprocessor is not None and self.preprocessor.standardize:
            return np.zeros(self.n_landmarks, dtype=np.float32)
        if self.landmark_means is None:
            raise GeneinferError("this model has no training landmark means; retrain it with "
                                 "this geneinfer version")
        return np.asarray(self.landmark_means, dtype=np.float32)

    def predict_log2(self, X_landmarks_log2: np.ndarray, *,
                     input_shift: np.ndarray | None = None) -> np.ndarray:
        """Targets (log2) from landmark profiles (log2), columns in ``target_ids`` order.

        Parameters
        ----------
        X_landmarks_log2
            ``(n_samples, n_landmarks)`` log2 expression in ``landmark_ids`` order.
        input_shift
            ``(n_landmarks,)`` added to the :meth:`model_inputs` (per-study centering,
            :func:`geneinfer.calibration.centering_shift`): a per-gene constant where the
            model sees it, so a linear model's outputs move by a per-gene constant only.

        Returns
        -------
        ``(n_samples, n_targets)`` float32. Rows whose input holds NaN are NaN (missing
        stays missing).
        """
        X = np.asarray(X_landmarks_log2, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_landmarks:
            raise GeneinferError(
                f"landmark matrix has shape {X.shape}, expected (n, {self.n_landmarks})"
            )
        out = np.full((X.shape[0], self.n_targets), np.nan, dtype=np.float32)
        rows = np.flatnonzero(~np.isnan(X).any(axis=1))
        shift = None if input_shift is None else np.asarray(input_shift, dtype=np.float32)
        for start in range(0, len(rows), PREDICT_ROWS):
            at = rows[start:start + PREDICT_ROWS]
            out[at] = self._predict_rows(X[at], shift)
        return out

    def _predict_rows(self, X: np.ndarray, shift: np.ndarray | None) -> np.ndarray:
        Xin = self.model_inputs(X)
        if shift is not None:
            Xin = Xin + shift[None, :]
        Y = np.asarray(self.estimator.predict(Xin), dtype=np.float32)
        if self.preprocessor is not None:
            Y = np.asarray(self.preprocessor.inverse_transform_targets(Y), dtype=np.float32)
        return Y.reshape(-1, self.n_targets)

    def known_genes(self) -> GeneIdMap:
        """This model's genes with their symbols: an input keyed by symbols is matched to
        them before any other gene table."""
        return GeneIdMap.from_genes([*self.landmark_ids, *self.target_ids],
                                    [*self.landmark_symbols, *self.target_symbols],
                                    kind=self.gene_id_kind)

    def landmark_inputs(self, harmonizer: Harmonizer, *, missing_landmarks: str = "error",
                        max_impute_fraction: float = MAX_IMPUTE_FRACTION) -> LandmarkInputs:
        """How a harmonised input becomes this model's landmark matrix
        (:class:`~geneinfer.preprocess.LandmarkInputs`; absent landmarks are an error unless
        ``missing_landmarks="impute"``, and more than ``max_impute_fraction`` even then)."""
        return LandmarkInputs.plan(harmonizer, self.landmark_ids,
                                   landmark_symbols=self.landmark_symbols,
                                   means=self.landmark_means, missing=missing_landmarks,
                                   max_impute_fraction=max_impute_fraction)

    def predict(
        self,
        data: ExpressionData | pd.DataFrame | np.ndarray,
        *,
        missing_landmarks: Literal["error", "impute"] | None = None,
        scale: str | None = None,
        annotation: Any = None,
        data_dir: str | os.PathLike[str] | None = None,
        max_impute_fraction: float = MAX_IMPUTE_FRACTION,
    ) -> Any:
        """Infer the target genes of every sample in ``data``.

        * :class:`ExpressionData` (any scale, any gene ids) goes through the same steps as in
          ``geneinfer predict``: harmonised (:func:`geneinfer.preprocess.harmonize`: log2,
          canonical gene ids) and its landmarks found (:meth:`landmark_inputs`); returns
          ExpressionData (samples x targets, log2; gene metadata ``symbol``, ``valid_r``,
          ``valid_mae``; the input's sample metadata).
        * A DataFrame of log2 values with gene ids as columns (as in :meth:`fit`): its
          landmark columns are used; returns a DataFrame with target ids as columns.
        * An array: log2 landmarks in ``landmark_ids`` order; returns an array.

        Parameters
        ----------
        missing_landmarks
            ``"error"`` raises an error listing absent landmarks or missing values;
\1\2        scale, annotation, data_dir
            As for :func:`geneinfer.preprocess.harmonize` (ExpressionData input).
        """
        missing_landmarks = missing_landmarks or self.missing_landmarks
        if isinstance(data, pd.DataFrame):
            return self._predict_frame(data, missing_landmarks)
        if not isinstance(data, ExpressionData):
            return self.predict_log2(np.asarray(data, dtype=np.float32))
        harmonizer = Harmonizer.plan(
            gene_ids=data.gene_ids, genes=data.genes, gene_id_kind=data.gene_id_kind,
            head=data.values, stated_scale=data.scale, scale=scale, annotation=annotation,
            known=self.known_genes(), data_dir=data_dir, to=self.gene_id_kind,
            source=data.source,
        )
        inputs = self.landmark_inputs(harmonizer, missing_landmarks=missing_landmarks,
                                      max_impute_fraction=max_impute_fraction)
        if inputs.n_absent:
            logger.warning("%d of %d landmark genes missing in %s; imputed from training means",
                           inputs.n_absent, self.n_landmarks, data.source or "the data")
        raw = data.values if inputs.read_cols is None else data.values[:, inputs.read_cols]
        X, _ = inputs.landmarks(raw, sample_ids=list(data.sample_ids))
        return ExpressionData(
            values=self.predict_log2(X),
            gene_ids=self.target_ids,
            sample_ids=data.sample_ids,
            genes=self.target_table(),
            samples=data.samples,
            scale="log2",
            gene_id_kind=self.gene_id_kind,
            source=data.source,
        )

    def _predict_frame(self, frame: pd.DataFrame, missing_landmarks: str) -> pd.DataFrame:
        match = match_genes(self.landmark_ids, frame.columns.astype(str))
        if match.n_missing and missing_landmarks != "impute":
            absent = [g for g, ok in zip(self.landmark_ids, match.present) if not ok]
            raise MissingGenesError(absent, what="landmark genes of the model",
                                    source="the DataFrame")
        X = match.take(frame.to_numpy(dtype=np.float32))
        if missing_landmarks == "impute" and self.landmark_means is not None:
            X = np.where(np.isnan(X), self.landmark_means[None, :], X)
        return pd.DataFrame(self.predict_log2(X), index=frame.index, columns=self.target_ids)

    def target_table(self) -> pd.DataFrame:
        """Per-target metadata: ``symbol`` plus the validation metrics."""
        gm = self.gene_metrics if self.gene_metrics is not None else pd.DataFrame()
        table = pd.DataFrame({"symbol": self.target_symbols}, index=pd.Index(self.target_ids))
        for col in gm.columns:
            table[col] = gm[col].to_numpy()
        return table

    # ------------------------------------------------------------------ saving
    def _payload(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        est_arrays, est_meta = self.estimator.fitted_state()
        arrays = {_EST_PREFIX + k: v for k, v in _check_arrays(est_arrays, "estimator").items()}
        pre_json: dict[str, Any] | None = None
        if self.preprocessor is not None:
            p_arrays, p_meta, tuple_form = _preprocessor_state(self.preprocessor)
            arrays.update(
                {_PRE_PREFIX + k: v for k, v in _check_arrays(p_arrays, "preprocessor").items()}
            )
            pre_json = {
                "class": type(self.preprocessor).__name__,
                "state_tuple": tuple_form,
                "meta": to_jsonable(p_meta, what="preprocessor state"),
            }
        if self.landmark_means is not None:
            arrays[_BUNDLE_PREFIX + "landmark_means"] = np.ascontiguousarray(self.landmark_means)
        gm = self.gene_metrics if self.gene_metrics is not None else pd.DataFrame()
        params = self.estimator.get_params(deep=False)
        doc = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "estimator_class": type(self.estimator).__name__,
            "params": to_jsonable(params, what=f"parameters of {self.kind}"),
            "gene_id_kind": self.gene_id_kind,
            "landmarks": {"ids": self.landmark_ids, "symbols": self.landmark_symbols},
            "targets": {"ids": self.target_ids, "symbols": self.target_symbols},
            "preprocessing": pre_json,
            "estimator_meta": to_jsonable(est_meta, what="estimator state"),
            "gene_metrics": {
                str(col): to_jsonable(gm[col].to_numpy(dtype=float).tolist()) for col in gm.columns
            },
            "info": to_jsonable(self.info, what="model info"),
        }
        return doc, arrays

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model directory ``path`` atomically; return its path.

        An existing geneinfer model directory at ``path`` is replaced; any other existing
        file or non-empty directory is left alone and raises :class:`GeneinferError`.
        """
        final = Path(path)
        _check_overwritable(final)
        try:
            doc, arrays = self._payload()
        except TypeError as exc:
            raise ModelFileError(f"cannot save model to {final}: {exc}") from None
        with atomic_dir(final) as tmp:
            weights = tmp / WEIGHTS_FILE
            _save_weights(arrays, weights)
            doc["files"] = {
                WEIGHTS_FILE: {"sha256": _sha256(weights), "bytes": weights.stat().st_size},
                MODEL_JSON: {DIGEST_KEY: json_digest(doc)},
            }
            text = json.dumps(doc, indent=1, allow_nan=False)
            (tmp / MODEL_JSON).write_text(text + "\n", encoding="utf-8")
        return final

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str | None = None) -> InferenceModel:
        """Read a model directory written by :meth:`save` (never unpickles).

        Parameters
        ----------
        device
            For torch models, override the saved ``device`` parameter (e.g. ``"cpu"``).

        Raises
        ------
        ModelFileError
            Missing or truncated files, checksum mismatch, unknown format or version.
        """
        root = Path(path)
        doc = _read_model_json(root)
        arrays = _read_weights(root, doc)
        try:
            return cls._from_parts(doc, arrays, device=device)
        except ModelFileError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, GeneinferError) as exc:
            raise ModelFileError(f"{root}: model file is inconsistent: {exc}") from None

    @classmethod
    def _from_parts(
        cls, doc: dict[str, Any], arrays: dict[str, np.ndarray], *, device: str | None
    ) -> InferenceModel:
        params = from_jsonable(doc["params"])
        if device is not None and "device" in params:
            params["device"] = device
        estimator = make_model(doc["kind"], **params)
        estimator.load_fitted_state(arrays_under(arrays, _EST_PREFIX),
                                    from_jsonable(doc["estimator_meta"]))
        preprocessor = None
        pre = doc.get("preprocessing")
        if pre is not None:
            p_arrays = arrays_under(arrays, _PRE_PREFIX)
            meta = from_jsonable(pre["meta"])
            meta["__state_tuple__"] = bool(pre.get("state_tuple", True))
            preprocessor = _preprocessor_from_state(p_arrays, meta)
        metrics = pd.DataFrame(
            {
                k: np.asarray([np.nan if v is None else v for v in vals], dtype=float)
                for k, vals in doc.get("gene_metrics", {}).items()
            },
            index=pd.Index(doc["targets"]["ids"], name="gene_id"),
        )
        _check_sizes(
            estimator, preprocessor, len(doc["landmarks"]["ids"]), len(doc["targets"]["ids"])
        )
        return cls.from_fitted(
            estimator,
            preprocessor,
            doc["landmarks"]["ids"],
            doc["targets"]["ids"],
            landmark_symbols=doc["landmarks"].get("symbols"),
            target_symbols=doc["targets"].get("symbols"),
            gene_metrics=metrics,
            info=from_jsonable(doc.get("info", {})),
            landmark_means=arrays.get(_BUNDLE_PREFIX + "landmark_means"),
            gene_id_kind=doc.get("gene_id_kind", "entrez"),
        )


def _check_sizes(estimator: Any, preprocessor: Any, n_lm: int, n_tg: int) -> None:
    """The gene lists must match what the estimator and preprocessor were fitted on."""
    checks = [
        ("estimator inputs", getattr(estimator, "n_features_in_", None), n_lm),
        ("estimator outputs", getattr(estimator, "n_targets_", None), n_tg),
        ("preprocessing landmarks", getattr(preprocessor, "n_landmarks_", None), n_lm),
        ("preprocessing targets", getattr(preprocessor, "n_targets_", None), n_tg),
    ]
    for what, got, expected in checks:
        if got is not None and int(got) != expected:
            raise ModelFileError(f"{what}: fitted on {got} genes but the model lists {expected}")


# ---------------------------------------------------------------------- file helpers
def check_model_path(path: str | os.PathLike[str]) -> None:
    """Raise :class:`GeneinferError` if a model cannot be saved at ``path`` (call before a
    long training run so a bad ``--out`` fails at once)."""
    _check_overwritable(Path(path))


def _check_overwritable(final: Path) -> None:
    if not final.exists():
        return
    if final.is_dir():
        if (final / MODEL_JSON).is_file() or not any(final.iterdir()):
            return
        raise GeneinferError(
            f"{final} exists and is not a geneinfer model directory; refusing to overwrite it"
        )
    raise GeneinferError(f"{final} exists and is a file; a model is saved as a directory")


def _save_weights(arrays: dict[str, np.ndarray], path: Path) -> None:
    """safetensors' own errors (e.g. a full disk) as the ``OSError`` they stand for."""
    # safetensors writes its files 0600; give it the mode of any new file (0666 less the
    # umask), learnt from a file created first
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    mode = stat.S_IMODE(path.stat().st_mode)
    try:
        save_file(arrays, str(path), metadata={"format": FORMAT_NAME})
    except SafetensorError as exc:
        raise OSError(f"{path.name}: {exc}") from None
    path.chmod(mode)


def read_model_doc(root: Path) -> dict[str, Any]:
    """The parsed ``model.json`` of model folder ``root`` (size, depth and format checked;
    checksums are checked by :meth:`InferenceModel.load`)."""
    if not root.exists():
        raise ModelFileError(f"{root}: no such model (expected a directory with {MODEL_JSON})")
    if not root.is_dir():
        raise ModelFileError(f"{root}: a model is a directory with {MODEL_JSON}, got a file")
    jpath = root / MODEL_JSON
    if not jpath.is_file():
        raise ModelFileError(f"{jpath}: missing; {root} is not a complete geneinfer model")
    if jpath.stat().st_size > MAX_JSON_BYTES:
        raise ModelFileError(f"{jpath}: implausibly large ({jpath.stat().st_size} bytes, "
                             f"at most {MAX_JSON_BYTES})")
    try:
        doc = json.loads(jpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(
            f"{jpath}: not valid JSON ({exc}); the file is truncated or damaged"
        ) from None
    except RecursionError:
        raise ModelFileError(f"{jpath}: nested too deeply (at most {MAX_JSON_DEPTH} levels); "
                             "the file is damaged") from None
    if _depth(doc) > MAX_JSON_DEPTH:
        raise ModelFileError(f"{jpath}: nested too deeply (at most {MAX_JSON_DEPTH} levels); "
                             "the file is damaged")
    return doc


def _depth(doc: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, todo = 0, [(doc, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            values = item.values() if isinstance(item, dict) else item
            todo.extend((v, level + 1) for v in values if isinstance(v, (dict, list)))
    return deepest


def _read_model_json(root: Path) -> dict[str, Any]:
    doc = read_model_doc(root)
    jpath = root / MODEL_JSON
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{jpath}: not a geneinfer model file (format != {FORMAT_NAME!r})")
    version = doc.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ModelFileError(f"{jpath}: bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{jpath}: model format version {version} is newer than this geneinfer reads "
            f"(up to {FORMAT_VERSION}); upgrade geneinfer"
        )
    for key in ("kind", "params", "landmarks", "targets", "files", "estimator_meta"):
        if key not in doc:
            raise ModelFileError(f"{jpath}: required entry {key!r} is missing")
    _check_digest(jpath, doc, version)
    return doc


def _check_digest(jpath: Path, doc: dict[str, Any], version: int) -> None:
    """model.json's own digest: required from format 2 on, absent in format 1."""
    files = doc["files"]
    entry = files.get(MODEL_JSON) if isinstance(files, dict) else None
    recorded = entry.get(DIGEST_KEY) if isinstance(entry, dict) else None
    if version == 1:
        if entry is not None:
            raise ModelFileError(f"{jpath}: format 1 files carry no digest of model.json, this "
                                 "one does; the file was edited or damaged")
        logger.warning("%s: model format 1 has no digest of model.json, so edits to it cannot "
                       "be detected; re-save the model (InferenceModel.load(...).save(...)) "
                       "or retrain it to protect it", jpath)
        return
    if recorded is None:
        raise ModelFileError(f"{jpath}: no digest of model.json recorded (format {version} "
                             "requires one); the file was edited or damaged")
    try:
        actual = json_digest(doc)
    except ValueError:  # e.g. a NaN literal written into the file by hand
        actual = None
    if recorded != actual:
        raise ModelFileError(f"{jpath}: content does not match its recorded digest; the file "
                             "was edited or damaged (retrain, or restore the saved model)")


def _read_weights(root: Path, doc: dict[str, Any]) -> dict[str, np.ndarray]:
    files = {k: v for k, v in doc["files"].items() if k != MODEL_JSON} \
        if isinstance(doc["files"], dict) else doc["files"]
    if not isinstance(files, dict) or WEIGHTS_FILE not in files:
        raise ModelFileError(f"{root / MODEL_JSON}: no checksum recorded for {WEIGHTS_FILE}")
    for name, entry in files.items():
        fpath = root / name
        if Path(name).name != name:
            raise ModelFileError(f"{root / MODEL_JSON}: bad file name {name!r}")
        if not fpath.is_file():
            raise ModelFileError(f"{fpath}: missing; the model directory is incomplete")
        expected = entry.get("sha256") if isinstance(entry, dict) else None
        size = entry.get("bytes") if isinstance(entry, dict) else None
        if size is not None and fpath.stat().st_size != size:
            raise ModelFileError(
                f"{fpath}: {fpath.stat().st_size} bytes, expected {size}; the file is "
                "truncated or was modified"
            )
        if expected is None or _sha256(fpath) != expected:
            raise ModelFileError(
                f"{fpath}: SHA-256 checksum mismatch; the file was modified or damaged"
            )
    try:
        return load_file(str(root / WEIGHTS_FILE))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{root / WEIGHTS_FILE}: cannot read weights ({exc})") from None
