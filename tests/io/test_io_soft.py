"""GEO SOFT family files (GSE781) and GEO series-matrix files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geneinfer.errors import InputFormatError
from geneinfer.expression import ExpressionData
from geneinfer.io import read, read_series_matrix, read_soft, soft_platforms
from geneinfer.scales import resolve_scale

SOFT_HEAD = """^DATABASE = GeoMiame
!Database_name = Gene Expression Omnibus (GEO)
^PLATFORM = GPL96
!Platform_title = [HG-U133A] Affymetrix Human Genome U133A Array
#ID = Affymetrix Probe Set ID
#Gene Symbol = A gene symbol
#ENTREZ_GENE_ID = Entrez Gene
!platform_table_begin
ID\tGene Symbol\tENTREZ_GENE_ID
1007_s_at\tDDR1\t780
1053_at\tRFC2\t5982
117_at\tHSPA6\t3310
!platform_table_end
"""


def _sample(acc: str, rows: str, platform: str = "GPL96") -> str:
    return (
        f"^SAMPLE = {acc}\n!Sample_title = tumour {acc}\n!Sample_platform_id = {platform}\n"
        "!Sample_characteristics_ch1 = tissue: kidney\n!Sample_characteristics_ch1 = age: 70\n"
        "#ID_REF = \n#VALUE = MAS 5.0 Statistical Algorithm (mean scaled to 500)\n"
        f"!sample_table_begin\nID_REF\tVALUE\tABS_CALL\n{rows}!sample_table_end\n"
    )


GOOD_ROWS = "1053_at\t53.8\tP\n1007_s_at\t1946.9\tP\n117_at\tnull\tA\n"


def test_gse781_gpl96_part(gse781_gpl96: ExpressionData, gse781_soft: Path):
    data = gse781_gpl96
    assert data.shape == (17, 22283)  # README sizes table: 17 GPL96 samples, HG-U133A
    assert data.scale == "linear"  # MAS5 VALUE column
    assert data.gene_id_kind == "probe"
    assert data.sample_ids[0] == "GSM11805"
    assert data.values[0, data.gene_ids.get_loc("AFFX-BioB-5_at")] == np.float32(953.9)
    assert data.genes.loc["1007_s_at", "Gene Symbol"] == "DDR1"
    assert data.genes.loc["1007_s_at", "ENTREZ_GENE_ID"] == "780"
    assert data.genes.loc["1007_s_at", "entrez"] == "780"
    assert data.samples.loc["GSM11805", "platform_id"] == "GPL96"
    assert "Gender = Female" in data.samples.loc["GSM11805", "description"]
    assert soft_platforms(gse781_soft) == ["GPL96", "GPL97"]


def test_multi_platform_soft_needs_platform(gse781_soft: Path):
    with pytest.raises(InputFormatError, match="GPL96, GPL97") as err:
        read(gse781_soft)
    assert "--platform" in str(err.value)


def test_small_soft_split_by_platform(write_text):
    text = (
        SOFT_HEAD
        + _sample("GSM1", GOOD_ROWS)
        + _sample("GSM2", "1007_s_at\t10\tP\n1053_at\t11\tP\n117_at\t12\tP\n")
        + _sample("GSM3", "X_at\t5\tP\n", platform="GPL97")
    )
    p = write_text("GSE1_family.soft", text)
    parts = read_soft(p)
    assert set(parts) == {"GPL96", "GPL97"}
    gpl96 = parts["GPL96"]
    assert list(gpl96.gene_ids) == ["1007_s_at", "1053_at", "117_at"]  # platform order
    assert np.allclose(gpl96.values[0, :2], [1946.9, 53.8])
    assert np.isnan(gpl96.values[0, 2])  # "null" kept as missing
    assert gpl96.samples.loc["GSM1", "characteristics_ch1"] == "tissue: kidney; age: 70"
    assert gpl96.scale == "linear"
    assert parts["GPL97"].shape == (1, 1)
    assert read(p, platform="GPL97").sample_ids[0] == "GSM3"
    with pytest.raises(InputFormatError, match="GPL1"):
        read(p, platform="GPL1")


BAD_SOFT = {
    "not_soft": ("hello world\n", 1),
    "non_numeric": (SOFT_HEAD + _sample("GSM1", "1007_s_at\tabc\tP\n"), 23),
    "ragged": (SOFT_HEAD + _sample("GSM1", "1007_s_at\t1\n"), 23),
    "no_value": (SOFT_HEAD + _sample("GSM1", GOOD_ROWS).replace("\tVALUE\t", "\tVAL\t"), 22),
    "unterminated": (
        SOFT_HEAD + _sample("GSM1", GOOD_ROWS).replace("!sample_table_end\n", ""),
        None,
    ),
    "dup_sample": (SOFT_HEAD + _sample("GSM1", GOOD_ROWS) + _sample("GSM1", GOOD_ROWS), None),
    "dup_row": (SOFT_HEAD + _sample("GSM1", GOOD_ROWS + "117_at\t1\tP\n"), 26),  # the repeated row
    "no_samples": (SOFT_HEAD, None),
    "empty": ("", None),
}


@pytest.mark.parametrize("case", sorted(BAD_SOFT))
def test_malformed_soft(case, write_text):
    text, line = BAD_SOFT[case]
    p = write_text(f"{case}.soft", text)
    with pytest.raises(InputFormatError) as err:
        read_soft(p)
    assert err.value.path == str(p)
    if line is not None:
        assert err.value.where == line


def test_truncated_soft_gzip(gse781_soft: Path, tmp_path: Path):
    cut = tmp_path / "GSE781_family.soft.gz"
    cut.write_bytes(gse781_soft.read_bytes()[:200_000])
    with pytest.raises(InputFormatError, match="truncated"):
        read(cut, platform="GPL96")


# ------------------------------------------------------------------ series matrix
def _series_matrix(data: ExpressionData, n_samples: int = 4, n_genes: int = 300) -> str:
    """A GEO series-matrix text holding real GSE781 GPL96 values and sample attributes."""
    sub = data.select_samples(slice(0, n_samples))
    genes = list(sub.gene_ids[:n_genes])
    sub = sub.select_genes(genes)

    def row(key: str, values) -> str:
        return "\t".join([key, *(f'"{v}"' for v in values)]) + "\n"

    s = sub.samples
    lines = [
        '!Series_title\t"Normal and Renal Cell Carcinoma Kidney Tissue, Human"\n',
        '!Series_geo_accession\t"GSE781"\n',
        '!Series_platform_id\t"GPL96"\n',
        row("!Sample_title", s["title"]),
        row("!Sample_geo_accession", sub.sample_ids),
        row("!Sample_source_name_ch1", s["source_name_ch1"]),
        row("!Sample_organism_ch1", s["organism_ch1"]),
        row("!Sample_characteristics_ch1", ["tissue: kidney"] * n_samples),
        row("!Sample_characteristics_ch1", [f"lot: {i}" for i in range(n_samples)]),
        row("!Sample_platform_id", s["platform_id"]),
        row("!Sample_data_row_count", [n_genes] * n_samples),
        "!series_matrix_table_begin\n",
        row('"ID_REF"', sub.sample_ids).replace('""ID_REF""', '"ID_REF"'),
    ]
    for j, g in enumerate(genes):
        cells = ["" if (j == 5 and i == 1) else f"{sub.values[i, j]:.7g}" for i in range(n_samples)]
        lines.append("\t".join([f'"{g}"', *cells]) + "\n")
    lines.append("!series_matrix_table_end\n")
    return "".join(lines)


def test_series_matrix_from_gse781_values(gse781_gpl96: ExpressionData, write_text):
    text = _series_matrix(gse781_gpl96)
    p = write_text("GSE781-GPL96_series_matrix.txt.gz", text)
    data = read(p)
    assert data.shape == (4, 300)
    assert list(data.sample_ids) == list(gse781_gpl96.sample_ids[:4])
    expected = gse781_gpl96.values[:4, :300].copy()
    expected[1, 5] = np.nan  # the empty cell stays missing
    assert np.array_equal(data.values, expected, equal_nan=True)
    # a series matrix whose processing text names no scale states none; the one detector
    # finds MAS5 intensities
    assert data.scale == "unknown"
    assert resolve_scale(data.values, stated=data.scale).describe() == "linear (detected)"
    assert data.gene_id_kind == "probe"
    assert data.samples.iloc[2]["characteristics_ch1"] == "tissue: kidney; lot: 2"
    assert data.samples.iloc[0]["title"] == gse781_gpl96.samples.iloc[0]["title"]


def test_malformed_series_matrix(gse781_gpl96: ExpressionData, write_text):
    good = _series_matrix(gse781_gpl96, n_samples=2, n_genes=20)
    cases = {
        "no_end": good.replace("!series_matrix_table_end\n", ""),
        "no_table": good.split("!series_matrix_table_begin")[0],
        "bad_number": good.replace('"1007_s_at"\t', '"1007_s_at"\tx', 1),
        "long_row": good.replace('"1053_at"\t', '"1053_at"\t1\t', 1),
        "short_row": good.replace('"117_at"\t', '"117_at"', 1),
        "meta_count": good.replace(
            '!Sample_organism_ch1\t"Homo sapiens"\t', "!Sample_organism_ch1\t"
        ),
        "dup_gene": good.replace('"1053_at"', '"1007_s_at"'),
    }
    for name, text in cases.items():
        if text == good:
            pytest.fail(f"case {name} did not change the text")
        p = write_text(f"{name}_series_matrix.txt", text)
        with pytest.raises(InputFormatError) as err:
            read_series_matrix(p)
        assert err.value.path == str(p), name
