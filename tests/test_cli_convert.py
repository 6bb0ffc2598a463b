"""``geneinfer convert`` end to end through ``geneinfer.cli.main``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from geneinfer.cli import main
from geneinfer.io import read


def test_convert_gct_to_gctx_and_back(shared: Path, tmp_path: Path, capsys):
    src = shared / "l1000" / "test_l1000.gct"
    assert main(["convert", str(src), str(tmp_path / "out.gctx")]) == 0
    line = capsys.readouterr().out.strip()
    assert (
        line == f"wrote {tmp_path / 'out.gctx'}: 377 samples x 978 genes, scale log2 (detected), "
        "gene ids probe"
    )
    assert main(["convert", str(tmp_path / "out.gctx"), str(tmp_path / "back.gct")]) == 0
    orig, back = read(src), read(tmp_path / "back.gct")
    assert np.array_equal(orig.values, back.values)
    pd.testing.assert_frame_equal(orig.genes, back.genes)
    pd.testing.assert_frame_equal(orig.samples, back.samples)


def test_convert_reports_missing_values_and_orientation(tmp_path: Path, capsys):
    src = tmp_path / "m.csv"
    src.write_text("sample,a,b\nx,1,NA\ny,,4\n")
    assert (
        main(["convert", str(src), str(tmp_path / "m.gct"), "--orientation", "samples-in-rows"])
        == 0
    )
    out = capsys.readouterr().out
    assert "2 samples x 2 genes" in out and "2 missing values (kept as NaN)" in out
    assert np.isnan(read(tmp_path / "m.gct").values).sum() == 2


def test_convert_errors_are_one_line_exit_2(shared: Path, tmp_path: Path, capsys):
    bad = tmp_path / "bad.gct"
    bad.write_text("#1.3\n2\t1\t0\t0\nid\tS1\ng1\t1.0\ng2\toops\n")
    assert main(["convert", str(bad), str(tmp_path / "o.gctx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"geneinfer: error: {bad}, line 5: non-numeric value 'oops' in field 2 (sample S1) "
        "(expected a number or NA/NaN/empty for missing)"
    )
    assert not (tmp_path / "o.gctx").exists()
    soft = shared / "geo" / "GSE781_family.soft.gz"
    assert main(["convert", str(soft), str(tmp_path / "o.gct")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "GPL96, GPL97" in err and "--platform" in err
    amb = tmp_path / "amb.tsv"
    amb.write_text("x\ta\tb\nr1\t1\t2\n")
    assert main(["convert", str(amb), str(tmp_path / "o.gct")]) == 2
    assert "--orientation" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["amb.tsv", "bad.gct"]


def test_convert_soft_platform_to_h5ad(tmp_path: Path, capsys):
    soft = tmp_path / "GSE1_family.soft"
    blocks = [
        "^PLATFORM = GPL96\n!platform_table_begin\nID\tGene Symbol\n"
        "1007_s_at\tDDR1\n1053_at\tRFC2\n!platform_table_end\n"
    ]
    for acc, plat in [("GSM1", "GPL96"), ("GSM2", "GPL97"), ("GSM3", "GPL96")]:
        blocks.append(
            f"^SAMPLE = {acc}\n!Sample_platform_id = {plat}\n"
            "#VALUE = MAS 5.0 signal\n!sample_table_begin\nID_REF\tVALUE\n"
            "1007_s_at\t1946.9\n1053_at\t53.8\n!sample_table_end\n"
        )
    soft.write_text("".join(blocks))
    out = tmp_path / "gse1.h5ad"
    assert main(["convert", str(soft), str(out), "--platform", "GPL96"]) == 0
    assert "2 samples x 2 genes, scale linear (stated), gene ids probe" in capsys.readouterr().out
    back = read(out)
    assert list(back.sample_ids) == ["GSM1", "GSM3"]
    assert list(back.genes["Gene Symbol"]) == ["DDR1", "RFC2"]
