"""Format detection and the read/write dispatchers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geneinfer.errors import GeneinferError, InputFormatError
from geneinfer.expression import ExpressionData
from geneinfer.io import (
    detect_format,
    iter_sample_blocks,
    read,
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
    with pytest.raises(GeneinferError, match="unknown input format"):
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
        # GCT/GCTX state the scale in a "values" row, h5ad in uns; a table states none
        tables = name.startswith(("a.tsv", "a.csv"))
        assert back.scale == ("unknown" if tables else "linear"), name
        blocks = list(iter_sample_blocks(tmp_path / name, block_size=3))
        assert np.array_equal(np.concatenate([b.values for b in blocks]), vals, equal_nan=True)


