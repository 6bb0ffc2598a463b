"""Prediction of target genes at L1000 scale: streaming, resumable and sharded.

* :func:`predict_file` - ``geneinfer predict``: stream any input through a model into a
  GCTX/h5ad (or small GCT/TSV/CSV) output; resumes after a kill; ``workers`` or ``torchrun``
  shard it across processes.
* :func:`predict_data` - the same, in memory.
* :class:`Predictor` / :func:`as_predictor`, :class:`PlanOptions`, :func:`make_plan` - the
  pieces, for callers that drive blocks themselves.
"""

from geneinfer.predict.plan import (
    Plan,
    PlanOptions,
    Predictor,
    PredictResult,
    as_predictor,
    make_plan,
)
from geneinfer.predict.streaming import predict_data, predict_file

__all__ = [
    "Plan",
    "PlanOptions",
    "PredictResult",
    "Predictor",
    "as_predictor",
    "make_plan",
    "predict_data",
    "predict_file",
]
