"""Real GPL96 (HG-U133A) landmark/target subsets for the neural and ensemble tests."""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

import numpy as np
import pandas as pd

DATASETS = ("bladderbatch", "nakayama", "borovecki")


def _read_gct(path: Path) -> pd.DataFrame:
    """samples x probes, log2 (MAS5 files are linear: log2(max(x, 1)))."""
    with gzip.open(path, "rt") as fh:
        head = [fh.readline() for _ in range(3)]
        n_col_meta = int(head[1].split()[3])
        meta_rows = [fh.readline() for _ in range(n_col_meta)]
    frame = pd.read_csv(path, sep="\t", skiprows=[0, 1, *range(3, 3 + n_col_meta)], index_col=0)
    values = frame.iloc[:, 2:].astype(np.float32)
    if any(row.startswith("values") and "MAS5" in row for row in meta_rows):
        values = np.log2(np.maximum(values, 1.0))
    return values.T


def _probes(path: Path, k: int) -> list[str]:
    """First ``k`` genes of a D-GEX gene list, as their (first) HG-U133A probe."""
    return [line.split("\t")[2].split(",")[0] for line in path.read_text().splitlines()[:k]]


@functools.lru_cache(maxsize=1)
def load_gpl96(shared: Path, n_landmarks: int = 300, n_targets: int = 1000):
    """Per dataset: D-GEX landmark probes (X) and D-GEX target probes (Y), log2."""
    lm = _probes(shared / "genes" / "dgex_map_lm.txt", n_landmarks)
    tg = _probes(shared / "genes" / "dgex_map_tg.txt", n_targets)
    out = {}
    for name in DATASETS:
        frame = _read_gct(shared / "gpl96" / f"{name}.gct.gz")
        out[name] = (frame[lm].to_numpy(np.float32), frame[tg].to_numpy(np.float32))
    return out


def fold(data, held_out: str):
    """Leave-one-dataset-out: (X_train, Y_train, X_test, Y_test)."""
    X = np.vstack([data[n][0] for n in DATASETS if n != held_out])
    Y = np.vstack([data[n][1] for n in DATASETS if n != held_out])
    return X, Y, *data[held_out]


def gene_mae(pred: np.ndarray, Y_test: np.ndarray, Y_train: np.ndarray) -> np.ndarray:
    """Per-gene MAE in units of the training standard deviation (z-scores)."""
    return np.mean(np.abs(pred - Y_test), axis=0) / Y_train.std(axis=0)
