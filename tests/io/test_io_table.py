"""Delimited tables: GEUVADIS counts, orientation detection, CSV, malformed tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geneinfer.errors import InputFormatError
from geneinfer.expression import ExpressionData
from geneinfer.io import iter_sample_blocks, peek, read, read_table, write
from geneinfer.scales import resolve_scale


@pytest.fixture(scope="module")
def geuvadis(shared: Path) -> ExpressionData:
    return read(shared / "rnaseq" / "geuvadis85_counts.tsv.gz")


def test_geuvadis_counts(geuvadis: ExpressionData, shared: Path):
    assert geuvadis.shape == (85, 10101)
    assert geuvadis.scale == "unknown"  # a table states no scale
    assert resolve_scale(geuvadis.values).describe() == "counts (detected)"
    assert geuvadis.gene_id_kind == "ensembl"
    assert geuvadis.gene_ids[0].startswith("ENSG")
    raw = pd.read_csv(shared / "rnaseq" / "geuvadis85_counts.tsv.gz", sep="\t", index_col=0)
    assert list(geuvadis.sample_ids) == list(raw.columns)
    assert np.array_equal(geuvadis.values, raw.to_numpy(np.float32).T)
    assert peek(shared / "rnaseq" / "geuvadis85_counts.tsv.gz") == (85, 10101, list(raw.index))


def test_geuvadis_blocks_and_samples_in_rows_round_trip(geuvadis: ExpressionData, tmp_path: Path):
    small = geuvadis.select_genes(list(geuvadis.gene_ids[:400]))
    out = tmp_path / "t.csv"
    write(small, out, orientation="samples-in-rows")
    assert out.read_text().startswith("sample_id,ENSG")
    back = read(out)  # header holds Ensembl ids -> samples in rows, detected
    assert np.array_equal(back.values, small.values)
    assert list(back.sample_ids) == list(small.sample_ids)
    blocks = list(iter_sample_blocks(out, block_size=40, genes=list(small.gene_ids[:3])))
    assert [b.n_samples for b in blocks] == [40, 40, 5]
    assert np.array_equal(np.concatenate([b.values for b in blocks]), small.values[:, :3])
    write(small, tmp_path / "g.tsv.gz")
    blocks = list(iter_sample_blocks(tmp_path / "g.tsv.gz", block_size=50))
    assert np.array_equal(np.concatenate([b.values for b in blocks]), small.values)


def test_symbol_tables_and_metadata_columns(write_text):
    text = (
        "gene\tdescription\tS1\tS2\nDDR1\tkinase\t1.5\tNA\nRFC2\tfactor\t2\t3\nHSPA6\theat\t\t4\n"
    )
    data = read(write_text("sym.tsv", text))
    assert data.gene_id_kind == "symbol"
    assert list(data.genes["description"]) == ["kinase", "factor", "heat"]
    assert data.n_missing() == 2 and np.isnan(data.values[1, 0])
    assert data.values[1, 2] == np.float32(4) and np.isnan(data.values[0, 2])


def test_ambiguous_orientation_asks_for_option(write_text):
    p = write_text("amb.csv", "name,a,b\nx,1,2\ny,3,4\n")
    with pytest.raises(InputFormatError, match="orientation"):
        read(p)
    data = read(p, orientation="samples-in-rows")
    assert list(data.gene_ids) == ["a", "b"] and list(data.sample_ids) == ["x", "y"]


def test_wrong_orientation_is_rejected(shared: Path):
    with pytest.raises(InputFormatError, match="genes-in-rows"):
        read_table(shared / "rnaseq" / "geuvadis85_counts.tsv.gz", orientation="samples-in-rows")


GOOD = "gene_id\tS1\tS2\n1007_s_at\t1\t2\n1053_at\t3\t4\n117_at\t5\t6\n"
BAD = {
    "non_numeric": (GOOD.replace("\t4\n", "\tfour\n"), 3),
    "short_row": (GOOD.replace("1053_at\t3\t4", "1053_at\t3"), 3),
    "long_row": (GOOD.replace("1053_at\t3\t4", "1053_at\t3\t4\t5"), 3),
    "dup_gene": (GOOD.replace("117_at", "1053_at"), None),
    "dup_sample": (GOOD.replace("S1\tS2", "S1\tS1"), 1),
    "header_only": ("gene_id\tS1\tS2\n", 2),
    "one_column": ("1007_s_at\n1053_at\n", 1),
    "empty_first_line": ("\n" + GOOD, 1),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_table(case, write_text):
    text, line = BAD[case]
    p = write_text(f"{case}.tsv", text)
    with pytest.raises(InputFormatError) as err:
        read(p)
    assert err.value.path == str(p)
    if line is not None:
        assert err.value.where == line


def test_empty_and_truncated(tmp_path: Path, shared: Path):
    (tmp_path / "e.tsv").write_bytes(b"")
    with pytest.raises(InputFormatError, match="empty"):
        read(tmp_path / "e.tsv")
    raw = (shared / "rnaseq" / "geuvadis85_counts.tsv.gz").read_bytes()
    (tmp_path / "cut.tsv.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputFormatError, match="truncated"):
        read(tmp_path / "cut.tsv.gz")


def test_table_writer_is_atomic(geuvadis: ExpressionData, tmp_path: Path, monkeypatch):
    from geneinfer.io import table as table_mod

    calls = []

    def fail_on_second(block):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return [""] * block.shape[0]

    monkeypatch.setattr(table_mod, "format_block", fail_on_second)
    with pytest.raises(KeyboardInterrupt):
        table_mod.write_table(geuvadis, tmp_path / "counts.tsv", chunk_rows=1000)
    assert list(tmp_path.iterdir()) == []
