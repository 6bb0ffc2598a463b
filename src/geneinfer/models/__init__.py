"""Inference models with the scikit-learn estimator API (multi-output: landmarks -> targets)."""

from geneinfer.models.registry import MODEL_NAMES, get_model_class, make_model

__all__ = ["MODEL_NAMES", "get_model_class", "make_model"]
