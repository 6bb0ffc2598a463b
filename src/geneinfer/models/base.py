"""Common base for geneinfer estimators and their (pickle-free) fitted state.

Every model is a scikit-learn style multi-output regressor: ``fit(X, Y)`` with
``X`` of shape ``(n_samples, n_landmarks)`` and ``Y`` of shape ``(n_samples, n_targets)``,
``predict(X) -> (n_samples, n_targets)`` float32. Hyper-parameters are ``__init__`` keyword
arguments stored unchanged (the seed is ``random_state``); fitted state lives in attributes
ending in ``_``.

Every ``fit`` accepts ``groups=None``: one label per training row (the study, e.g. the GEO
series), so the training workflow can always pass it. Models that choose anything from data
take ``fit(X, Y, *, groups=None, X_val=None, Y_val=None)``: a given validation set wins;
else, with two or more groups, the choice is made by cross-validation over whole groups,
scored by the within-group z-scored MSE (:mod:`geneinfer.models.selection`), and the model
is refit on all rows; else the model's single-group rule applies (GCV, a random hold-out).
They record the rule in ``selection_`` (``{"method": ..., "n_groups": ..., "scores": ...}``).
Models that choose nothing ignore ``groups``.

Saving never pickles: :meth:`GeneModel.fitted_state` returns numpy arrays (written to
safetensors/npz) plus a JSON-able dict; :meth:`GeneModel.load_fitted_state` restores them.
The default implementation covers models whose fitted state is arrays and plain scalars;
torch-based models override both methods.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

JSONValue = Any


def arrays_under(arrays: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The entries of a saved state whose names start with ``prefix``, the prefix removed:
    one part of a state saved as flat ``<part>.<name>`` arrays (``estimator.``, ``net0.``)."""
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def _is_jsonable(value: object) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


class GeneModel(RegressorMixin, BaseEstimator):
    """Base class: multi-output regression from landmark to target genes."""

    #: short registry name, e.g. ``"ridge"``; set by subclasses
    name: str = ""
    #: a fit is cheap enough to repeat once per held-out study: training then scores the
    #: model's reliability by refitting it on the other studies (closed-form and lookup
    #: models). Iterative models (networks, SVR, sample LASSO, combinations of candidates) are
    #: validated on one held-out set of studies instead.
    cheap_refit: ClassVar[bool] = True

    def _more_tags(self) -> dict[str, object]:  # sklearn < 1.6
        return {"multioutput": True}

    def __sklearn_tags__(self):  # sklearn >= 1.6
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fitted_state(self) -> tuple[dict[str, np.ndarray], dict[str, JSONValue]]:
        """Arrays and JSON-able values of every fitted attribute (name ending in ``_``)."""
        arrays: dict[str, np.ndarray] = {}
        meta: dict[str, JSONValue] = {}
        for key, value in vars(self).items():
            if not key.endswith("_") or key.startswith("_"):
                continue
            if isinstance(value, np.ndarray):
                arrays[key] = value
            elif isinstance(value, np.generic):
                meta[key] = value.item()
            elif _is_jsonable(value):
                meta[key] = value
            else:
                raise TypeError(
                    f"{type(self).__name__}.{key} ({type(value).__name__}) cannot be saved "
                    "without pickling; override fitted_state()"
                )
        return arrays, meta

    def load_fitted_state(self, arrays: dict[str, np.ndarray], meta: dict[str, JSONValue]) -> None:
        """Restore what :meth:`fitted_state` returned."""
        for key, value in arrays.items():
            setattr(self, key, value)
        for key, value in meta.items():
            setattr(self, key, value)
