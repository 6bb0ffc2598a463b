"""Format detection, the read/write dispatchers and the guess helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geneinfer.data import ExpressionData
from geneinfer.errors import GeneinferError, InputFormatError
from geneinfer.io import (
    detect_format,
    guess_gene_id_kind,
    guess_scale,
    iter_sample_blocks,
    read,
    scale_from_text,
    write,
)


def test_detect_from_name_and_content(shared: Path, tmp_path: Path):
    assert detect_format(shared / "gpl96" / "nakayama.gct.gz") == "gct"
    assert detect_format(shared / "geo" / "GSE781_family.soft.gz") == "soft"
    assert detect_format(shared / "rnaseq" / "geuvadis85_counts.tsv.gz") == "tsv"
    assert detect_format("GSE1_series_matrix.txt.gz") == "series-matrix"
    # content when the name says nothing
    for src, fmt in [
        ("l1000/test_l1000.gct", "gct"),
        ("l1000/test_l1000_highprecision.gctx", "gctx"),
    ]:
        copy = tmp_path / f"noext_{fmt}"
        copy.write_bytes((shared / src).read_bytes())
        assert detect_format(copy) == fmt
    soft = tmp_path / "GSE781.txt.gz"
    soft.write_bytes((shared / "geo" / "GSE781_family.soft.gz").read_bytes()[:5000])
    assert detect_format(soft) == "soft"
    (tmp_path / "x.dat").write_text("a,b\n1,2\n")
    assert detect_format(tmp_path / "x.dat") == "csv"
    (tmp_path / "y.dat").write_text("nothing here\n")
    with pytest.raises(InputFormatError, match="format"):
        detect_format(tmp_path / "y.dat")
    with pytest.raises(GeneinferError, match="unknown format"):
        detect_format("a.gct", format="xls")


def test_write_dispatch_errors(tmp_path: Path):
    data = ExpressionData(values=np.ones((2, 2)), gene_ids=["1", "2"], sample_ids=["a", "b"])
    with pytest.raises(GeneinferError, match="cannot write soft"):
        write(data, tmp_path / "x.soft")
    with pytest.raises(GeneinferError, match="output format"):
        write(data, tmp_path / "x.bin")
    with pytest.raises(GeneinferError, match="do not apply"):
        write(data, tmp_path / "x.gct", orientation="genes-in-rows")
    with pytest.raises(GeneinferError, match="block_size"):
        next(iter_sample_blocks(tmp_path / "x.gct", block_size=0))
    assert list(tmp_path.iterdir()) == []


def test_all_writable_formats_round_trip(tmp_path: Path, rng):
    vals = rng.lognormal(5, 2, size=(7, 30)).astype(np.float32)
    vals[2, 3] = np.nan
    data = ExpressionData(
        values=vals,
        gene_ids=[f"ENSG{i:011d}" for i in range(30)],
        sample_ids=[f"s {i}" for i in range(7)],
        scale="linear",
    )
    for name in ("a.gct", "a.gct.gz", "a.gctx", "a.tsv", "a.csv.gz", "a.h5ad"):
        write(data, tmp_path / name)
        back = read(tmp_path / name)
        assert np.array_equal(back.values, vals, equal_nan=True), name
        assert list(back.sample_ids) == list(data.sample_ids), name
        assert back.gene_id_kind == "ensembl", name
        assert back.n_missing() == 1, name
        assert back.scale == "linear", name  # GCT/GCTX: a "values" row; h5ad: uns; tables: guess
        blocks = list(iter_sample_blocks(tmp_path / name, block_size=3))
        assert np.array_equal(np.concatenate([b.values for b in blocks]), vals, equal_nan=True)


def test_guess_helpers(shared: Path):
    assert guess_gene_id_kind(["1007_s_at", "AFFX-BioB-5_at", "200814_at"]) == "probe"
    assert guess_gene_id_kind(["780", "5982"]) == "entrez"
    assert guess_gene_id_kind(["ENSG00000000003.14", "ENSG00000000005"]) == "ensembl"
    assert guess_gene_id_kind(["DDR1", "HLA-DRB4", "C1orf43"]) == "symbol"
    assert guess_gene_id_kind(["sample one", "x y"]) == "unknown"
    counts = read(shared / "rnaseq" / "geuvadis85_counts.tsv.gz").values
    assert guess_scale(counts) == "counts"
    assert guess_scale(read(shared / "gpl96" / "bladderbatch.gct.gz").values[:5]) == "log2"
    assert guess_scale(read(shared / "gpl96" / "borovecki.gct.gz").values[:5]) == "linear"
    z = np.random.default_rng(1).standard_normal((50, 40))
    assert guess_scale(z) == "zscore"
    assert guess_scale(np.full((2, 2), np.nan)) == "unknown"
    assert scale_from_text("RMA log2") == "log2"
    assert scale_from_text("MAS5 linear") == "linear"
    assert scale_from_text("MAS 5.0 Statistical Algorithm (mean scaled to 500)") == "linear"
    assert scale_from_text("nothing") is None
