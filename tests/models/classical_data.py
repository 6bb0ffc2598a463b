"""Real expression subsets for the classical-model tests (bladderbatch, HG-U133A, RMA log2)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd


@functools.lru_cache(maxsize=2)
def _bladderbatch(path: str) -> pd.DataFrame:
    """samples x probes, log2 (RMA), straight from the GCT 1.3 file."""
    frame = pd.read_csv(path, sep="\t", skiprows=2, index_col=0, low_memory=False)
    frame = frame.iloc[4:, 2:]  # 4 column-metadata rows; 2 row-metadata columns
    return frame.astype(np.float64).T


def landmark_target_split(
    shared: Path, *, n_landmarks: int = 200, n_targets: int = 1000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(X, Y)``: random probes among the 8,000 most variable as landmarks and targets."""
    data = _bladderbatch(str(shared / "gpl96" / "bladderbatch.gct.gz"))
    top = data.var().sort_values(ascending=False).index[:8000]
    rng = np.random.default_rng(seed)
    picked = rng.permutation(top)[: n_landmarks + n_targets]
    X = data[picked[:n_landmarks]].to_numpy()
    Y = data[picked[n_landmarks:]].to_numpy()
    return X, Y
