"""GCT 1.2 / 1.3 reading and writing on the real shared files and on malformed inputs."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geneinfer.errors import GeneinferError, InputFormatError
from geneinfer.expression import ExpressionData
from geneinfer.io import gct as gct_mod
from geneinfer.io import peek, read, read_gct, write_gct

SMALL = (
    "#1.3\n3\t2\t1\t2\n"
    "id\tpr_gene_symbol\tS1\tS2\n"
    "dataset\tna\tdemo\tdemo\n"
    "values\tna\tRMA log2\tRMA log2\n"
    "1007_s_at\tDDR1\t10.1152\t8.62804\n"
    "1053_at\tRFC2\tNA\t7.5\n"
    "117_at\tHSPA6\t6.25\t\n"
)


# ------------------------------------------------------------------ real data
@pytest.mark.parametrize(
    ("name", "n_samples", "scale"),
    [("bladderbatch", 57, "log2"), ("borovecki", 31, "linear"), ("nakayama", 105, "linear")],
)
def test_hgu133a_sets_load_with_shapes_and_scales(shared: Path, name, n_samples, scale):
    data = read(shared / "gpl96" / f"{name}.gct.gz")
    assert data.shape == (n_samples, 22283)
    assert data.scale == scale
    assert data.gene_id_kind == "probe"
    assert data.gene_ids[0] == "1007_s_at"
    assert list(data.genes.columns[:2]) == ["pr_gene_symbol", "pr_gene_id"]
    assert data.genes.loc["1007_s_at", "symbol"] == "DDR1"
    assert data.genes.loc["1007_s_at", "entrez"] == "780"
    assert set(data.samples["dataset"]) == {name}
    assert data.n_missing() == 0
    if name == "bladderbatch":  # first value of the file, and a numeric batch row
        assert data.values[0, 0] == np.float32(10.1152)
        assert data.samples["batch"].dtype.kind == "i"


def test_l1000_gct_metadata_and_values(l1000_gct: Path):
    data = read_gct(l1000_gct)
    assert data.shape == (377, 978)
    assert data.sample_ids[0] == "LJP005_A375_24H_X1_B19:A03"
    assert data.gene_ids[0] == "200814_at"
    assert data.values[0, 0] == np.float32(11.3819)
    # names verbatim, numbers typed only when the text prints back identically
    assert data.genes["pr_gene_id"].dtype == np.int64
    assert data.genes.loc["200814_at", "pr_gene_symbol"] == "PSME1"
    # qc_iqr mixes "8.38" and "8": as floats "8" would print back as "8.0", so it stays text
    assert data.samples["qc_iqr"].dtype == object
    assert data.samples["qc_iqr"].iloc[0] == "8.38"
    assert data.samples["mfc_plate_dim"].dtype == np.int64  # all "-666"
    assert data.samples["bead_set"].iloc[0] == "dp52,dp53"
    assert data.scale == "unknown"  # the file has no "values" row


def test_gct_round_trip_reproduces_metadata_text(l1000_gct: Path, tmp_path: Path):
    data = read_gct(l1000_gct)
    out = tmp_path / "copy.gct"
    write_gct(data, out)
    orig = l1000_gct.read_text().splitlines()
    new = out.read_text().splitlines()
    assert new[:38] == orig[:38]  # header and all 35 column metadata lines identical
    for o, n in zip(orig[38:60], new[38:60]):  # row metadata identical, values equal
        of, nf = o.split("\t"), n.split("\t")
        assert nf[:12] == of[:12]
        assert np.array_equal(np.float32(of[12:]), np.float32(nf[12:]))
    back = read_gct(out)
    assert np.array_equal(back.values, data.values)
    pd.testing.assert_frame_equal(back.genes, data.genes)
    pd.testing.assert_frame_equal(back.samples, data.samples)


def test_nan_kept_and_scale_from_values_row(write_text):
    p = write_text("s.gct", SMALL)
    data = read_gct(p)
    assert data.scale == "log2"
    assert np.isnan(data.values[0, 1]) and np.isnan(data.values[1, 2])
    assert data.n_missing() == 2
    assert data.values[1, 1] == np.float32(7.5)


def test_gct_12_and_gzip(write_text, tmp_path: Path):
    text = "#1.2\n2\t3\nName\tDescription\tA\tB\tC\n1\tx\t1\t2\t3\n2\ty\t4\tNaN\t6\n"
    data = read(write_text("a.gct.gz", text))
    assert data.shape == (3, 2)
    assert data.gene_id_kind == "entrez"
    assert list(data.genes["Description"]) == ["x", "y"]
    assert np.isnan(data.values[1, 1])
    write_gct(data, tmp_path / "b.gct", version="1.2")
    assert (tmp_path / "b.gct").read_text().startswith("#1.2\n2\t3\nName\tDescription\tA")
    with pytest.raises(GeneinferError, match=r"1\.2"):
        write_gct(read_gct(write_text("m.gct", SMALL)), tmp_path / "c.gct", version="1.2")


def test_sample_subset_and_peek(l1000_gct: Path):
    ids = ["LJP005_A375_24H_X1_B19:A05", "LJP005_A375_24H_X1_B19:A03"]
    full = read_gct(l1000_gct)
    sub = read_gct(l1000_gct, sample_ids=ids)
    assert np.array_equal(sub.values, full.select_samples(ids).values)
    assert list(sub.samples["det_well"]) == ["A05", "A03"]
    n_s, n_g, genes = peek(l1000_gct)
    assert (n_s, n_g) == (377, 978) and genes == list(full.gene_ids)


# ------------------------------------------------------------------ malformed input
BAD = {
    "version": ("#1.4\n" + SMALL.split("\n", 1)[1], 1, "#1.2"),
    "dims_text": (SMALL.replace("3\t2\t1\t2", "3\ttwo\t1\t2"), 2, "integers"),
    "too_few_rows": (SMALL.replace("3\t2\t1\t2", "4\t2\t1\t2"), 2, "4 genes"),
    "too_many_rows": (SMALL.replace("3\t2\t1\t2", "2\t2\t1\t2"), 8, "2 genes"),
    "header_fields": (SMALL.replace("3\t2\t1\t2", "3\t3\t1\t2"), 3, "fields"),
    "non_numeric": (SMALL.replace("7.5", "7.5x"), 7, "number"),
    "dup_gene": (SMALL.replace("1053_at", "1007_s_at"), 7, "unique gene"),
    "dup_sample": (SMALL.replace("S1\tS2", "S1\tS1"), 3, "unique sample"),
    "short_row": (SMALL.replace("RFC2\tNA\t7.5", "RFC2\tNA"), 7, "fields"),
    "long_row": (SMALL.replace("RFC2\tNA\t7.5", "RFC2\tNA\t7.5\t1"), 7, "expected 4"),
    "col_meta_fields": (SMALL.replace("dataset\tna\tdemo\tdemo", "dataset\tdemo"), 4, "fields"),
    "empty_gene_id": (SMALL.replace("117_at", ""), 8, "gene id"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_gct_raises_input_format_error(case, write_text):
    text, line, expected = BAD[case]
    p = write_text(f"{case}.gct", text)
    with pytest.raises(InputFormatError) as err:
        read_gct(p)
    assert err.value.path == str(p)
    if line is not None:
        assert err.value.where == line
    if expected is not None:
        assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_crlf_line_ends(write_text):
    data = read_gct(write_text("crlf.gct", SMALL.replace("\n", "\r\n")))
    assert data.shape == (2, 3) and data.n_missing() == 2
    assert list(data.genes["pr_gene_symbol"]) == ["DDR1", "RFC2", "HSPA6"]


def test_empty_and_truncated_gzip(write_text, tmp_path: Path, shared: Path):
    empty = tmp_path / "e.gct"
    empty.write_bytes(b"")
    with pytest.raises(InputFormatError, match="empty"):
        read_gct(empty)
    raw = (shared / "gpl96" / "borovecki.gct.gz").read_bytes()
    cut = tmp_path / "cut.gct.gz"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputFormatError, match="truncated or corrupt"):
        read_gct(cut)
    with gzip.open(tmp_path / "x.gct.gz", "wb") as fh:
        fh.write(b"\xff\xfe\x00garbage")
    with pytest.raises(InputFormatError):
        read_gct(tmp_path / "x.gct.gz")


def test_writer_is_atomic_when_interrupted(write_text, tmp_path: Path, monkeypatch):
    data = read_gct(write_text("s.gct", SMALL))
    out = tmp_path / "out.gct"
    out.write_text("previous content")

    def boom(values):
        raise KeyboardInterrupt

    monkeypatch.setattr(gct_mod, "format_block", boom)
    with pytest.raises(KeyboardInterrupt):
        write_gct(data, out)
    assert out.read_text() == "previous content"
    assert [p.name for p in tmp_path.iterdir() if ".part" in p.name] == []


def test_writer_rejects_unwritable_ids(tmp_path: Path):
    data = ExpressionData(values=np.ones((1, 1)), gene_ids=["a\tb"], sample_ids=["s"])
    with pytest.raises(GeneinferError, match="tab"):
        write_gct(data, tmp_path / "x.gct")
    assert not (tmp_path / "x.gct").exists()


def test_stale_scale_note_is_restated_on_write(shared, tmp_path):
    """MAS5 data put on log2 keeps its 'values' note; the file must read back as log2."""
    from geneinfer.preprocess import to_log2

    raw = read_gct(shared / "gpl96" / "borovecki.gct.gz")
    assert raw.scale == "linear"
    logged = to_log2(raw)
    write_gct(logged, tmp_path / "log2.gct")
    back = read_gct(tmp_path / "log2.gct")
    assert back.scale == "log2"
    assert set(back.samples["values"]) == {"log2 (from MAS5 linear)"}
    write_gct(raw, tmp_path / "raw.gct")  # a consistent note is kept verbatim
    assert set(read_gct(tmp_path / "raw.gct").samples["values"]) == {"MAS5 linear"}
