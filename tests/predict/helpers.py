"""Helpers for prediction tests: real L1000 profiles, a real fitted model, GCTX writing."""

from __future__ import annotations

import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from geneinfer.models.bundle import InferenceModel
from geneinfer.models.linear import Ridge

L1000_GCTX = "l1000/test_l1000_highprecision.gctx"
L1000_GCT = "l1000/test_l1000.gct"
GENE_INFO = "genes/GSE92742_Broad_LINCS_gene_info.txt"


def read_l1000(shared: Path) -> dict:
    """Real L1000 landmark profiles with probe ids, Entrez ids, symbols, sample metadata."""
    with h5py.File(shared / L1000_GCTX, "r") as f:
        return {
            "X": f["0/DATA/0/matrix"][:],
            "probe": [s.decode() for s in f["0/META/ROW/id"][:]],
            "entrez": [str(v) for v in f["0/META/ROW/pr_gene_id"][:]],
            "symbol": [s.decode() for s in f["0/META/ROW/pr_gene_symbol"][:]],
            "sample_ids": [s.decode() for s in f["0/META/COL/id"][:]],
            "col": {k: f["0/META/COL"][k][:] for k in f["0/META/COL"]},
        }


def read_l1000_gct(shared: Path) -> np.ndarray:
    """The log2 (level 3) values of the text GCT as samples x genes, parsed with pandas.

    (The high-precision GCTX holds other, z-scored values of the same plates.)
    """
    table = pd.read_csv(shared / L1000_GCT, sep="\t", skiprows=2, header=0, low_memory=False)
    values = table.iloc[35:, 12:].astype(np.float32).to_numpy()  # 35 column-metadata rows
    return np.ascontiguousarray(values.T)


def fit_model(shared: Path, *, n_targets: int = 300, seed: int = 0) -> InferenceModel:
    """A Ridge model fitted on the real profiles -> targets = linear map + noise.

    Landmarks are the 978 Entrez ids of the file; targets real non-landmark LINCS genes.
    """
    d = read_l1000(shared)
    X = read_l1000_gct(shared)  # real log2 profiles
    info = pd.read_csv(shared / GENE_INFO, sep="\t", dtype=str)
    tg = info[info["pr_is_lm"] == "0"].iloc[:n_targets]
    rng = np.random.default_rng(seed)
    W = (rng.standard_normal((X.shape[1], n_targets)) * 0.03).astype(np.float32)
    Y = X @ W + 6.0 + 0.2 * rng.standard_normal((X.shape[0], n_targets)).astype(np.float32)
    est = Ridge().fit(X, Y)
    metrics = pd.DataFrame(
        {"valid_r": rng.uniform(0.0, 1.0, n_targets), "valid_mae": rng.uniform(0.1, 1, n_targets)},
        index=list(tg["pr_gene_id"]),
    )
    return InferenceModel.from_fitted(
        est, None, d["entrez"], list(tg["pr_gene_id"]), landmark_symbols=d["symbol"],
        target_symbols=list(tg["pr_gene_symbol"]), gene_metrics=metrics,
        landmark_means=np.nanmean(X, axis=0), info={"model": "ridge"},
    )


def write_gctx(path: Path, X: np.ndarray, gene_ids: list[str], sample_ids: list[str], *,
               gene_meta: dict | None = None, col_meta: dict | None = None) -> Path:
    """A CMap-layout GCTX written with plain h5py (chunked, like cmapPy writes)."""
    with h5py.File(path, "w") as f:
        f.attrs["version"] = "GCTX1.0"
        f.create_dataset("0/DATA/0/matrix", data=X.astype(np.float32),
                         chunks=(min(len(X), 256), X.shape[1]))
        f.create_dataset("0/META/ROW/id", data=np.array(gene_ids, dtype="S"))
        for k, v in (gene_meta or {}).items():
            f.create_dataset(f"0/META/ROW/{k}", data=v)
        f.create_dataset("0/META/COL/id", data=np.array(sample_ids, dtype="S"))
        for k, v in (col_meta or {}).items():
            f.create_dataset(f"0/META/COL/{k}", data=v)
    return path


def generated_profiles(shared: Path, n: int, *, seed: int = 1) -> dict:
    """``n`` realistic profiles: real L1000 profiles resampled, plus noise."""
    d = read_l1000(shared)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(d["X"]), n)
    X = d["X"][rows] + 0.3 * rng.standard_normal((n, d["X"].shape[1])).astype(np.float32)
    ids = [f"{d['sample_ids'][r]}_{i}" for i, r in enumerate(rows)]
    return {**d, "X": X.astype(np.float32), "sample_ids": ids,
            "col": {"cell_id": d["col"]["cell_id"][rows], "pert_time": d["col"]["pert_time"][rows]}}


def write_generated(shared: Path, path: Path, n: int, *, seed: int = 1) -> dict:
    d = generated_profiles(shared, n, seed=seed)
    write_gctx(path, d["X"], d["probe"], d["sample_ids"],
               gene_meta={"pr_gene_id": np.array(d["entrez"], dtype=np.int64),
                          "pr_gene_symbol": np.array(d["symbol"], dtype="S")},
               col_meta=d["col"])
    return d


class SlowPredict:
    """Picklable predict_fn that sleeps per call, so a test can kill a run mid-way."""

    def __init__(self, model: InferenceModel, delay: float) -> None:
        self.model = model
        self.delay = delay

    def __call__(self, X: np.ndarray) -> np.ndarray:
        time.sleep(self.delay)
        return self.model.predict_log2(X)


def read_matrix(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f["0/DATA/0/matrix"][:]
