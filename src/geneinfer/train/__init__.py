"""Training: the torch training loop (:mod:`.loop`), multi-process training
(:mod:`.distributed`) and the data-to-model pipeline (:mod:`.pipeline`).

``Trainer``, ``TrainConfig``, ``TrainResult`` and ``BatchSource`` are importable from here;
they are loaded on first use so that importing :mod:`geneinfer.train` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Trainer": "geneinfer.train.loop",
    "TrainConfig": "geneinfer.train.loop",
    "TrainResult": "geneinfer.train.loop",
    "BatchSource": "geneinfer.train.loop",
}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'geneinfer.train' has no attribute {name!r}")
