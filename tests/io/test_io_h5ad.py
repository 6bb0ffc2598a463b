"""AnnData .h5ad: conversion from the CMap GCTX, backed-mode blocks, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geneinfer.errors import InputFormatError
from geneinfer.io import iter_sample_blocks, peek, read, read_gctx, write

anndata = pytest.importorskip("anndata")


def test_gctx_to_h5ad_opens_in_anndata(l1000_gctx: Path, tmp_path: Path):
    data = read_gctx(l1000_gctx)
    out = tmp_path / "l1000.h5ad"
    write(data, out)
    adata = anndata.read_h5ad(out)
    assert adata.shape == (377, 978)
    assert adata.X.dtype == np.float32
    assert np.array_equal(adata.X, data.values)
    assert list(adata.obs_names) == list(data.sample_ids)
    assert list(adata.var["pr_gene_symbol"]) == list(data.genes["pr_gene_symbol"])
    assert adata.uns["geneinfer"]["gene_id_kind"] == "probe"
    back = read(out)
    assert back.scale == data.scale and back.gene_id_kind == "probe"
    assert np.array_equal(back.values, data.values)
    pd.testing.assert_frame_equal(back.samples, data.samples, check_dtype=False)
    assert back.samples["det_well"].dtype == object  # categoricals turned back into text


def test_h5ad_blocks_peek_and_scale(shared: Path, tmp_path: Path):
    data = read(shared / "gpl96" / "borovecki.gct.gz")
    out = tmp_path / "b.h5ad"
    write(data, out)
    assert peek(out) == (31, 22283, list(data.gene_ids))
    blocks = list(iter_sample_blocks(out, block_size=10, genes=["1053_at", "1007_s_at"]))
    assert [b.n_samples for b in blocks] == [10, 10, 10, 1]
    joined = np.concatenate([b.values for b in blocks])
    assert np.array_equal(joined, data.select_genes(["1053_at", "1007_s_at"]).values)
    assert read(out).scale == "linear"


def test_bad_h5ad(tmp_path: Path, l1000_gctx: Path):
    (tmp_path / "e.h5ad").write_bytes(b"")
    (tmp_path / "t.h5ad").write_text("not an hdf5 file")
    (tmp_path / "g.h5ad").write_bytes(l1000_gctx.read_bytes())  # HDF5 but not AnnData
    for name in ("e.h5ad", "t.h5ad", "g.h5ad"):
        with pytest.raises(InputFormatError) as err:
            read(tmp_path / name)
        assert err.value.path == str(tmp_path / name)


def test_missing_anndata_gives_install_hint(tmp_path: Path, monkeypatch):
    import sys

    from geneinfer.errors import GeneinferError
    from geneinfer.expression import ExpressionData

    monkeypatch.setitem(sys.modules, "anndata", None)  # makes "import anndata" fail
    data = ExpressionData(values=np.ones((1, 1)), gene_ids=["g"], sample_ids=["s"])
    with pytest.raises(GeneinferError, match=r"pip install 'geneinfer\[anndata\]'"):
        write(data, tmp_path / "x.h5ad")
    assert list(tmp_path.iterdir()) == []
