"""The one gene id kind detector, on real ids of every kind."""

from __future__ import annotations

import pandas as pd

from geneinfer.idkinds import detect_id_kind, id_kind_of, looks_like_gene_ids
from geneinfer.io import read


def test_kinds_of_single_ids():
    cases = {
        "780": "entrez", "ENSG00000000419": "ensembl", "ENSG00000000419.12": "ensembl",
        "ENSMUSG00000000001": "ensembl", "1007_s_at": "probe", "AFFX-BioB-5_at": "probe",
        "ILMN_1343291": "probe", "A_23_P100001": "probe", "7892501_st": "probe",
        "DDR1": "symbol", "HLA-DRB4": "symbol", "C1orf43": "symbol", "sample one": "unknown",
    }
    assert {k: id_kind_of(k) for k in cases} == cases


def test_majority_rules():
    assert detect_id_kind(["1007_s_at", "1053_at", "AFFX-BioB-5_at"]) == "probe"
    assert detect_id_kind(["ILMN_1343291", "ILMN_1343295"]) == "probe"
    assert detect_id_kind(["780", "5982"]) == "entrez"
    # plain integers only when all of them are: one other id makes the column ambiguous
    assert detect_id_kind(["780", "DDR1"]) == "unknown"
    assert detect_id_kind([*map(str, range(1, 30)), "ENSG00000000419"]) == "unknown"
    assert detect_id_kind(["sample one", "x y"]) == "unknown"
    assert detect_id_kind([]) == "unknown"
    assert looks_like_gene_ids(["ENSG00000000003.14", "ENSG00000000005"])
    assert not looks_like_gene_ids(["DDR1", "PAX8"])


def test_real_files(shared):
    assert read(shared / "gpl96" / "bladderbatch.gct.gz").gene_id_kind == "probe"
    assert read(shared / "rnaseq" / "geuvadis85_counts.tsv.gz").gene_id_kind == "ensembl"
    assert read(shared / "l1000" / "test_l1000.gct").gene_id_kind == "probe"  # 200814_at
    lincs = pd.read_csv(shared / "genes" / "GSE92742_Broad_LINCS_gene_info.txt", sep="\t",
                        dtype=str)
    assert detect_id_kind(lincs["pr_gene_id"]) == "entrez"
    assert detect_id_kind(lincs["pr_gene_symbol"]) == "symbol"
