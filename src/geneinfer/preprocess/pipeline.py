"""The D-GEX profile preprocessing fitted on training samples and saved with a model.

Steps, for log2 inputs: (1) quantile normalization, (2) per-gene standardization. The
landmark block and the target block get *separate* quantile references: at inference only
landmarks exist (an L1000 profile has 978 values), so the landmark reference must stand alone.
Every statistic comes from the samples passed to :meth:`ProfilePreprocessor.fit`; transforming
other samples never changes the fitted state.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from geneinfer.errors import GeneinferError, ModelFileError
from geneinfer.expression import ExpressionData
from geneinfer.preprocess.quantile import QuantileNormalizer
from geneinfer.preprocess.standardize import Standardizer

STATE_VERSION = 1


def _values(X: np.ndarray | ExpressionData) -> np.ndarray:
    if isinstance(X, ExpressionData):
        if X.scale not in ("log2", "unknown"):
            raise GeneinferError(
                f"{X.source or 'input'}: preprocessing expects log2 values, got scale "
                f"{X.scale!r}; convert with geneinfer.preprocess.to_log2 first"
            )
        return X.values
    return np.asarray(X)


class ProfilePreprocessor:
    """Quantile-normalise and standardise landmark and target blocks (log2 in).

    Parameters
    ----------
    quantile
        Quantile-normalise each block onto its training reference.
    standardize
        Standardise each gene with its training mean / std.
    """

    def __init__(self, *, quantile: bool = True, standardize: bool = True) -> None:
        self.quantile = quantile
        self.standardize = standardize
        self._qn: dict[str, QuantileNormalizer] = {}
        self._std: dict[str, Standardizer] = {}
        self.n_landmarks_: int | None = None
        self.n_targets_: int | None = None

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        landmarks_log2: np.ndarray | ExpressionData,
        targets_log2: np.ndarray | ExpressionData | None = None,
    ) -> ProfilePreprocessor:
        """Learn references and per-gene statistics from training samples only.

        ``targets_log2`` may be None for a landmark-only preprocessor.
        """
        X = _values(landmarks_log2)
        self._fit_block("landmarks", X)
        self.n_landmarks_ = X.shape[1]
        if targets_log2 is not None:
            Y = _values(targets_log2)
            if Y.shape[0] != X.shape[0]:
                raise GeneinferError(
                    f"preprocessing fit: {X.shape[0]} landmark rows but {Y.shape[0]} target rows"
                )
            self._fit_block("targets", Y)
            self.n_targets_ = Y.shape[1]
        return self

    def _fit_block(self, block: str, X: np.ndarray) -> None:
        if X.ndim != 2 or X.shape[0] == 0:
            raise GeneinferError(f"preprocessing fit: {block} must be a non-empty 2-D matrix")
        if self.quantile:
            qn = QuantileNormalizer().fit(X)
            self._qn[block] = qn
            X = qn.transform(X)
        if self.standardize:
            self._std[block] = Standardizer().fit(X)

    # ------------------------------------------------------------------ transforms
    def _forward(self, block: str, X: np.ndarray | ExpressionData) -> np.ndarray:
        expected = self.n_landmarks_ if block == "landmarks" else self.n_targets_
        if expected is None:
            raise GeneinferError(f"preprocessor has no fitted {block}; call fit() first")
        X = _values(X)
        if X.ndim != 2 or X.shape[1] != expected:
            raise GeneinferError(
                f"{block}: input has shape {X.shape}, the preprocessor was fitted on "
                f"{expected} genes"
            )
        out = np.asarray(X, dtype=np.float32)
        if self.quantile:
            out = self._qn[block].transform(out)
        if self.standardize:
            out = self._std[block].transform(out)
        return out

    def transform_landmarks(self, X: np.ndarray | ExpressionData) -> np.ndarray:
        """Model input from log2 landmark values (samples x landmarks)."""
        return self._forward("landmarks", X)

    def transform_targets(self, Y: np.ndarray | ExpressionData) -> np.ndarray:
        """Model-scale targets from log2 target values (for training and evaluation)."""
        return self._forward("targets", Y)

    def standardize_targets(self, Y: np.ndarray) -> np.ndarray:
        """Model-scale values of log2 targets already on the training quantile reference,
        such as predictions: standardization only (the inverse of
        :meth:`inverse_transform_targets`)."""
        if self.n_targets_ is None:
            raise GeneinferError("preprocessor has no fitted targets; call fit() with targets")
        Y = np.asarray(Y, dtype=np.float32)
        return self._std["targets"].transform(Y) if self.standardize else Y

    def inverse_transform_targets(self, Z: np.ndarray) -> np.ndarray:
        """Model outputs back to log2 (on the training quantile reference's scale).

        Quantile normalization is not inverted: predictions are log2 values distributed like
        the training profiles.
        """
        if self.n_targets_ is None:
            raise GeneinferError("preprocessor has no fitted targets; call fit() with targets")
        Z = np.asarray(Z, dtype=np.float32)
        if Z.ndim != 2 or Z.shape[1] != self.n_targets_:
            raise GeneinferError(
                f"targets: predictions have shape {Z.shape}, expected (n, {self.n_targets_})"
            )
        return self._std["targets"].inverse_transform(Z) if self.standardize else Z

    # ------------------------------------------------------------------ state
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Fitted state as arrays (``<block>.reference``, ``<block>.mean``,
        ``<block>.scale``) plus JSON metadata."""
        if self.n_landmarks_ is None:
            raise GeneinferError("preprocessor is not fitted; call fit() first")
        arrays: dict[str, np.ndarray] = {}
        for block, qn in self._qn.items():
            arrays[f"{block}.reference"] = qn.state()["reference"]
        for block, std in self._std.items():
            for key, arr in std.state().items():
                arrays[f"{block}.{key}"] = arr
        meta = {
            "version": STATE_VERSION,
            "quantile": self.quantile,
            "standardize": self.standardize,
            "n_landmarks": self.n_landmarks_,
            "n_targets": self.n_targets_,
        }
        return arrays, meta

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> ProfilePreprocessor:
        """Rebuild a fitted preprocessor from :meth:`state` output (raises ModelFileError)."""
        if meta.get("version") != STATE_VERSION:
            raise ModelFileError(
                f"preprocessing state version {meta.get('version')!r} is not supported "
                f"(expected {STATE_VERSION})"
            )
        obj = cls(quantile=bool(meta["quantile"]), standardize=bool(meta["standardize"]))
        sizes = {"landmarks": meta.get("n_landmarks"), "targets": meta.get("n_targets")}
        for block, size in sizes.items():
            if size is None:
                continue
            try:
                if obj.quantile:
                    obj._qn[block] = QuantileNormalizer.from_state(
                        {"reference": arrays[f"{block}.reference"]}
                    )
                if obj.standardize:
                    obj._std[block] = Standardizer.from_state(
                        {"mean": arrays[f"{block}.mean"], "scale": arrays[f"{block}.scale"]}
                    )
            except KeyError as exc:
                raise ModelFileError(f"preprocessing state lacks array {exc.args[0]}") from None
            fitted = (obj._qn.get(block), obj._std.get(block))
            got = {m.n_features_in_ for m in fitted if m is not None}
            if got and got != {int(size)}:
                raise ModelFileError(
                    f"preprocessing state for {block} has arrays of length {sorted(got)}, "
                    f"metadata says {size}"
                )
        obj.n_landmarks_ = meta.get("n_landmarks")
        obj.n_targets_ = meta.get("n_targets")
        if obj.n_landmarks_ is None:
            raise ModelFileError("preprocessing state lacks n_landmarks")
        return obj

    def __repr__(self) -> str:
        return f"ProfilePreprocessor(quantile={self.quantile}, standardize={self.standardize})"
