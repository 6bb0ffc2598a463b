"""GCTX (CMap HDF5 layout): layout parity with CMap's file, subsets, block writer, bad files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from geneinfer.errors import GeneinferError, InputFormatError, MissingGenesError
from geneinfer.expression import ExpressionData
from geneinfer.io import (
    GCTXWriter,
    iter_sample_blocks,
    peek,
    read,
    read_gct,
    read_gctx,
    write,
    write_gctx,
)


def _layout(path: Path) -> dict[str, tuple]:
    """name -> (dtype kind, shape) for every dataset, plus the root attribute names."""
    out: dict[str, tuple] = {}
    with h5py.File(path, "r") as f:
        out["/attrs"] = tuple(sorted(f.attrs))
        out["/version"] = (f.attrs["version"],)

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = (obj.dtype.kind, obj.shape)
            else:
                out[name + "/"] = ("group",)

        f.visititems(visit)
    return out


def test_our_gctx_matches_cmap_layout(l1000_gctx: Path, tmp_path: Path):
    data = read_gctx(l1000_gctx)
    ours = tmp_path / "ours.gctx"
    write_gctx(data, ours)
    cmap, mine = _layout(l1000_gctx), _layout(ours)
    assert mine == cmap  # same datasets, dtype kinds, shapes/orientation and root attributes
    assert cmap["0/DATA/0/matrix"] == ("f", (377, 978))  # samples x genes on disk
    with h5py.File(ours, "r") as f:
        m = f["0/DATA/0/matrix"]
        assert m.dtype == np.float32 and m.chunks is not None and m.compression == "gzip"
        assert f["0/META/COL/id"].dtype.kind == "S"
        assert isinstance(f.attrs["version"], np.bytes_)
    back = read_gctx(ours)
    assert np.array_equal(back.values, data.values)
    pd.testing.assert_frame_equal(back.genes, data.genes)
    pd.testing.assert_frame_equal(back.samples, data.samples)


def test_gct_to_gctx_to_gct_round_trip(l1000_gct: Path, tmp_path: Path):
    data = read_gct(l1000_gct)
    write(data, tmp_path / "a.gctx")
    via = read(tmp_path / "a.gctx")
    assert list(via.genes.columns) == list(data.genes.columns)  # creation order kept
    write(via, tmp_path / "b.gct")
    back = read(tmp_path / "b.gct")
    assert np.array_equal(back.values, data.values)
    pd.testing.assert_frame_equal(back.genes, data.genes)
    pd.testing.assert_frame_equal(back.samples, data.samples)
    assert back.sample_ids.equals(data.sample_ids)


def test_subset_reads(l1000_gctx: Path):
    full = read_gctx(l1000_gctx)
    genes = [full.gene_ids[900], full.gene_ids[3], full.gene_ids[41]]
    samples = [full.sample_ids[10], full.sample_ids[2]]
    sub = read_gctx(l1000_gctx, gene_ids=genes, sample_ids=samples)
    assert np.array_equal(sub.values, full.values[[10, 2]][:, [900, 3, 41]])
    assert list(sub.genes["pr_gene_symbol"]) == list(full.genes.loc[genes, "pr_gene_symbol"])
    assert list(sub.samples["det_well"]) == list(full.samples.loc[samples, "det_well"])
    sl = read_gctx(l1000_gctx, sample_slice=slice(100, 150))
    assert np.array_equal(sl.values, full.values[100:150])
    with pytest.raises(MissingGenesError, match="NOT_A_GENE"):
        read_gctx(l1000_gctx, gene_ids=["NOT_A_GENE"])
    with pytest.raises(InputFormatError, match="unknown sample"):
        read_gctx(l1000_gctx, sample_ids=["nope"])


def test_sample_blocks_and_peek(l1000_gctx: Path):
    full = read_gctx(l1000_gctx)
    genes = list(full.gene_ids[:5])
    blocks = list(iter_sample_blocks(l1000_gctx, block_size=100, genes=genes))
    assert [b.n_samples for b in blocks] == [100, 100, 100, 77]
    joined = np.concatenate([b.values for b in blocks])
    assert np.array_equal(joined, full.values[:, :5])
    assert blocks[3].sample_ids[0] == full.sample_ids[300]
    assert peek(l1000_gctx) == (377, 978, list(full.gene_ids))


def test_block_writer(tmp_path: Path, rng):
    values = rng.normal(size=(1000, 50)).astype(np.float32)
    values[3, 7] = np.nan
    genes = [str(7000 + i) for i in range(50)]
    samples = [f"S{i}" for i in range(1000)]
    meta = pd.DataFrame({"dose": rng.integers(0, 5, 1000)}, index=samples)
    out = tmp_path / "w.gctx"
    with GCTXWriter(out, gene_ids=genes, n_samples=1000, chunk_samples=64) as w:
        for start in range(0, 1000, 300):  # blocks need not match the chunking
            assert not out.exists()
            w.write_block(start, values[start : start + 300])
        w.write_sample_meta(samples, meta)
        assert w.complete
    data = read_gctx(out)
    assert np.array_equal(data.values, values, equal_nan=True)
    assert data.gene_id_kind == "entrez"
    assert list(data.samples["dose"]) == list(meta["dose"])
    with h5py.File(out, "r") as f:
        assert f["0/DATA/0/matrix"].chunks == (64, 50)


def test_block_writer_leaves_nothing_when_incomplete_or_interrupted(tmp_path: Path):
    out = tmp_path / "w.gctx"
    w = GCTXWriter(out, gene_ids=["a", "b"], n_samples=4)
    w.write_block(0, np.ones((2, 2)))
    w.write_sample_meta(["s1", "s2", "s3", "s4"])
    with pytest.raises(GeneinferError, match="2 samples were never written"):
        w.close()
    with pytest.raises(KeyboardInterrupt), GCTXWriter(out, gene_ids=["a"], n_samples=2) as w2:
        w2.write_block(0, np.ones((1, 1)))
        raise KeyboardInterrupt
    with pytest.raises(GeneinferError, match="outside"):
        GCTXWriter(out, gene_ids=["a"], n_samples=2).write_block(1, np.ones((2, 1)))
    assert list(tmp_path.iterdir()) == []


def _cmap_like(path: Path, *, matrix_shape=(3, 2), n_rows=2, n_cols=3, dup=False) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("0/DATA/0/matrix", data=np.zeros(matrix_shape, np.float32))
        rows = [b"g1", b"g1"] if dup else [f"g{i}".encode() for i in range(n_rows)]
        f.create_dataset("0/META/ROW/id", data=np.array(rows))
        f.create_dataset("0/META/COL/id", data=np.array([f"s{i}".encode() for i in range(n_cols)]))
    return path


def test_malformed_gctx(tmp_path: Path, l1000_gctx: Path):
    ok = read_gctx(_cmap_like(tmp_path / "ok.gctx"))
    assert ok.shape == (3, 2)
    cases = {
        "shape": (_cmap_like(tmp_path / "shape.gctx", matrix_shape=(2, 3)), "/0/DATA/0/matrix"),
        "dup": (_cmap_like(tmp_path / "dup.gctx", dup=True), "/0/META/ROW/id"),
    }
    no_ids = tmp_path / "noids.gctx"
    with h5py.File(no_ids, "w") as f:
        f.create_dataset("0/DATA/0/matrix", data=np.zeros((1, 1)))
    cases["missing"] = (no_ids, "/0/META/ROW/id")
    raw = l1000_gctx.read_bytes()
    cut = tmp_path / "cut.gctx"
    cut.write_bytes(raw[: len(raw) // 3])
    cases["truncated"] = (cut, None)
    text = tmp_path / "text.gctx"
    text.write_text("#1.3\nnot hdf5\n")
    cases["not_hdf5"] = (text, None)
    empty = tmp_path / "empty.gctx"
    empty.write_bytes(b"")
    cases["empty"] = (empty, None)
    for name, (path, where) in cases.items():
        with pytest.raises(InputFormatError) as err:
            read_gctx(path)
        assert err.value.path == str(path), name
        if where:
            assert err.value.where == where, name


def test_nan_and_float32_exact(tmp_path: Path):
    vals = np.array([[np.nan, 1.0000001, -3.4e38], [1e-30, 0.1, 5.0]], dtype=np.float32)
    data = ExpressionData(values=vals, gene_ids=["A", "B", "C"], sample_ids=["x", "y"])
    write(data, tmp_path / "n.gctx")
    back = read(tmp_path / "n.gctx")
    assert np.array_equal(back.values, vals, equal_nan=True)
    assert back.n_missing() == 1
