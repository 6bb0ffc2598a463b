"""The data-source registry: real URLs, accessions, local folder and cache look-up."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from geneinfer.cli import main
from geneinfer.errors import ConfigError, DataUnavailableError
from geneinfer.public_data import (
    fetch,
    geo_stub,
    get_source,
    list_sources,
    locate,
)


def test_geo_folders_follow_ncbi_layout():
    assert geo_stub("GSE92742") == "GSE92nnn"
    assert geo_stub("GSE781") == "GSEnnn"
    assert geo_stub("GPL96") == "GPLnnn"
    assert geo_stub("GSE1133") == "GSE1nnn"
    with pytest.raises(ConfigError):
        geo_stub("E-MTAB-3732")


def test_parametrised_sources_build_real_urls():
    soft = get_source("geo_soft").resolve("GSE781")
    assert soft.url == ("https://ftp.ncbi.nlm.nih.gov/geo/series/GSEnnn/GSE781/soft/"
                        "GSE781_family.soft.gz")
    matrix = get_source("geo_matrix").resolve("GSE92742")
    assert matrix.url.endswith("/geo/series/GSE92nnn/GSE92742/matrix/"
                               "GSE92742_series_matrix.txt.gz")
    ae = get_source("arrayexpress").resolve("E-MTAB-3732")
    assert ae.url == "https://www.ebi.ac.uk/biostudies/files/E-MTAB-3732/E-MTAB-3732.sdrf.txt"
    f = get_source("arrayexpress").resolve("E-MTAB-3732/E-MTAB-3732.idf.txt")
    assert f.url.endswith("/E-MTAB-3732/E-MTAB-3732.idf.txt")
    annot = get_source("geo_platform_annot").resolve("GPL570")
    assert annot.url.endswith("/geo/platforms/GPLnnn/GPL570/annot/GPL570.annot.gz")
    with pytest.raises(ConfigError, match="needs an accession"):
        get_source("geo_soft").resolve(None)
    with pytest.raises(ConfigError, match="does not fit"):
        get_source("geo_soft").resolve("GPL96")
    with pytest.raises(ConfigError, match="takes no accession"):
        get_source("lincs_gene_info").resolve("GSE1")
    with pytest.raises(ConfigError, match="unknown data source"):
        get_source("nope")


def test_registry_entries_are_well_formed():
    names = [s.name for s in list_sources()]
    assert len(names) == len(set(names))
    for need in ("lincs_gene_info", "lincs_level3", "gpl96_annotation", "gtex_gene_tpm",
                 "geuvadis_counts", "archs4_human_gene", "hgnc_complete_set", "geo_soft",
                 "geo_matrix", "arrayexpress"):
        assert need in names
    for s in list_sources():
        if s.url:
            assert re.match(r"https://[a-z0-9.-]+\.(gov|org|com|uk|cloud)/", s.url), s.url
        assert s.license and s.homepage.startswith("https://")
        for digest in (s.sha256, s.md5):
            assert digest is None or re.fullmatch(r"[0-9a-f]{32}|[0-9a-f]{64}", digest)


def test_local_only_sources_are_all_in_the_shared_folder(shared):
    for s in list_sources():
        if s.url is None:
            path = locate(s.name, data_dir=shared)
            assert path is not None and path.is_file(), s.name
    assert locate("lincs_gene_info", data_dir=shared).name == "GSE92742_Broad_LINCS_gene_info.txt"
    assert locate("geo_soft", accession="GSE781", data_dir=shared).name == "GSE781_family.soft.gz"


def test_cache_is_used_and_offline_error_names_url_and_destination(tmp_path, monkeypatch):
    monkeypatch.setenv("GENEINFER_DATA_DIR", "")
    monkeypatch.setenv("GENEINFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GENEINFER_OFFLINE", "1")
    with pytest.raises(DataUnavailableError) as err:
        fetch("hgnc_complete_set")
    msg = str(err.value)
    dest = tmp_path / "cache" / "hgnc_complete_set" / "hgnc_complete_set.txt"
    assert "https://storage.googleapis.com/public-download-files/hgnc/tsv/tsv/" in msg
    assert str(dest) in msg and "--data-dir" in msg
    dest.parent.mkdir(parents=True)
    dest.write_text("hgnc_id\tsymbol\n")
    assert fetch("hgnc_complete_set") == dest
    with pytest.raises(DataUnavailableError, match=r"github.com/uci-cbcl/D-GEX"):
        fetch("dgex_map_lm")


def test_data_command_list_path_and_errors(shared, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GENEINFER_CACHE", str(tmp_path / "cache"))
    assert main(["data", "list", "--data-dir", str(shared)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^dgex_map_lm\s+local\s", out, re.M)
    assert re.search(r"^geo_soft\s+by accession", out, re.M)
    assert main(["data", "path", "geo_soft", "--accession", "GSE781",
                 "--data-dir", str(shared)]) == 0
    assert Path(capsys.readouterr().out.strip()) == shared / "geo" / "GSE781_family.soft.gz"
    assert main(["data", "path", "dgex_map_tg", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("geneinfer: error: data source 'dgex_map_tg' is not available")
    assert err.count("\n") == 1
    assert main(["data", "fetch", "geo_soft", "--accession", "E-MTAB-1"]) == 2
    assert "does not fit" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "accession"), [
    ("geo_soft", "GSE١٢٣"),  # Arabic-Indic digits: \d would match them
    ("geo_platform_annot", "GPL٩٦"),
    ("geo_suppl", "GSE1/.."),
    ("geo_suppl", "GSE92742/../../etc/passwd"),
    ("geo_suppl", "GSE1/.hidden"),
    ("geo_suppl", "GSE1/a..b"),
    ("geo_suppl", "GSE1/a\\b"),
    ("arrayexpress", "E-MTAB-1/.."),
    ("arrayexpress", "E-MTAB-١"),
])
def test_accessions_are_ascii_plain_names(name, accession):
    with pytest.raises(ConfigError) as err:
        get_source(name).resolve(accession)
    assert "\n" not in str(err.value) and repr(accession) in str(err.value)


def test_unsafe_fields_are_refused_even_where_a_registered_pattern_allows_them():
    from geneinfer.public_data import Source, register_source, unregister_source

    register_source(Source("test_loose", "a loose pattern", "https://example.org/{file}",
                           "{accession}/{file}", license="x", homepage="https://example.org",
                           accession_pattern=r"(?P<accession>X\d+)/(?P<file>.+)"))
    try:
        assert get_source("test_loose").resolve("X1/a.txt").filename == "X1/a.txt"
        for bad in ("X1/../../etc/passwd", "X1/..", "X١/a.txt"):
            with pytest.raises(ConfigError):
                get_source("test_loose").resolve(bad)
    finally:
        unregister_source("test_loose")


def test_cli_reports_a_bad_accession_on_one_line(capsys):
    assert main(["data", "fetch", "geo_suppl", "--accession", "GSE1/.."]) == 2
    err = capsys.readouterr().err
    assert err.startswith("geneinfer: error: accession 'GSE1/..'") and err.count("\n") == 1
