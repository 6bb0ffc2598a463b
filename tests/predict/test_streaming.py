"""Streaming prediction on real L1000 files: values, metadata, formats, gene matching."""

from __future__ import annotations

import os

import anndata
import h5py
import numpy as np
import pytest

import geneinfer.io as gio
from geneinfer.predict import Predictor, as_predictor, predict_file
from geneinfer.predict.resume import done_paths, partial_path

from .helpers import L1000_GCT, L1000_GCTX, read_l1000, read_l1000_gct


def test_gctx_output_equals_model_and_keeps_metadata(shared, model, tmp_path):
    out = tmp_path / "pred.gctx"
    res = predict_file(model, shared / L1000_GCTX, out, block_size=100, batch_size=64,
                       with_reliability=True, progress=False)
    d = read_l1000(shared)
    expected = model.predict_log2(d["X"])
    assert (res.n_samples, res.n_genes) == (377, 300)
    with h5py.File(out, "r") as f:
        Y = f["0/DATA/0/matrix"][:]
        assert int(f.attrs["geneinfer_complete"]) == 1
        assert [s.decode() for s in f["0/META/ROW/id"][:]] == model.target_ids
        assert [s.decode() for s in f["0/META/ROW/pr_gene_symbol"][:]] == model.target_symbols
        np.testing.assert_allclose(f["0/META/ROW/valid_r"][:],
                                   model.gene_metrics["valid_r"].to_numpy())
        assert [s.decode() for s in f["0/META/COL/id"][:]] == d["sample_ids"]
        # all 37 other sample columns copied unchanged (dtype and values), + the scale
        assert set(f["0/META/COL"]) == {*d["col"], "values"}
        for k, v in d["col"].items():
            np.testing.assert_array_equal(f["0/META/COL"][k][:], v)
    np.testing.assert_allclose(Y, expected, rtol=1e-5, atol=1e-4)
    assert not partial_path(out).exists() and not done_paths(out)
    # the project's own GCTX reader sees the same data
    back = gio.read(out)
    assert back.shape == (377, 300) and back.scale == "log2"
    np.testing.assert_array_equal(back.values, Y)


def test_gct_text_input_and_h5ad_output(shared, model, tmp_path):
    """The text GCT: probe ids matched to the model's Entrez ids through ``pr_gene_id``."""
    out = tmp_path / "pred.h5ad"
    predict_file(model, shared / L1000_GCT, out, block_size=50, progress=False)
    ad = anndata.read_h5ad(out)
    d = read_l1000(shared)
    # scanpy looks genes up by symbol: var_names are the symbols, the ids stay in var
    assert [str(i) for i in ad.var["pr_gene_id"]] == model.target_ids
    assert list(ad.var_names) == list(model.target_symbols)
    assert ad.var_names.is_unique and set(ad.var["pr_is_lm"]) == {0}
    assert list(ad.obs_names) == d["sample_ids"]
    assert (ad.obs["pert_iname"] == "DMSO").sum() > 0
    np.testing.assert_allclose(ad.X, model.predict_log2(read_l1000_gct(shared)),
                               rtol=1e-5, atol=1e-4)


def test_min_r_keeps_reliable_genes_and_says_how_many(shared, model, tmp_path, capsys):
    out = tmp_path / "best.gctx"
    res = predict_file(model, shared / L1000_GCTX, out, min_r=0.7, progress=True)
    r = model.gene_metrics["valid_r"].to_numpy()
    keep = np.flatnonzero(r >= 0.7)
    assert res.n_genes == len(keep) and 0 < len(keep) < 300
    assert f"{len(keep)} of 300 target genes pass valid_r >= 0.7" in capsys.readouterr().err
    full = model.predict_log2(read_l1000(shared)["X"])
    with h5py.File(out, "r") as f:
        np.testing.assert_allclose(f["0/DATA/0/matrix"][:], full[:, keep], rtol=1e-5, atol=1e-4)
        assert [s.decode() for s in f["0/META/ROW/id"][:]] == [model.target_ids[i] for i in keep]


@pytest.mark.parametrize("suffix", [".gct", ".tsv"])
def test_small_text_outputs_via_io_write(shared, model, tmp_path, suffix):
    out = tmp_path / f"pred{suffix}"
    predict_file(model, shared / L1000_GCTX, out, progress=False)
    back = gio.read(out)
    assert back.shape == (377, 300)
    assert list(back.gene_ids) == model.target_ids
    np.testing.assert_allclose(back.values, model.predict_log2(read_l1000(shared)["X"]),
                               atol=1e-3)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_generic_predict_fn_and_checksum(shared, tmp_path):
    """The core works with any callable; the checksum changes when the weights change."""
    d = read_l1000(shared)
    rng = np.random.default_rng(3)
    W = rng.standard_normal((978, 40)).astype(np.float32) * 0.01
    p1 = Predictor(lambda X: X @ W, d["entrez"], [f"t{i}" for i in range(40)])
    p2 = Predictor(lambda X: X @ (W * 1.01), d["entrez"], [f"t{i}" for i in range(40)])
    assert p1.checksum != p2.checksum and as_predictor(p1) is p1
    out = tmp_path / "o.gctx"
    predict_file(p1, shared / L1000_GCTX, out, block_size=128, progress=False)
    with h5py.File(out, "r") as f:
        np.testing.assert_allclose(f["0/DATA/0/matrix"][:], d["X"] @ W, rtol=1e-5, atol=1e-5)


def test_model_directory_is_loaded(shared, model_dir, model, tmp_path):
    out = tmp_path / "o.gctx"
    predict_file(model_dir, shared / L1000_GCTX, out, progress=False)
    with h5py.File(out, "r") as f:
        np.testing.assert_allclose(f["0/DATA/0/matrix"][:],
                                   model.predict_log2(read_l1000(shared)["X"]),
                                   rtol=1e-5, atol=1e-4)


def test_shards_are_contiguous_and_cover_all_blocks():
    from geneinfer.predict.sharded import shard

    for n, world in [(12, 2), (7, 3), (2, 4)]:
        parts = [shard(range(n), world, r) for r in range(world)]
        assert [b for p in parts for b in p] == list(range(n))
        assert all(p == list(range(p[0], p[-1] + 1)) for p in parts if p)


def test_output_format_from_extension_or_option(tmp_path):
    from geneinfer.errors import GeneinferError
    from geneinfer.io import output_format

    assert output_format(tmp_path / "a.gctx") == "gctx"
    assert output_format(tmp_path / "a.GCT") == "gct"
    assert output_format(tmp_path / "a.bin", format="h5ad") == "h5ad"
    with pytest.raises(GeneinferError, match="cannot tell the output format"):
        output_format(tmp_path / "a.bin")
    with pytest.raises(GeneinferError, match="unknown output format"):
        output_format(tmp_path / "a.gctx", format="xlsx")


def test_tsv_input_samples_in_rows(shared, model, tmp_path):
    """A samples x genes TSV keyed by Entrez ids (orientation detected by geneinfer.io)."""
    import pandas as pd

    d = read_l1000(shared)
    X = read_l1000_gct(shared)[:30]
    table = pd.DataFrame(X, index=pd.Index(d["sample_ids"][:30], name="sample"),
                         columns=d["entrez"])
    inp = tmp_path / "profiles.tsv"
    table.to_csv(inp, sep="\t")
    out = tmp_path / "o.gctx"
    predict_file(model, inp, out, progress=False)
    with h5py.File(out, "r") as f:
        assert [s.decode() for s in f["0/META/COL/id"][:]] == d["sample_ids"][:30]
        np.testing.assert_allclose(f["0/DATA/0/matrix"][:], model.predict_log2(X),
                                   rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("sparse", [False, True])
def test_h5ad_input_read_in_backed_mode(shared, model, tmp_path, sparse):
    import pandas as pd
    import scipy.sparse as sp

    d = read_l1000(shared)
    X = read_l1000_gct(shared)[:64]
    ad = anndata.AnnData(
        X=sp.csr_matrix(X) if sparse else X,
        obs=pd.DataFrame({"cell_id": ["A375"] * 64}, index=d["sample_ids"][:64]),
        var=pd.DataFrame(index=d["entrez"]),
    )
    inp = tmp_path / "in.h5ad"
    ad.write_h5ad(inp)
    out = tmp_path / "o.gctx"
    predict_file(model, inp, out, block_size=20, progress=False)
    with h5py.File(out, "r") as f:
        assert (f["0/META/COL/cell_id"][:] == b"A375").all()
        np.testing.assert_allclose(f["0/DATA/0/matrix"][:], model.predict_log2(X),
                                   rtol=1e-5, atol=1e-4)


def test_output_matrix_is_reserved_on_disk_before_rows_are_written(tmp_path):
    import pandas as pd

    from geneinfer.io.preallocated import create_matrix_file, reserve_space
    from geneinfer.predict.resume import partial_attrs, read_partial_header

    part = tmp_path / "out.gctx.partial"
    genes = pd.DataFrame({"pr_gene_symbol": [f"G{i}" for i in range(500)]},
                         index=[str(i) for i in range(500)])
    create_matrix_file(part, fmt="gctx", gene_table=genes,
                       sample_ids=np.array([f"S{i}" for i in range(2000)]),
                       sample_columns=[], attrs=partial_attrs("fp"))
    _, offset, shape = read_partial_header(part, "gctx")
    matrix_bytes = shape[0] * shape[1] * 4
    probe = tmp_path / "probe"
    probe.write_bytes(b"")
    if not reserve_space(probe, 0, 1 << 20):
        pytest.skip("this file system cannot reserve space (fallocate)")
    # the blocks are allocated (not a sparse hole), although no row was written yet
    assert part.stat().st_blocks * 512 >= matrix_bytes
    assert part.stat().st_size >= offset + matrix_bytes
    with h5py.File(part, "r") as f:  # still a valid, unfinished HDF5 file
        assert f["0/DATA/0/matrix"].shape == (2000, 500)
        assert int(f.attrs["geneinfer_complete"]) == 0



def _resident_fraction(path) -> float:
    """Share of the file's pages held in the page cache (``mincore`` on a mapping)."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    size = path.stat().st_size
    vec = (ctypes.c_ubyte * (-(-size // mmap.PAGESIZE)))()
    with open(path, "rb") as fh:
        base = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fh.fileno(), 0)
        try:
            assert libc.mincore(base, size, vec) == 0, ctypes.get_errno()
        finally:
            libc.munmap(base, size)
    return sum(v & 1 for v in vec) / len(vec)


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="Linux page-cache advice")
def test_written_rows_reach_the_disk_and_leave_the_page_cache(tmp_path):
    from geneinfer.io.preallocated import RowWriter

    path = tmp_path / "m.bin"
    rows, cols, offset = 4000, 2500, 4096  # 40 MB in ten 4 MB pieces after a header
    plain = tmp_path / "plain.bin"
    for p in (path, plain):
        with open(p, "wb") as fh:  # sparse: nothing of it in the page cache yet
            fh.truncate(offset + rows * cols * 4)
    rng = np.random.default_rng(0)
    data = rng.standard_normal((rows, cols)).astype(np.float32)
    with RowWriter(path, offset=offset, shape=(rows, cols)) as writer:
        for start in range(0, rows, 400):
            writer.write_rows(start, data[start:start + 400])
    with open(plain, "r+b") as fh:
        fh.seek(offset)
        fh.write(data.tobytes())
    # a plain write leaves all 40 MB as cached (dirty) pages; write-behind keeps ~none
    assert _resident_fraction(plain) > 0.9
    assert _resident_fraction(path) < 0.2
    written = np.fromfile(path, dtype="<f4", offset=offset).reshape(rows, cols)
    np.testing.assert_array_equal(written, data)
