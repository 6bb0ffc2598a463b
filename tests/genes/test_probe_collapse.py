"""Probe -> gene collapsing on the real HG-U133A data, and platform annotation files."""

from __future__ import annotations

import gzip
import itertools

import numpy as np
import pandas as pd
import pytest

from geneinfer.errors import GeneinferError
from geneinfer.examples import load_shared
from geneinfer.expression import ExpressionData
from geneinfer.genes import (
    collapse_probes,
    get_panel,
    load_probe_annotation,
    read_platform_annotation,
)
from geneinfer.genes.matching import match_panel

GPL96_SETS = ("nakayama", "borovecki", "bladderbatch", "gse781")


def test_embedded_gpl96_annotation_matches_shared_file(shared):
    ann = load_probe_annotation("GPL96")
    raw = pd.read_csv(shared / "genes" / "GPL96_annotation.tsv.gz", sep="\t", dtype=str)
    assert len(ann) == len(raw) == 22283
    single = raw["ENTREZ_GENE_ID"].notna() & ~raw["ENTREZ_GENE_ID"].str.contains("///", na=False)
    assert ann["entrez"].notna().sum() == single.sum()
    assert ann["ambiguous"].sum() == raw["ENTREZ_GENE_ID"].str.contains("///", na=False).sum()
    assert ann.loc["1007_s_at", "entrez"] == "780"


def test_collapse_is_the_mean_of_each_genes_probes(bladder_probes):
    genes, rep = collapse_probes(bladder_probes, return_report=True)
    assert genes.gene_id_kind == "entrez" and genes.scale == bladder_probes.scale
    assert rep.n_input == 22283 and rep.via == "its 'pr_gene_id' column"
    assert rep.n_no_gene == 1288 and rep.n_ambiguous == 862
    assert rep.n_mapped == genes.genes["n_merged"].sum() == 22283 - 1288 - 862
    assert genes.n_genes == rep.n_output == 12633
    # Independent check with pandas groupby on float64.
    probe_entrez = bladder_probes.genes["pr_gene_id"]
    keep = (probe_entrez != "-666") & ~probe_entrez.str.contains("///")
    frame = bladder_probes.to_frame().loc[:, keep.to_numpy()].astype(np.float64)
    expected = frame.T.groupby(probe_entrez[keep].to_numpy()).mean().T
    for gene in ["780", "7849", "2597", "7157", "6772"]:
        np.testing.assert_array_equal(genes.to_frame()[gene].to_numpy(),
                                      expected[gene].to_numpy().astype(np.float32))
    assert genes.genes.loc["2597", "symbol"] == "GAPDH"
    assert list(genes.samples["label"]) == list(bladder_probes.samples["label"])


def test_collapse_ignores_missing_probe_values_and_keeps_all_missing_as_nan(bladder_probes):
    ddr1 = ["1007_s_at", "207169_x_at", "208779_x_at", "210749_x_at"]
    sub = bladder_probes.select_genes([*ddr1, "1053_at"]).copy()
    sub.values[0, 0] = np.nan            # one DDR1 probe missing in sample 0
    sub.values[1, :4] = np.nan           # all DDR1 probes missing in sample 1
    out = collapse_probes(sub)
    assert out.genes.loc["780", "n_merged"] == 4
    np.testing.assert_allclose(out.values[0, 0], np.mean(sub.values[0, 1:4].astype(np.float64)),
                               rtol=1e-7)
    assert np.isnan(out.values[1, 0])
    assert not np.isnan(out.values[1, 1])


def test_collapse_without_metadata_uses_embedded_gpl96(bladder_probes):
    bare = ExpressionData(values=bladder_probes.values, gene_ids=bladder_probes.gene_ids,
                          sample_ids=bladder_probes.sample_ids, gene_id_kind="probe")
    a = collapse_probes(bare)
    b = collapse_probes(bladder_probes)
    np.testing.assert_array_equal(a.values, b.values)
    assert a.gene_ids.equals(b.gene_ids)


def test_collapse_rejects_ids_of_another_platform():
    data = ExpressionData(values=np.ones((2, 3)), gene_ids=["ILMN_1", "ILMN_2", "ILMN_3"],
                          sample_ids=["a", "b"], gene_id_kind="probe")
    with pytest.raises(GeneinferError, match=r"ILMN_1.*--annotation FILE or --platform"):
        collapse_probes(data)


def test_reads_geo_annot_and_soft_platform_tables(tmp_path, shared):
    with gzip.open(shared / "geo" / "GSE781_family.soft.gz", "rt") as fh:
        lines = [ln.rstrip("\n") for ln in itertools.islice(fh, 22500)]
    start = lines.index("^PLATFORM = GPL96")
    end = lines.index("!platform_table_end", start)
    soft = tmp_path / "gpl96_soft.txt"
    soft.write_text("\n".join(lines[start:end + 1]) + "\n")
    ann = read_platform_annotation(soft)
    assert len(ann) == 22283
    ref = load_probe_annotation("GPL96")
    pd.testing.assert_series_equal(ann["entrez"], ref["entrez"], check_names=False)
    # GEO .annot files: "Gene symbol" / "Gene ID" columns after '!'/'#' header lines.
    annot = tmp_path / "GPL96.annot.gz"
    rows = ["ID\tGene title\tGene symbol\tGene ID",
            "1007_s_at\tdiscoidin\tDDR1///MIR4640\t780///100616237",
            "1053_at\treplication factor C\tRFC2\t5982"]
    with gzip.open(annot, "wt") as fh:
        fh.write("^Annotation\n!Annotation_platform = GPL96\n!platform_table_begin\n")
        fh.write("\n".join(rows) + "\n!platform_table_end\n")
    got = read_platform_annotation(annot)
    assert got["entrez"].tolist() == [None, "5982"]
    assert got["ambiguous"].tolist() == [True, False]


@pytest.mark.parametrize("name", GPL96_SETS)
def test_real_hgu133a_sets_collapse_and_cover_the_panels(shared, name):
    probes = load_shared(name, data_dir=shared)
    assert probes.gene_id_kind == "probe"
    assert probes.n_samples == {"nakayama": 105, "borovecki": 31, "bladderbatch": 57,
                                "gse781": 17}[name]
    genes, rep = collapse_probes(probes, return_report=True)
    assert rep.n_input == 22283 and genes.n_genes == 12633
    l1000 = match_panel(get_panel("l1000", data_dir=shared), genes.gene_ids)
    dgex = match_panel(get_panel("dgex", data_dir=shared), genes.gene_ids)
    # HG-U133A carries almost all L1000 landmarks (975 of 978) and D-GEX landmarks.
    assert len(l1000.landmarks) == 975 and len(l1000.missing_landmarks) == 3
    assert len(l1000.targets) > 11000
    assert len(dgex.landmarks) >= 940 and len(dgex.landmarks + dgex.missing_landmarks) == 943
    assert len(dgex.targets) >= 8800
    assert l1000.summary()["landmarks_found"] == 975
    assert l1000.summary()["landmarks_missing"] == l1000.missing_landmarks
