"""Prediction of target genes at L1000 scale: streaming, resumable and sharded.

* :func:`predict_file` — stream any input (GCTX, h5ad, GCT, TSV/CSV) through a model into a
  GCTX/h5ad (or small GCT/TSV/CSV) output; resumes after a kill; ``workers`` or ``torchrun``
  shard it across processes.
* :class:`Predictor` / :func:`as_predictor` — the model side: a ``predict_fn`` on log2
  landmark profiles plus gene ids, built from a model directory or an InferenceModel.
* :func:`predict_data` with :func:`make_plan` — the same in memory.
"""

from geneinfer.predict.streaming import (
    Plan,
    Predictor,
    PredictResult,
    as_predictor,
    make_plan,
    map_landmarks,
    predict_data,
    predict_file,
)

__all__ = [
    "Plan",
    "PredictResult",
    "Predictor",
    "as_predictor",
    "make_plan",
    "map_landmarks",
    "predict_data",
    "predict_file",
]
