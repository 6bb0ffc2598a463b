"""Any microarray platform: annotation files in every published layout, on the command line
(train, predict, convert), a cached GEO platform, a series matrix naming its platform, and
a model for the landmarks an older array has (``--landmarks-from``)."""

from __future__ import annotations

import gzip
import re
import shutil

import numpy as np
import pytest
from compendium_data import other_probe, write_annotations, write_other_platform

from geneinfer import io as gio
from geneinfer.cli import main
from geneinfer.errors import ConfigError
from geneinfer.genes import clean_entrez, load_id_map, read_platform_annotation
from geneinfer.models.bundle import InferenceModel
from geneinfer.study.config import parse_config
from geneinfer.study.sources import load_source

LAYOUTS = ("geo-soft", "geo-table", "affymetrix-csv", "chip", "two-column")


@pytest.fixture(scope="module")
def platform(shared, tmp_path_factory):
    folder = tmp_path_factory.mktemp("platform")
    gct, rows = write_other_platform(folder, shared)
    return gct, rows, write_annotations(folder, rows), folder


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_reads_as_the_platform_table(shared, platform, layout):
    _, rows, files, _ = platform
    idm = load_id_map(data_dir=shared)
    table = read_platform_annotation(files[layout], symbols_to_entrez=lambda s: idm.lookup(
        s, src="symbol", dst="entrez"))
    assert table.attrs["format"] == layout
    assert list(table.index) == rows["ID"].tolist()
    expected, several = clean_entrez(rows["ENTREZ_GENE_ID"])
    # probes of several genes ("6144 /// 653737") have no gene and are marked; the symbol
    # layouts map each symbol through the gene tables (which include GPL96's own)
    assert table["ambiguous"].to_numpy().tolist() == several.tolist()
    got, want = table["entrez"].to_numpy(), expected.to_numpy()
    assert (got == want).mean() > 0.999, layout
    assert int(several.sum()) > 500 and table["entrez"].notna().sum() > 0.8 * len(rows)


def _train(args, tmp_path, name):
    out = tmp_path / name
    rc = main(["train", "--model", "ridge", "--no-dedup", "--quiet", "--out", str(out), *args])
    assert rc == 0
    return out


def _predictions(model, data_file, tmp_path, *extra):
    out = tmp_path / f"pred-{model.name}-{len(extra)}.gct"
    assert main(["predict", "--model", str(model), "--input", str(data_file), "--output",
                 str(out), "--no-progress", *extra]) == 0
    return gio.read(out)


def test_train_and_predict_with_each_layout(shared, platform, tmp_path):
    gct, _, files, _ = platform
    models = {}
    for layout in LAYOUTS:
        models[layout] = _train(["--train", str(gct), "--annotation", str(files[layout]),
                                 "--data-dir", str(shared)], tmp_path, layout)
    first = InferenceModel.load(models["geo-soft"])
    assert 700 < first.n_landmarks < 900 and first.n_targets > 6000  # a fifth of genes gone
    pred = _predictions(models["geo-soft"], gct, tmp_path, "--annotation",
                        str(files["geo-soft"]), "--data-dir", str(shared))
    assert pred.n_samples == 57 and np.isfinite(pred.values).all()
    for layout in LAYOUTS[1:]:
        other = InferenceModel.load(models[layout])
        again = _predictions(models[layout], gct, tmp_path, "--annotation",
                             str(files[layout]), "--data-dir", str(shared))
        assert np.isfinite(again.values).all()
        if layout in ("geo-table", "affymetrix-csv"):  # Entrez ids given: the same model
            assert other.landmark_ids == first.landmark_ids
            assert other.target_ids == first.target_ids
            np.testing.assert_allclose(again.values, pred.values, atol=1e-5)
        else:  # symbols through the gene tables: a few probes land elsewhere
            for a, b in ((other.landmark_ids, first.landmark_ids),
                         (other.target_ids, first.target_ids)):
                assert len(set(a) & set(b)) > 0.99 * max(len(a), len(b))


def test_centering_and_calibration_read_the_input_with_its_annotation(shared, platform,
                                                                       tmp_path):
    """--center-landmarks and --calibrate harmonise their files as prediction does: the
    probes of this platform map to genes only through --annotation."""
    gct, _, files, _ = platform
    model = _train(["--train", str(gct), "--annotation", str(files["geo-soft"]),
                    "--data-dir", str(shared)], tmp_path, "centred")
    plain = _predictions(model, gct, tmp_path, "--annotation", str(files["geo-soft"]),
                         "--data-dir", str(shared))
    centred = _predictions(model, gct, tmp_path, "--annotation", str(files["geo-soft"]),
                           "--data-dir", str(shared), "--center-landmarks")
    # the training study centred on itself: its model inputs already sit at the training mean
    np.testing.assert_allclose(centred.values, plain.values, atol=1e-3)
    calibrated = _predictions(model, gct, tmp_path, "--annotation", str(files["geo-soft"]),
                              "--data-dir", str(shared), "--calibrate", str(gct))
    assert calibrated.n_samples == 57 and np.isfinite(calibrated.values).all()


def test_annotation_that_does_not_fit_the_data_is_one_line(shared, platform, tmp_path,
                                                            capsys):
    gct, rows, _, folder = platform
    n = len(rows)
    gpl96 = shared / "genes" / "GPL96_annotation.tsv.gz"  # the right genes, other probe ids
    out = tmp_path / "model"
    rc = main(["train", "--train", str(gct), "--annotation", str(gpl96), "--out", str(out),
               "--data-dir", str(shared), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert re.search(rf"only 0 of the {n} probe ids of .*other_platform\.gct\.gz are in "
                     r"annotation .*GPL96_annotation\.tsv\.gz \(data: U95-", err), err
    assert not out.exists()
    # a partial match (a few shared control probes) is refused too, with the count
    part = folder / "partial.tsv"
    rows = [f"{other_probe(p)}\t{s}" for p, s in [("1007_s_at", "DDR1"), ("1053_at", "RFC2")]]
    part.write_text("\n".join(rows) + "\n")
    rc = main(["train", "--train", str(gct), "--annotation", str(part), "--out", str(out),
               "--data-dir", str(shared), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and f"only 2 of the {n} probe ids" in err and not out.exists()
    # without an annotation the default (GPL96) knows none of them: the way out is named
    rc = main(["train", "--train", str(gct), "--out", str(out), "--data-dir", str(shared),
               "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "--annotation FILE or --platform GPLxxx" in err


def test_cached_platform_and_series_matrix_naming_it(shared, platform, tmp_path, capsys):
    gct, _, files, _ = platform
    data_dir = tmp_path / "data"
    shutil.copytree(shared / "genes", data_dir / "genes")
    shutil.copy(files["geo-soft"], data_dir / "genes" / "GPL9999.soft")
    assert main(["data", "fetch", "geo_platform", "--accession", "GPL9999", "--data-dir",
                 str(data_dir)]) == 0
    assert capsys.readouterr().out.strip().endswith("genes/GPL9999.soft")
    by_platform = _train(["--train", str(gct), "--platform", "GPL9999", "--data-dir",
                          str(data_dir)], tmp_path, "by-platform")
    by_file = _train(["--train", str(gct), "--annotation", str(files["geo-soft"]),
                      "--data-dir", str(data_dir)], tmp_path, "by-file")
    a, b = InferenceModel.load(by_platform), InferenceModel.load(by_file)
    assert a.landmark_ids == b.landmark_ids
    np.testing.assert_allclose(a.estimator.coef_, b.estimator.coef_, atol=1e-6)
    # a series matrix names its platform: its cached annotation is used without a flag
    data = gio.read(gct)
    matrix = tmp_path / "GSE9999_series_matrix.txt.gz"
    with gzip.open(matrix, "wt") as fh:
        fh.write('!Series_title\t"bladder arrays on another platform"\n')
        fh.write("!Sample_geo_accession\t" + "\t".join(f'"{s}"' for s in data.sample_ids)
                 + "\n")
        fh.write("!Sample_platform_id\t" + "\t".join('"GPL9999"' for _ in data.sample_ids)
                 + "\n!series_matrix_table_begin\n")
        fh.write('"ID_REF"\t' + "\t".join(f'"{s}"' for s in data.sample_ids) + "\n")
        for gene, col in zip(data.gene_ids, data.values.T):
            fh.write(f'"{gene}"\t' + "\t".join(f"{v:.6g}" for v in col) + "\n")
        fh.write("!series_matrix_table_end\n")
    pred = _predictions(by_platform, matrix, tmp_path, "--data-dir", str(data_dir))
    ref = _predictions(by_platform, gct, tmp_path, "--platform", "GPL9999", "--data-dir",
                       str(data_dir))
    np.testing.assert_allclose(pred.values, ref.values, atol=2e-4)


def test_convert_carries_entrez_ids_or_writes_genes(shared, platform, tmp_path, capsys):
    gct, rows, files, _ = platform
    annotated = tmp_path / "annotated.gct"
    assert main(["convert", str(gct), str(annotated), "--annotation",
                 str(files["affymetrix-csv"]), "--data-dir", str(shared)]) == 0
    entrez, several = clean_entrez(rows["ENTREZ_GENE_ID"])
    n_genes = entrez.nunique()
    assert f"mapped {entrez.notna().sum()} of {len(rows)} probe ids to {n_genes} entrez " \
        in capsys.readouterr().out
    back = gio.read(annotated)
    assert back.gene_id_kind == "probe" and back.n_genes == len(rows)
    probe = other_probe("1053_at")
    assert str(back.genes.loc[probe, "pr_gene_id"]) == "5982"  # typed on read: an integer
    assert back.genes.loc[probe, "pr_gene_symbol"] == "RFC2"
    several = rows.loc[rows["ENTREZ_GENE_ID"].str.contains("///"), "ID"].iloc[0]
    assert str(back.genes.loc[several, "pr_gene_id"]) == "-666"
    # the converted file trains without the annotation: the same model
    with_ann = _train(["--train", str(gct), "--annotation", str(files["affymetrix-csv"]),
                       "--data-dir", str(shared)], tmp_path, "with-annotation")
    carried = _train(["--train", str(annotated), "--data-dir", str(shared)], tmp_path,
                     "carried")
    a, b = InferenceModel.load(with_ann), InferenceModel.load(carried)
    assert a.landmark_ids == b.landmark_ids and a.target_ids == b.target_ids
    np.testing.assert_allclose(a.estimator.coef_, b.estimator.coef_, atol=1e-6)
    genes = tmp_path / "genes.gctx"
    assert main(["convert", str(gct), str(genes), "--to-genes", "--annotation",
                 str(files["geo-table"]), "--data-dir", str(shared)]) == 0
    out = gio.read(genes)
    assert out.gene_id_kind == "entrez" and out.scale == "log2" and out.n_genes == n_genes


def test_model_for_the_landmarks_an_older_array_has(shared, platform, tmp_path, capsys):
    gct, _, files, _ = platform
    full = shared / "gpl96" / "bladderbatch.gct.gz"
    complete = _train(["--train", str(full), "--panel", "dgex", "--data-dir", str(shared)],
                      tmp_path, "complete")
    rc = main(["predict", "--model", str(complete), "--input", str(gct), "--output",
               str(tmp_path / "x.gctx"), "--annotation", str(files["geo-soft"]),
               "--data-dir", str(shared), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "landmark genes of the model missing" in err
    assert "geneinfer train --landmarks-from" in err and not (tmp_path / "x.gctx").exists()
    cut = _train(["--train", str(full), "--panel", "dgex", "--data-dir", str(shared),
                  "--landmarks-from", str(gct), "--landmarks-annotation",
                  str(files["geo-soft"])], tmp_path, "cut")
    a, b = InferenceModel.load(complete), InferenceModel.load(cut)
    assert set(b.landmark_ids) < set(a.landmark_ids)
    gone = set(a.landmark_ids) - set(b.landmark_ids)
    assert 80 < len(gone) < 400 and gone <= set(b.target_ids)  # inferred now
    pred = _predictions(cut, gct, tmp_path, "--annotation", str(files["geo-soft"]),
                        "--data-dir", str(shared))
    assert pred.n_samples == 57 and np.isfinite(pred.values).all()
    assert "landmarks measured in other_platform.gct.gz" in b.info["panel"]["panel"]


def test_study_source_takes_an_annotation(shared, platform, tmp_path):
    gct, rows, files, _ = platform
    raw = {"data": {"sources": [{"name": "other", "file": str(gct),
                                 "annotation": files["affymetrix-csv"].name}]},
           "models": [{"name": "ridge"}],
           "splits": {"random": {"train": 0.6, "valid": 0.2, "test": 0.2}}}
    cfg = parse_config(raw, base_dir=files["affymetrix-csv"].parent, data_dir=shared)
    data, report = load_source(cfg.sources[0], data_dir=shared)
    assert data.gene_id_kind == "entrez"
    assert data.n_genes == clean_entrez(rows["ENTREZ_GENE_ID"])[0].nunique()
    assert "HG_U95Av2.na36.annot.csv" in report.genes.via
    raw["data"]["sources"][0]["annotation"] = "missing.csv"
    with pytest.raises(ConfigError, match=r"neither a GEO platform \(GPLnnn\) nor a file"):
        parse_config(raw, base_dir=files["chip"].parent, data_dir=shared)


def test_platform_picks_a_soft_platform_and_its_own_table(shared, tmp_path):
    soft = shared / "geo" / "GSE781_family.soft.gz"
    out = _train(["--train", str(soft), "--platform", "GPL97", "--data-dir", str(shared),
                  "--panel", "l1000"], tmp_path, "gpl97")
    model = InferenceModel.load(out)
    inputs = model.info["inputs"][0]
    # HG-U133B: the GPL97 table inside the SOFT file maps the probes (nothing to fetch)
    assert inputs["via"] == "its 'ENTREZ_GENE_ID' column"
    assert inputs["n_input_genes"] == 22645  # HG-U133B's probes, not HG-U133A's 22,283
    assert model.info["n_train_samples"] == 17  # one study: scored on a share, fitted on all
