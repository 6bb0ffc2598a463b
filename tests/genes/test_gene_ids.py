"""Gene identities: id cleaning, annotation aliases, id maps, Ensembl -> Entrez mapping."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from geneinfer.errors import DataUnavailableError, GeneinferError
from geneinfer.examples import load_embedded
from geneinfer.expression import ExpressionData
from geneinfer.genes import (
    GeneIdMap,
    clean_ensembl,
    clean_entrez,
    load_id_map,
    map_gene_ids,
    standard_annotation,
)


def test_clean_entrez_handles_markers_floats_and_multi_gene_entries():
    ids, amb = clean_entrez(["780", "5982.0", "-666", "", None, "1 /// 2", "7 /// 7", "na"])
    assert ids.tolist() == ["780", "5982", None, None, None, None, "7", None]
    assert amb.tolist() == [False, False, False, False, False, True, False, False]


def test_clean_ensembl_strips_versions_and_rejects_non_ensembl():
    out = clean_ensembl(["ENSG00000000419.12", "ENSG00000000457", "DDR1", None])
    assert out.tolist() == ["ENSG00000000419", "ENSG00000000457", None, None]


def test_standard_annotation_reads_gct_aliases_with_missing_marker(bladder_probes):
    data = bladder_probes.select_genes(["1007_s_at", "1053_at", "1552256_a_at", "200003_s_at"],
                                       missing="drop")
    ann = standard_annotation(data)
    assert list(ann.columns) == ["symbol", "entrez", "ensembl"]
    assert ann.loc["1007_s_at", "entrez"] == "780"
    assert ann.loc["1007_s_at", "symbol"] == "DDR1"
    # 200003_s_at is annotated "-666" (no gene) in the GCT: unknown, not the string "-666".
    raw = bladder_probes.genes.loc["200003_s_at", "pr_gene_id"]
    assert (ann.loc["200003_s_at", "entrez"] is None) == (raw == "-666")
    assert ann["ensembl"].isna().all()


def test_standard_annotation_reads_geo_platform_columns_and_ensembl_gene_id():
    genes = pd.DataFrame({"Gene Symbol": ["DDR1", "RFC2", "HSPA6 /// HSPA7"],
                          "ENTREZ_GENE_ID": ["780", "5982", "3310 /// 3311"]},
                         index=["1007_s_at", "1053_at", "117_at"])
    data = ExpressionData(values=np.ones((2, 3)), gene_ids=genes.index, sample_ids=["a", "b"],
                          genes=genes, gene_id_kind="probe")
    ann = standard_annotation(data)
    assert ann["entrez"].tolist() == ["780", "5982", None]
    assert ann["symbol"].tolist() == ["DDR1", "RFC2", None]
    # A count table's "gene_id" column holding Ensembl ids is Ensembl, not Entrez.
    genes = pd.DataFrame({"gene_id": ["ENSG00000000419.12", "ENSG00000000457.13"]},
                         index=["g1", "g2"])
    data = ExpressionData(values=np.ones((1, 2)), gene_ids=["g1", "g2"], sample_ids=["s"],
                          genes=genes)
    ann = standard_annotation(data)
    assert ann["ensembl"].tolist() == ["ENSG00000000419", "ENSG00000000457"]
    assert ann["entrez"].isna().all()


def test_gene_id_map_prefers_better_ranked_source_and_flags_ambiguity():
    hgnc_like = GeneIdMap(pd.DataFrame({"symbol": ["MARCHF1"], "entrez": ["55016"],
                                        "ensembl": ["ENSG00000145416"]}), sources=["new"])
    old = GeneIdMap(pd.DataFrame({"symbol": ["MARCH1", "MARCHF1", "DUP", "DUP"],
                                  "entrez": ["55016", "99999", "1", "2"],
                                  "ensembl": [None, None, None, None]}), sources=["old"])
    m = GeneIdMap.combine([hgnc_like, old])
    got = m.lookup(["MARCHF1", "march1", "DUP", "NOPE"], src="symbol", dst="entrez")
    assert got.tolist() == ["55016", "55016", None, None]
    assert m.resolve(["ENSG00000145416.5", "55016", "MARCH1"]).tolist() == ["55016"] * 3


def test_load_id_map_from_shared_gene_tables(shared):
    m = load_id_map(data_dir=shared)
    got = m.resolve(["DDR1", "ENSG00000175063", "780", "ENSG00000000419", "NOT_A_GENE"])
    # UBE2C = 11065, DPM1 = 8813 (LINCS / NCBI Gene)
    assert got.tolist() == ["780", "11065", "780", "8813", None]


def test_map_geuvadis_ensembl_to_entrez_counts_mapped(shared):
    geu = load_embedded(["geuvadis"])["geuvadis"]
    out, report = map_gene_ids(geu, id_map=load_id_map(data_dir=shared), return_report=True)
    assert report.n_input == 10101
    assert report.n_mapped + report.n_unmapped == 10101
    # The D-GEX maps cover ~10.5k genes of HG-U133A: most expressed LCL genes map.
    assert 7000 <= report.n_mapped <= 8000, report.summary()
    assert out.gene_id_kind == "entrez" and out.scale == "counts"
    assert out.n_genes == report.n_output
    # Counts of a one-to-one gene are carried over exactly (DPM1).
    j = geu.gene_ids.get_loc("ENSG00000000419")
    np.testing.assert_array_equal(out.to_frame()["8813"].to_numpy(), geu.values[:, j])
    assert out.genes.loc["8813", "symbol"] == "DPM1"
    assert set(report.unmapped).isdisjoint(out.genes["merged_ids"])


def test_map_gene_ids_sums_counts_of_merged_genes_and_keeps_nan():
    id_map = GeneIdMap(pd.DataFrame({
        "symbol": ["PRSS1", "PRSS1", "DPM1"], "entrez": ["5644", "5644", "8813"],
        "ensembl": ["ENSG00000204983", "ENSG00000274247", "ENSG00000000419"]}))
    values = np.array([[3, 4, 10, 1], [np.nan, np.nan, 5, 2]], dtype=np.float32)
    data = ExpressionData(values=values, sample_ids=["s1", "s2"], scale="counts",
                          gene_ids=["ENSG00000204983", "ENSG00000274247", "ENSG00000000419",
                                    "ENSG00000999999"], gene_id_kind="ensembl")
    out, rep = map_gene_ids(data, id_map=id_map, return_report=True)
    assert list(out.gene_ids) == ["5644", "8813"]
    np.testing.assert_array_equal(out.values[0], [7, 10])
    assert np.isnan(out.values[1, 0])  # all merged values missing -> missing, never 0
    assert rep.unmapped == ["ENSG00000999999"] and rep.n_merged == 1
    log2 = data.with_values(np.log2(values + 1), scale="log2")
    assert map_gene_ids(log2, id_map=id_map).values[0, 0] == pytest.approx(
        np.mean(np.log2([4, 5])))


def test_map_gene_ids_without_any_ensembl_table_says_what_to_get(tmp_path, monkeypatch):
    monkeypatch.setenv("GENEINFER_CACHE", str(tmp_path / "cache"))
    geu = load_embedded(["geuvadis"])["geuvadis"]
    with pytest.raises(DataUnavailableError, match="hgnc_complete_set"):
        map_gene_ids(geu, data_dir=tmp_path)


def test_map_gene_ids_refuses_probe_data(bladder_probes):
    with pytest.raises(GeneinferError, match="collapse"):
        map_gene_ids(bladder_probes.select_genes(["1007_s_at", "1053_at"]))


def test_hgnc_complete_set_in_data_dir_takes_precedence(tmp_path, shared):
    genes = tmp_path / "genes"
    genes.mkdir()
    for name in ("GSE92742_Broad_LINCS_gene_info.txt", "dgex_map_lm.txt", "dgex_map_tg.txt"):
        (genes / name).symlink_to(shared / "genes" / name)
    # HGNC complete-set layout (subset of its columns, real rows).
    (genes / "hgnc_complete_set.txt").write_text(
        "hgnc_id\tsymbol\tname\tlocus_group\tentrez_id\tensembl_gene_id\n"
        "HGNC:2730\tDDR1\tdiscoidin domain receptor tyrosine kinase 1\tprotein-coding gene"
        "\t780\tENSG00000204580\n"
        "HGNC:7080\tMARCHF1\tmembrane associated ring-CH-type finger 1\tprotein-coding gene"
        "\t55016\tENSG00000145416\n"
    )
    m = load_id_map(data_dir=tmp_path)
    assert m.sources[0].startswith("HGNC")
    assert m.resolve(["ENSG00000204580", "MARCHF1", "UBE2C"]).tolist() == [
        "780", "55016", "11065"]
    bad = tmp_path / "bad" / "genes"
    bad.mkdir(parents=True)
    (bad / "hgnc_complete_set.txt").write_text("symbol\tname\nDDR1\tx\n")
    with pytest.raises(GeneinferError, match="HGNC"):
        load_id_map(data_dir=tmp_path / "bad")


def test_map_gene_ids_with_nothing_mappable_is_an_error():
    id_map = GeneIdMap(pd.DataFrame({"symbol": ["DPM1"], "entrez": ["8813"],
                                     "ensembl": ["ENSG00000000419"]}))
    data = ExpressionData(values=np.ones((1, 2)), gene_ids=["ENSG00000999998", "ENSG00000999999"],
                          sample_ids=["s"], gene_id_kind="ensembl", scale="counts")
    with pytest.raises(GeneinferError, match="none of the 2 ensembl ids"):
        map_gene_ids(data, id_map=id_map)
