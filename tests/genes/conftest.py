"""Fixtures for gene tests: the real HG-U133A sets read with plain pandas (independent of
geneinfer.io) so probe collapsing and panels are checked against the raw files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geneinfer.expression import ExpressionData


def read_gct_with_pandas(path: Path) -> ExpressionData:
    """GCT 1.3 probes x samples -> ExpressionData with pr_gene_symbol / pr_gene_id metadata."""
    with gzip.open(path, "rt") as fh:
        fh.readline()
        _, _, n_rmeta, n_cmeta = (int(x) for x in fh.readline().split("\t"))
    head = pd.read_csv(path, sep="\t", skiprows=2, nrows=n_cmeta, dtype=str, index_col=0)
    body = pd.read_csv(path, sep="\t", skiprows=3 + n_cmeta, header=None, index_col=0,
                       dtype={i: str for i in range(n_rmeta + 1)}, keep_default_na=False,
                       na_values={i: ["NA", "NaN", ""] for i in range(n_rmeta + 1, 10**4)},
                       )
    body.columns = head.columns
    values = body.iloc[:, n_rmeta:].to_numpy(dtype=np.float64).T
    return ExpressionData(values=values.astype(np.float32), gene_ids=body.index,
                          sample_ids=head.columns[n_rmeta:], genes=body.iloc[:, :n_rmeta],
                          samples=head.iloc[:, n_rmeta:].T, gene_id_kind="probe",
                          source=str(path))


@pytest.fixture(scope="session")
def bladder_probes(shared: Path) -> ExpressionData:
    return read_gct_with_pandas(shared / "gpl96" / "bladderbatch.gct.gz")
