"""Shared test fixtures: the real data in ../shared/data (matrices read with pandas, independently
of geneinfer.io) and small realistic arrays."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GENEINFER_SHARED", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared() -> Path:
    """Folder of the real public data (``../shared/data``); skip if absent."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED}")
    return SHARED


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def read_gct_matrix(path: Path) -> tuple[np.ndarray, pd.DataFrame]:
    """(samples x genes float64 matrix, column metadata) of a GCT 1.3 file, via pandas."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        fh.readline()
        dims = fh.readline().split()
    n_row_meta, n_col_meta = int(dims[2]), int(dims[3])
    first = n_row_meta + 1  # the id column, then row metadata columns
    table = pd.read_csv(path, sep="\t", skiprows=2, low_memory=False)
    meta = table.iloc[:n_col_meta, first:].set_index(table.iloc[:n_col_meta, 0]).T
    values = table.iloc[n_col_meta:, first:].astype(np.float64).to_numpy().T
    return values, meta


def read_soft_gpl96(path: Path) -> np.ndarray:
    """VALUE columns of the GPL96 samples of a GEO SOFT family file (samples x probes)."""
    columns: list[list[float]] = []
    platform, in_table, current = None, False, []
    with gzip.open(path, "rt", errors="replace") as fh:
        for line in fh:
            if line.startswith("!Sample_platform_id"):
                platform = line.split("=", 1)[1].strip()
            elif line.startswith("!sample_table_begin"):
                in_table, current = True, []
                next(fh)  # column header ID_REF VALUE ...
            elif line.startswith("!sample_table_end"):
                in_table = False
                if platform == "GPL96":
                    columns.append(current)
            elif in_table:
                field = line.split("\t")[1].strip()
                current.append(float(field) if field not in ("", "null") else np.nan)
    return np.array(columns, dtype=np.float64)


@pytest.fixture(scope="session")
def bladder(shared: Path) -> np.ndarray:
    return read_gct_matrix(shared / "gpl96" / "bladderbatch.gct.gz")[0]


@pytest.fixture(scope="session")
def bladder_batches(shared: Path) -> np.ndarray:
    return read_gct_matrix(shared / "gpl96" / "bladderbatch.gct.gz")[1]["batch"].to_numpy()


@pytest.fixture(scope="session")
def nakayama(shared: Path) -> np.ndarray:
    return read_gct_matrix(shared / "gpl96" / "nakayama.gct.gz")[0]


@pytest.fixture(scope="session")
def borovecki(shared: Path) -> np.ndarray:
    return read_gct_matrix(shared / "gpl96" / "borovecki.gct.gz")[0]


@pytest.fixture(scope="session")
def gse781(shared: Path) -> np.ndarray:
    return read_soft_gpl96(shared / "geo" / "GSE781_family.soft.gz")


@pytest.fixture(scope="session")
def l1000_level3(shared: Path) -> np.ndarray:
    """377 real L1000 level-3 profiles (CMap software output) x 978 landmarks."""
    return read_gct_matrix(shared / "l1000" / "test_l1000.gct")[0]


@pytest.fixture(scope="session")
def geuvadis(shared: Path) -> pd.DataFrame:
    """Raw counts, samples x Ensembl genes."""
    return pd.read_csv(shared / "rnaseq" / "geuvadis85_counts.tsv.gz", sep="\t", index_col=0).T
