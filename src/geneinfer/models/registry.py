"""Model names used by the CLI and study configs, mapped to their classes (imported lazily)."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from geneinfer.errors import ConfigError

# name -> "module:Class"
_MODELS: dict[str, str] = {
    "ols": "geneinfer.models.linear:LinearRegression",
    "ridge": "geneinfer.models.linear:Ridge",
    "lasso": "geneinfer.models.linear:Lasso",
    "knn-ge": "geneinfer.models.knn:KNNGE",
    "knn": "geneinfer.models.knn:SampleKNN",
    "pcr": "geneinfer.models.pcr:PCARegression",
    "svr": "geneinfer.models.svr:SVRRegression",
    "dgex": "geneinfer.models.neural:DGEX",
    "autoencoder": "geneinfer.models.neural:BottleneckMLP",
    "cnn": "geneinfer.models.neural:LandmarkCNN",
    "ridge-mlp": "geneinfer.models.neural:RidgeResidualMLP",
    "per-gene-best": "geneinfer.models.ensemble:PerGeneSelector",
    "sample-lasso": "geneinfer.models.sample:SampleLasso",
    "stack": "geneinfer.models.stack:StackedModel",
}
MODEL_NAMES: tuple[str, ...] = tuple(_MODELS)


def get_model_class(name: str) -> type:
    """The estimator class registered under ``name``."""
    try:
        target = _MODELS[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}"
        ) from None
    module_name, cls_name = target.split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def param_names(name: str) -> set[str]:
    """The hyper-parameters the model ``name`` takes."""
    return set(inspect.signature(get_model_class(name).__init__).parameters) - {"self"}


def make_model(name: str, **params: Any):
    """Instantiate the model ``name`` with hyper-parameters ``params``."""
    cls = get_model_class(name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise ConfigError(f"bad parameters for model {name!r}: {exc}") from None
