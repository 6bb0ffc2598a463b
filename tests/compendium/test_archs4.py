"""ARCHS4 gene-count files: the reader against the file read with plain h5py, sample
selection, and malformed files."""

from __future__ import annotations

import re

import h5py
import numpy as np
import pandas as pd
import pytest
from compendium_data import N_SINGLE_CELL, geuvadis, write_archs4

from geneinfer import io as gio
from geneinfer.cli import main
from geneinfer.errors import InputFormatError
from geneinfer.io import Archs4Selection
from geneinfer.io.archs4 import Archs4Blocks, read_sample_list
from geneinfer.io.archs4 import write_archs4 as write_layout


@pytest.fixture(scope="module")
def archs4(shared, tmp_path_factory):
    path = tmp_path_factory.mktemp("archs4") / "human_gene_v2.latest.h5"
    samples = write_archs4(path, shared)
    return path, samples, geuvadis(shared)


def test_reader_serves_bulk_samples_as_transposed_counts(archs4):
    path, samples, counts = archs4
    bulk = samples["singlecellprobability"].to_numpy() < 0.5
    assert (~bulk).sum() == N_SINGLE_CELL
    assert gio.detect_format(path) == "archs4"
    with gio.open_blocks(path) as reader:
        assert isinstance(reader, Archs4Blocks)
        assert reader.n_samples == bulk.sum() == 80
        assert list(reader.sample_ids()) == samples.loc[bulk, "geo_accession"].tolist()
        assert list(reader.gene_ids) == list(counts.index)  # Ensembl ids (unique)
        assert reader.gene_id_kind == "ensembl" and reader.scale == "counts"
        assert reader.group_column == "series_id" and reader.chunk_samples == 8
        assert reader.genes.loc["ENSG00000175063", "symbol"] == "UBE2C"  # D-GEX symbol
        expected = counts.to_numpy(np.float32).T[bulk]
        # blocks across chunk borders, and the whole file, equal the counts
        np.testing.assert_array_equal(reader.read(5, 29), expected[5:29])
        np.testing.assert_array_equal(reader.read(0, reader.n_samples), expected)
        cols = np.array([3, 0, 10_000])
        np.testing.assert_array_equal(reader.read(70, 80, cols), expected[70:80][:, cols])
        rows = np.array([79, 2, 40, 2])
        np.testing.assert_array_equal(reader.read_rows(rows), expected[rows])
        block = reader.samples(75, 80)
        assert block["series_id"].tolist() == samples.loc[bulk, "series_id"].tolist()[75:]
        assert "GSE3,GSE4" in block["series_id"].tolist()
        np.testing.assert_allclose(block["singlecellprobability"], 0.02)
    data = gio.read(path)
    assert data.scale == "counts" and data.n_samples == 80
    assert gio.peek(path)[:2] == (80, len(counts))


def test_selection_by_series_search_list_and_single_cell(archs4, tmp_path, caplog):
    path, samples, _ = archs4
    acc = samples["geo_accession"].to_numpy()
    sc = samples["singlecellprobability"].to_numpy() >= 0.5

    def ids(selection):
        with Archs4Blocks(path, selection) as reader:
            return list(reader.sample_ids())

    gse4 = samples["series_id"].str.split(",").map(lambda s: "GSE4" in s).to_numpy()
    assert ids(Archs4Selection(series=("GSE4",))) == list(acc[gse4 & ~sc])
    both = ids(Archs4Selection(series=("GSE1", "GSE4")))
    assert both == list(acc[(gse4 | (samples["series_id"] == "GSE1").to_numpy()) & ~sc])
    # archs4py-style search: case, spaces and _ - ' / . ignored
    ebv = samples["source_name_ch1"].str.contains("EBV").to_numpy()
    assert ids(Archs4Selection(search=("ebv transformed",))) == list(acc[ebv & ~sc])
    assert ids(Archs4Selection(search=("LCL 7",), series=("GSE3",))) == [
        a for a, t, s, c in zip(acc, samples["title"], samples["series_id"], sc)
        if t.startswith("LCL_7") and s.startswith("GSE3") and not c]
    listed = tmp_path / "gsm.txt"
    listed.write_text("geo_accession\n" + "\n".join([acc[3], acc[4], "GSM1"]) + "\n")
    selection = Archs4Selection(samples=read_sample_list(listed))
    with caplog.at_level("WARNING"):
        assert ids(selection) == [acc[4]]  # acc[3] is a single-cell library
    assert "1 of the 3 listed samples are not in the file" in caplog.text
    everything = ids(Archs4Selection(samples=read_sample_list(listed), include_single_cell=True))
    assert everything == [acc[3], acc[4]]
    assert len(ids(Archs4Selection(include_single_cell=True))) == len(acc)
    with pytest.raises(InputFormatError, match=r"no sample is selected .*series GSE99"):
        ids(Archs4Selection(series=("GSE99",)))


def test_older_symbol_field_repeated_symbols_and_the_writer(shared, tmp_path):
    path = tmp_path / "old.h5"
    write_archs4(path, shared, symbol_field="symbol")
    counts = geuvadis(shared)
    with h5py.File(path, "r+") as f:  # no Ensembl ids, one symbol used twice
        del f["meta/genes/ensembl_gene"]
        sym = f["meta/genes/symbol"][()]
        sym[1] = sym[0]
        del f["meta/genes/symbol"]
        f["meta/genes/symbol"] = sym
    with Archs4Blocks(path, Archs4Selection(include_single_cell=True)) as reader:
        assert reader.gene_id_kind == "unknown" and reader.gene_ids[0] == "row1"
        assert reader.genes["symbol"].iloc[1] == reader.genes["symbol"].iloc[0]
        values = reader.read(0, reader.n_samples)
        # the writer makes the same layout back (a subset of an ARCHS4 file)
        copy = tmp_path / "copy.h5"
        genes = pd.DataFrame({"gene_symbol": reader.genes["symbol"].to_numpy()})
        meta = reader.samples().reset_index(names="geo_accession")
        write_layout(copy, genes=genes, samples=meta, blocks=[values[:50], values[50:]],
                     chunk_samples=16)
    with Archs4Blocks(copy, Archs4Selection(include_single_cell=True)) as again:
        np.testing.assert_array_equal(again.read(0, again.n_samples), values)
        assert again.chunk_samples == 16
    np.testing.assert_array_equal(values, counts.to_numpy(np.float32).T)


def _broken(tmp_path, shared, change):
    path = tmp_path / "broken.h5"
    write_archs4(path, shared)
    with h5py.File(path, "r+") as f:
        change(f)
    return path


@pytest.mark.parametrize(("change", "message"), [
    (lambda f: f.__delitem__("data/expression"),
     r"broken\.h5, /data/expression: missing dataset \(expected the ARCHS4 layout"),
    (lambda f: (f.__delitem__("data/expression"),
                f.create_dataset("data/expression", data=np.ones((10101, 85), np.float32))),
     r"broken\.h5, /data/expression: matrix has dtype float32 \(expected integer read "
     r"counts \(uint32\)"),
    (lambda f: (f.__delitem__("meta/samples/geo_accession"),
                f.create_dataset("meta/samples/geo_accession", data=np.array([b"GSM1"] * 84))),
     r"broken\.h5, /meta/samples/geo_accession: 84 entries \(expected 85 = the columns of "
     r"/data/expression"),
    (lambda f: (f.__delitem__("meta/genes/gene_symbol"),
                f.create_dataset("meta/genes/gene_symbol", data=np.array([b"A"] * 10))),
     r"broken\.h5, /meta/genes/gene_symbol: 10 entries \(expected 10101 = the rows"),
])
def test_malformed_archs4_files_fail_in_one_line(shared, tmp_path, capsys, change, message):
    path = _broken(tmp_path, shared, change)
    out = tmp_path / "model"
    rc = main(["train", "--train", str(path), "--out", str(out), "--data-dir", str(shared),
               "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("geneinfer: error: ") and re.search(message, err), err
    assert not out.exists()


def test_not_archs4_hdf5_is_named(tmp_path, capsys):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["matrix"] = np.zeros((3, 3))
    rc = main(["convert", str(path), str(tmp_path / "x.gct")])
    err = capsys.readouterr().err
    assert rc == 2 and "HDF5 file in an unknown layout" in err and "ARCHS4" in err
    assert not (tmp_path / "x.gct").exists()

