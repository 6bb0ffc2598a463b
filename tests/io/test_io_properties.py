"""Property-based tests of the text parsers (hypothesis).

* Round trips: random float32 matrices (with NaN; infinities are refused on both sides, see
  test_io_robust.py), odd but writable ids and
  metadata texts survive write -> read exactly (GCT, TSV, CSV).
* Corruption: any byte-level damage to a valid file (deleted/inserted/replaced bytes,
  swapped lines, truncation, incl. gzip) either still parses or raises InputFormatError —
  never another exception.
"""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from geneinfer.errors import InputFormatError
from geneinfer.expression import ExpressionData
from geneinfer.io import read, write

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Printable text without the separators no text format can hold inside an id.
_chars = st.characters(
    codec="utf-8", categories=("L", "N", "P", "S", "Zs"), exclude_characters="\t\r\n\x85"
)
_text = st.text(_chars, min_size=1, max_size=8)
_id = _text.filter(lambda s: s.strip() != "")
_floats = st.floats(width=32, allow_nan=True, allow_infinity=False)


@st.composite
def expression(draw, *, with_meta: bool) -> ExpressionData:
    n_s = draw(st.integers(1, 5))
    n_g = draw(st.integers(1, 6))
    values = draw(arrays(np.float32, (n_s, n_g), elements=_floats))
    genes = draw(st.lists(_id, min_size=n_g, max_size=n_g, unique=True))
    samples = draw(st.lists(_id, min_size=n_s, max_size=n_s, unique=True))
    gmeta = pd.DataFrame(index=genes)
    smeta = pd.DataFrame(index=samples)
    if with_meta:
        names = draw(st.lists(_id, max_size=3, unique=True))
        for name in names:  # metadata texts, incl. "na", "007", "1.50", spaces
            gmeta[name] = pd.Series(
                draw(st.lists(st.text(_chars, max_size=6), min_size=n_g, max_size=n_g)),
                index=genes,
                dtype=object,
            )
        for name in draw(st.lists(_id, max_size=2, unique=True)):
            smeta[name] = pd.Series(
                draw(st.lists(_text, min_size=n_s, max_size=n_s)), index=samples, dtype=object
            )
    return ExpressionData(
        values=values, gene_ids=genes, sample_ids=samples, genes=gmeta, samples=smeta
    )


def _texts(frame: pd.DataFrame) -> dict[str, list[str]]:
    return {str(c): [str(v) for v in frame[c]] for c in frame.columns}


@SETTINGS
@given(data=expression(with_meta=True), gz=st.booleans())
def test_gct_round_trip(data: ExpressionData, gz: bool):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("x.gct.gz" if gz else "x.gct")
        write(data, path)
        back = read(path)
    assert np.array_equal(back.values, data.values, equal_nan=True)
    assert list(back.gene_ids) == list(data.gene_ids)
    assert list(back.sample_ids) == list(data.sample_ids)
    # metadata texts come back verbatim (typed only when printing reproduces the text)
    derived = [c for c in ("symbol", "entrez") if c in back.genes and c not in data.genes]
    genes = back.genes.drop(columns=derived)
    assert _texts(genes) == _texts(data.genes)
    assert _texts(back.samples) == _texts(data.samples)
    assert back.n_missing() == data.n_missing()


@SETTINGS
@given(
    data=expression(with_meta=False),
    fmt=st.sampled_from(["tsv", "csv", "csv.gz"]),
    orientation=st.sampled_from(["genes-in-rows", "samples-in-rows"]),
)
def test_table_round_trip(data: ExpressionData, fmt: str, orientation: str):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"x.{fmt}"
        write(data, path, orientation=orientation)
        back = read(path, orientation=orientation)
    assert np.array_equal(back.values, data.values, equal_nan=True)
    assert list(back.gene_ids) == list(data.gene_ids)
    assert list(back.sample_ids) == list(data.sample_ids)


GCT_TEXT = (
    b"#1.3\n3\t2\t2\t2\nid\tpr_gene_symbol\tpr_gene_id\tGSM1\tGSM2\n"
    b"dataset\tna\tna\tdemo\tdemo\nvalues\tna\tna\tMAS5 linear\tMAS5 linear\n"
    b"1007_s_at\tDDR1\t780\t1946.9\t2203\n1053_at\tRFC2\t5982\tNA\t240.2\n"
    b"117_at\tHSPA6\t3310\t134\t215.3\n"
)
TSV_TEXT = (
    b"gene_id\tS1\tS2\nENSG00000000003\t10\t20\nENSG00000000005\t\t7\nENSG00000000419\t3\t4\n"
)
SERIES_TEXT = (
    b'!Series_geo_accession\t"GSE781"\n!Sample_title\t"N035"\t"C035"\n'
    b'!Sample_geo_accession\t"GSM11805"\t"GSM11810"\n!series_matrix_table_begin\n'
    b'"ID_REF"\t"GSM11805"\t"GSM11810"\n"1007_s_at"\t1946.9\t2203\n"1053_at"\t53.8\t\n'
    b"!series_matrix_table_end\n"
)
SOFT_TEXT = (
    b"^PLATFORM = GPL96\n!platform_table_begin\nID\tGene Symbol\n1007_s_at\tDDR1\n"
    b"1053_at\tRFC2\n!platform_table_end\n^SAMPLE = GSM1\n!Sample_platform_id = GPL96\n"
    b"!sample_table_begin\nID_REF\tVALUE\n1007_s_at\t1946.9\n1053_at\t53.8\n!sample_table_end\n"
)
FILES = {
    "x.gct": GCT_TEXT,
    "x.gct.gz": gzip.compress(GCT_TEXT),
    "x.tsv": TSV_TEXT,
    "x.csv": TSV_TEXT.replace(b"\t", b","),
    "GSE1_series_matrix.txt": SERIES_TEXT,
    "GSE1_family.soft": SOFT_TEXT,
}


@st.composite
def corrupted(draw) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(FILES)))
    raw = bytearray(FILES[name])
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["delete", "insert", "replace", "truncate", "swap_lines"]))
        pos = draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "delete":
            del raw[pos : pos + draw(st.integers(1, 12))]
        elif op == "insert":
            raw[pos:pos] = draw(
                st.one_of(
                    st.sampled_from([b"\t", b"\n", b"x", b"NA", b'"', b",", b"#1.2\n", b"\xff"]),
                    st.binary(min_size=1, max_size=4),
                )
            )
        elif op == "replace" and raw:
            raw[pos] = draw(st.integers(0, 255))
        elif op == "truncate":
            del raw[pos:]
        elif op == "swap_lines":
            lines = bytes(raw).split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            raw = bytearray(b"\n".join(lines))
    return name, bytes(raw)


@settings(max_examples=250, deadline=None)
@given(case=corrupted())
def test_corruption_gives_input_format_error_only(case: tuple[str, bytes]):
    name, raw = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(raw)
        try:
            data = read(path, platform="GPL96") if name.endswith(".soft") else read(path)
        except InputFormatError as exc:
            assert exc.path == str(path)
            assert "\n" not in str(exc)
        else:
            assert isinstance(data, ExpressionData)
            assert data.values.dtype == np.float32
