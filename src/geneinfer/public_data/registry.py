"""Registry of public data sets: where to download them and where a local copy may live.

Each :class:`Source` names one file. Fixed entries (the LINCS gene table, GTEx, ARCHS4, ...)
have one URL; parametrised entries (any GEO series, platform or ArrayExpress study) take an
``accession`` that is substituted into their URL and file name. ``local_paths`` are paths
relative to a data folder laid out like the project's ``shared/data`` (``genes/...``,
``gpl96/...``): a file found there is used instead of downloading it.

Sizes and checksums
-------------------
``sha256``, ``md5`` and ``size`` are recorded only where the publisher states them, and
:func:`geneinfer.public_data.download` checks every one that is given. None of the fixed
entries has one, for these reasons (searched for issue 13):

* GEO (``ftp.ncbi.nlm.nih.gov/geo``: the LINCS GSE92742 files, GPL annotations, GSE781 and
  every parametrised GEO entry) publishes no checksums, and its pages round sizes ("1.2 Gb").
  The one exception, LINCS's own ``GSE92742_SHA512SUMS.txt.gz`` next to the GSE92742 files,
  is a SHA-512 list whose contents were not available to copy from a published source.
* ARCHS4 ``human_gene_v2.latest.h5`` is a moving target: the same URL serves each new
  release (third-party records list 61,899,310,543 and 62,257,385,524 bytes for it), so a
  fixed size or checksum would reject every future release.
* The HGNC complete set is regenerated regularly under one URL; GEUVADIS (BioStudies)
  publishes no checksum for ``GD660.GeneQuantCount.txt.gz``.
* GTEx and HGNC are served from Google Cloud Storage, which sends the file's MD5 in an
  ``X-Goog-Hash`` header with every download; that server-declared MD5 is checked instead.

Without a checksum a download is accepted only when its length is certain (see
:mod:`geneinfer.public_data.download`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from geneinfer.errors import ConfigError

GEO_FTP = "https://ftp.ncbi.nlm.nih.gov/geo"
BIOSTUDIES = "https://www.ebi.ac.uk/biostudies/files"


@dataclass(frozen=True)
class ResolvedSource:
    """A :class:`Source` with its accession filled in."""

    name: str
    url: str | None
    filename: str
    local_paths: tuple[str, ...]
    sha256: str | None
    md5: str | None
    size: int | None
    homepage: str
    embedded: str | None = None


@dataclass(frozen=True)
class Source:
    """One public data file.

    Parameters
    ----------
    name
        Registry key, e.g. ``"lincs_gene_info"``.
    description
        One line for ``geneinfer data list``.
    url
        Download URL; ``None`` for files that can only be supplied locally. May contain
        ``{accession}``, ``{stub}`` (GEO's ``GSE92nnn`` folder) and ``{file}`` placeholders.
    filename
        Name of the cached file (placeholders allowed).
    local_paths
        Candidate paths inside a data folder (``--data-dir``), first existing one wins.
    sha256, md5, size
        Checksum / size in bytes as the publisher states them (hex digests), verified after
        download when given; ``None`` where nothing is published (see the module notes).
    license, homepage
        Terms of use and the page describing the data.
    accession_pattern
        Regular expression an accession must match; set only for parametrised entries.
    embedded
        File name of a copy shipped inside the package (``geneinfer/_embedded``), used when
        neither the data folder nor the cache has the file.
    """

    name: str
    description: str
    url: str | None
    filename: str
    local_paths: tuple[str, ...] = ()
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None
    license: str = ""
    homepage: str = ""
    accession_pattern: str | None = None
    default_file: str | None = None
    embedded: str | None = None

    @property
    def parametrised(self) -> bool:
        return self.accession_pattern is not None

    def _match(self, accession: str) -> dict[str, str]:
        """The named groups of ``accession_pattern``, each a safe path component.

        ``re.ASCII`` keeps ``\\d`` and ``\\w`` in any registered pattern to ASCII (``GSE١٢٣``
        must not match); the field check refuses ``..``, separators and hidden names even
        where a pattern lets them through, because the fields become URL and cache paths.
        """
        m = re.fullmatch(self.accession_pattern or "", accession.strip(), flags=re.ASCII)
        if not m:
            raise ConfigError(
                f"accession {accession!r} does not fit data source {self.name!r} "
                f"(expected e.g. {_EXAMPLES.get(self.name, '?')})"
            )
        fields = {k: v for k, v in m.groupdict().items() if v is not None}
        for value in fields.values():
            if not _safe_component(value):
                raise ConfigError(
                    f"accession {accession!r} of data source {self.name!r} is not a plain "
                    "file name: use ASCII letters, digits, '.', '_' and '-' only, without "
                    "'..', '/' or a leading '.'"
                )
        return fields

    def resolve(self, accession: str | None = None) -> ResolvedSource:
        """Fill in the accession; raise :class:`ConfigError` if it is missing or malformed."""
        fields: dict[str, str] = {}
        if self.parametrised:
            if not accession:
                raise ConfigError(
                    f"data source {self.name!r} needs an accession "
                    f"(--accession, e.g. {_EXAMPLES.get(self.name, '?')})"
                )
            fields = self._match(accession)
            acc = fields["accession"]
            fields.setdefault("file", (self.default_file or "").format(accession=acc))
            fields["stub"] = geo_stub(acc) if acc[:3] in ("GSE", "GPL", "GSM", "GDS") else ""
        elif accession:
            raise ConfigError(f"data source {self.name!r} takes no accession (got {accession!r})")

        def fill(text: str) -> str:
            return text.format(**fields) if fields else text

        return ResolvedSource(
            name=self.name,
            url=fill(self.url) if self.url else None,
            filename=fill(self.filename),
            local_paths=tuple(fill(p) for p in self.local_paths),
            sha256=self.sha256,
            md5=self.md5,
            size=self.size,
            homepage=fill(self.homepage),
            embedded=self.embedded,
        )


_SAFE_COMPONENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", flags=re.ASCII)


def _safe_component(value: str) -> bool:
    """True for one plain ASCII path component: no separator, no ``..``, not hidden."""
    return bool(_SAFE_COMPONENT.fullmatch(value)) and ".." not in value


def geo_stub(accession: str) -> str:
    """GEO's folder for an accession: the number with its last three digits replaced by
    ``nnn`` (``GSE92742`` -> ``GSE92nnn``, ``GSE781`` -> ``GSEnnn``, ``GPL96`` -> ``GPLnnn``)."""
    m = re.fullmatch(r"(GSE|GPL|GSM|GDS)([0-9]+)", accession, flags=re.ASCII)
    if not m:
        raise ConfigError(f"not a GEO accession: {accession!r} (expected e.g. GSE781 or GPL96)")
    prefix, digits = m.groups()
    return f"{prefix}{digits[:-3]}nnn"


# Accession patterns spell digits [0-9]: \d also matches other scripts' digits (GSE١٢٣).
# A {file} is one plain file name: it must not start with "." (so neither "." nor "..").
_GSE = r"(?P<accession>GSE[0-9]+)"
_FILE = r"(?P<file>[A-Za-z0-9_-][A-Za-z0-9._-]*)"
_LINCS_SUPPL = f"{GEO_FTP}/series/GSE92nnn/GSE92742/suppl"
_EXAMPLES = {
    "geo_soft": "GSE781",
    "geo_matrix": "GSE781",
    "geo_suppl": "GSE92742/GSE92742_Broad_LINCS_gene_info.txt.gz",
    "geo_platform_annot": "GPL96",
    "geo_platform": "GPL570",
    "arrayexpress": "E-MTAB-3732 or E-MTAB-3732/<file name>",
}

_SOURCES: list[Source] = [
    # ---------------------------------------------------------------- parametrised
    Source(
        "geo_soft",
        "GEO series family SOFT file (samples + platform tables), by GSE accession",
        f"{GEO_FTP}/series/{{stub}}/{{accession}}/soft/{{accession}}_family.soft.gz",
        "{accession}_family.soft.gz",
        local_paths=("geo/{accession}_family.soft.gz",),
        license="GEO public data (NCBI)",
        homepage="https://www.ncbi.nlm.nih.gov/geo/query/acc.cgi?acc={accession}",
        accession_pattern=_GSE,
    ),
    Source(
        "geo_matrix",
        "GEO series matrix file (one platform's processed values), by GSE accession",
        f"{GEO_FTP}/series/{{stub}}/{{accession}}/matrix/{{accession}}_series_matrix.txt.gz",
        "{accession}_series_matrix.txt.gz",
        local_paths=("geo/{accession}_series_matrix.txt.gz",),
        license="GEO public data (NCBI)",
        homepage="https://www.ncbi.nlm.nih.gov/geo/query/acc.cgi?acc={accession}",
        accession_pattern=_GSE,
    ),
    Source(
        "geo_suppl",
        "a supplementary file of a GEO series, as GSE/FILE",
        f"{GEO_FTP}/series/{{stub}}/{{accession}}/suppl/{{file}}",
        "{accession}/{file}",
        local_paths=("geo/{file}",),
        license="GEO public data (NCBI)",
        homepage="https://www.ncbi.nlm.nih.gov/geo/query/acc.cgi?acc={accession}",
        accession_pattern=rf"{_GSE}/{_FILE}",
    ),
    Source(
        "geo_platform_annot",
        "GEO platform annotation (probe -> gene symbol, Entrez id), by GPL accession",
        f"{GEO_FTP}/platforms/{{stub}}/{{accession}}/annot/{{accession}}.annot.gz",
        "{accession}.annot.gz",
        local_paths=("genes/{accession}.annot.gz", "genes/{accession}_annotation.tsv.gz"),
        license="GEO public data (NCBI)",
        homepage="https://www.ncbi.nlm.nih.gov/geo/query/acc.cgi?acc={accession}",
        accession_pattern=r"(?P<accession>GPL[0-9]+)",
    ),
    # GEO's platform page in SOFT text with the full data table (acc.cgi "view=full"): exists
    # for every platform, unlike the .annot.gz files, which GEO makes only for platforms of
    # its curated data sets (GDS).
    Source(
        "geo_platform",
        "GEO platform table in full (SOFT: ID, symbols, Entrez ids as submitted), by GPL",
        "https://www.ncbi.nlm.nih.gov/geo/query/acc.cgi?acc={accession}&targ=self"
        "&form=text&view=full",
        "{accession}.soft",
        local_paths=("genes/{accession}.soft", "genes/{accession}.soft.gz",
                     "geo/{accession}.soft", "geo/{accession}.soft.gz"),
        license="GEO public data (NCBI)",
        homepage="https://www.ncbi.nlm.nih.gov/geo/query/acc.cgi?acc={accession}",
        accession_pattern=r"(?P<accession>GPL[0-9]+)",
    ),
    Source(
        "arrayexpress",
        "an ArrayExpress/BioStudies experiment: its SDRF sample table, or ACC/FILE",
        f"{BIOSTUDIES}/{{accession}}/{{file}}",
        "{accession}/{file}",
        local_paths=("arrayexpress/{accession}/{file}",),
        license="EMBL-EBI terms of use (public data)",
        homepage="https://www.ebi.ac.uk/biostudies/arrayexpress/studies/{accession}",
        accession_pattern=rf"(?P<accession>E-[A-Z]{{4}}-[0-9]+)(?:/{_FILE})?",
        default_file="{accession}.sdrf.txt",
    ),
    # ---------------------------------------------------------------- gene tables
    # GSE92742 (LINCS) files: GEO states no checksum; LINCS's GSE92742_SHA512SUMS.txt.gz in
    # the same folder lists SHA-512s, but its contents were not available from any source.
    Source(
        "lincs_gene_info",
        "LINCS L1000 gene table (GSE92742): 12,328 genes, pr_is_lm = 978 landmarks",
        f"{_LINCS_SUPPL}/GSE92742_Broad_LINCS_gene_info.txt.gz",
        "GSE92742_Broad_LINCS_gene_info.txt.gz",
        local_paths=(
            "genes/GSE92742_Broad_LINCS_gene_info.txt",
            "genes/GSE92742_Broad_LINCS_gene_info.txt.gz",
        ),
        license="GEO public data (LINCS / Broad Institute)",
        homepage="https://www.ncbi.nlm.nih.gov/geo/query/acc.cgi?acc=GSE92742",
    ),
    Source(
        "gpl96_annotation",
        "HG-U133A (GPL96) probe annotation: probe -> gene symbol, Entrez id",
        f"{GEO_FTP}/platforms/GPLnnn/GPL96/annot/GPL96.annot.gz",
        "GPL96.annot.gz",
        local_paths=("genes/GPL96_annotation.tsv.gz", "genes/GPL96.annot.gz"),
        license="GEO public data (NCBI)",
        homepage="https://www.ncbi.nlm.nih.gov/geo/query/acc.cgi?acc=GPL96",
        embedded="GPL96_annotation.tsv.gz",
    ),
    Source(
        "l1000_genes",
        "ids and symbols of the 978 L1000 landmarks and the LINCS 'best inferred' genes "
        "(shipped with geneinfer; a subset of lincs_gene_info)",
        None,
        "l1000_genes.tsv.gz",
        license="GEO public data (LINCS / Broad Institute)",
        homepage="https://www.ncbi.nlm.nih.gov/geo/query/acc.cgi?acc=GSE92742",
        embedded="l1000_genes.tsv.gz",
    ),
    Source(
        "dgex_map_lm",
        "D-GEX landmark genes (943): symbol, Ensembl id, HG-U133A probes",
        None,
        "dgex_map_lm.txt",
        local_paths=("genes/dgex_map_lm.txt",),
        license="GPL-2 (D-GEX, Chen et al. 2016)",
        homepage="https://github.com/uci-cbcl/D-GEX",
    ),
    Source(
        "dgex_map_tg",
        "D-GEX target genes (9,520): symbol, Ensembl id, HG-U133A probes",
        None,
        "dgex_map_tg.txt",
        local_paths=("genes/dgex_map_tg.txt",),
        license="GPL-2 (D-GEX, Chen et al. 2016)",
        homepage="https://github.com/uci-cbcl/D-GEX",
    ),
    Source(
        "hgnc_complete_set",
        "HGNC complete set: approved symbols with Entrez and Ensembl ids",
        "https://storage.googleapis.com/public-download-files/hgnc/tsv/tsv/hgnc_complete_set.txt",
        "hgnc_complete_set.txt",
        local_paths=("genes/hgnc_complete_set.txt",),
        license="HGNC data: freely available (genenames.org)",
        homepage="https://www.genenames.org/download/",
    ),
    # ---------------------------------------------------------------- compendia
    Source(
        "lincs_level3",
        "LINCS L1000 level-3 GCTX (GSE92742): 1,319,138 profiles x 12,328 genes (~50 GB)",
        f"{_LINCS_SUPPL}/GSE92742_Broad_LINCS_Level3_INF_mlr12k_n1319138x12328.gctx.gz",
        "GSE92742_Broad_LINCS_Level3_INF_mlr12k_n1319138x12328.gctx.gz",
        local_paths=(
            "l1000/GSE92742_Broad_LINCS_Level3_INF_mlr12k_n1319138x12328.gctx",
            "l1000/GSE92742_Broad_LINCS_Level3_INF_mlr12k_n1319138x12328.gctx.gz",
        ),
        license="GEO public data (LINCS / Broad Institute)",
        homepage="https://www.ncbi.nlm.nih.gov/geo/query/acc.cgi?acc=GSE92742",
    ),
    Source(
        "lincs_inst_info",
        "LINCS L1000 profile (instance) metadata for the level-3 GCTX (GSE92742)",
        f"{_LINCS_SUPPL}/GSE92742_Broad_LINCS_inst_info.txt.gz",
        "GSE92742_Broad_LINCS_inst_info.txt.gz",
        local_paths=("l1000/GSE92742_Broad_LINCS_inst_info.txt.gz",),
        license="GEO public data (LINCS / Broad Institute)",
        homepage="https://www.ncbi.nlm.nih.gov/geo/query/acc.cgi?acc=GSE92742",
    ),
    Source(
        "gtex_gene_tpm",
        "GTEx v8 gene TPM GCT: 17,382 samples x 56,200 Ensembl genes (~1.5 GB)",
        "https://storage.googleapis.com/adult-gtex/bulk-gex/v8/rna-seq/"
        "GTEx_Analysis_2017-06-05_v8_RNASeQCv1.1.9_gene_tpm.gct.gz",
        "GTEx_Analysis_2017-06-05_v8_RNASeQCv1.1.9_gene_tpm.gct.gz",
        local_paths=("rnaseq/GTEx_Analysis_2017-06-05_v8_RNASeQCv1.1.9_gene_tpm.gct.gz",),
        license="GTEx open access data (dbGaP phs000424)",
        homepage="https://gtexportal.org/home/downloads/adult-gtex/bulk_tissue_expression",
    ),
    Source(
        "gtex_sample_attributes",
        "GTEx v8 sample attributes (SAMPID -> SMTS tissue, SMTSD detailed tissue, SMRIN, ...)",
        "https://storage.googleapis.com/adult-gtex/annotations/v8/metadata-files/"
        "GTEx_Analysis_v8_Annotations_SampleAttributesDS.txt",
        "GTEx_Analysis_v8_Annotations_SampleAttributesDS.txt",
        local_paths=("rnaseq/GTEx_Analysis_v8_Annotations_SampleAttributesDS.txt",),
        license="GTEx open access data (dbGaP phs000424)",
        homepage="https://gtexportal.org/home/downloads/adult-gtex/metadata",
    ),
    Source(
        "geuvadis_counts",
        "GEUVADIS (E-GEUV-1) gene read counts: 660 LCL RNA-seq libraries, Ensembl genes",
        f"{BIOSTUDIES}/E-GEUV-1/E-GEUV-1/analysis_results/GD660.GeneQuantCount.txt.gz",
        "GD660.GeneQuantCount.txt.gz",
        local_paths=("rnaseq/GD660.GeneQuantCount.txt.gz",),
        license="EMBL-EBI terms of use (public data)",
        homepage="https://www.ebi.ac.uk/biostudies/arrayexpress/studies/E-GEUV-1",
    ),
    # No size or checksum: this URL serves each new ARCHS4 release. Two third-party records
    # of it disagree (61,899,310,543 bytes in a data-resource catalogue, 62,257,385,524 in a
    # download script), which is what a fixed value here would do to every user.
    Source(
        "archs4_human_gene",
        "ARCHS4 human gene-level counts H5 (all GEO/SRA human RNA-seq, ~40 GB)",
        "https://s3.dev.maayanlab.cloud/archs4/files/human_gene_v2.latest.h5",
        "human_gene_v2.latest.h5",
        local_paths=("rnaseq/human_gene_v2.latest.h5",),
        license="ARCHS4 (Ma'ayan Lab), free for research",
        homepage="https://maayanlab.cloud/archs4/download.html",
    ),
    # ---------------------------------------------------------------- local copies only
    Source(
        "nakayama",
        "Nakayama sarcoma set: 105 HG-U133A arrays, MAS5 linear (datamicroarray)",
        None,
        "nakayama.gct.gz",
        local_paths=("gpl96/nakayama.gct.gz",),
        license="MIT (ramhiser/datamicroarray)",
        homepage="https://github.com/ramhiser/datamicroarray",
    ),
    Source(
        "borovecki",
        "Borovecki Huntington's set: 31 HG-U133A arrays, MAS5 linear (datamicroarray)",
        None,
        "borovecki.gct.gz",
        local_paths=("gpl96/borovecki.gct.gz",),
        license="MIT (ramhiser/datamicroarray)",
        homepage="https://github.com/ramhiser/datamicroarray",
    ),
    Source(
        "bladderbatch",
        "bladderbatch: 57 HG-U133A bladder arrays, RMA log2 (Bioconductor bladderbatch)",
        None,
        "bladderbatch.gct.gz",
        local_paths=("gpl96/bladderbatch.gct.gz",),
        license="Artistic-2.0 (Bioconductor bladderbatch)",
        homepage="https://bioconductor.org/packages/bladderbatch",
    ),
    Source(
        "gse781",
        "GSE781 family SOFT: 17 GPL96 + 17 GPL97 kidney arrays, MAS5 (GEOquery extdata)",
        f"{GEO_FTP}/series/GSEnnn/GSE781/soft/GSE781_family.soft.gz",
        "GSE781_family.soft.gz",
        local_paths=("geo/GSE781_family.soft.gz",),
        license="GEO public data (NCBI)",
        homepage="https://www.ncbi.nlm.nih.gov/geo/query/acc.cgi?acc=GSE781",
    ),
    Source(
        "geuvadis85",
        "85 GEUVADIS LCL RNA-seq samples, raw counts, 10,101 Ensembl genes (degreport)",
        None,
        "geuvadis85_counts.tsv.gz",
        local_paths=("rnaseq/geuvadis85_counts.tsv.gz",),
        license="MIT (Bioconductor DEGreport)",
        homepage="https://bioconductor.org/packages/DEGreport",
    ),
    Source(
        "geuvadis85_samples",
        "sample table of the 85 GEUVADIS samples (library size, sex)",
        None,
        "geuvadis85_samples.tsv",
        local_paths=("rnaseq/geuvadis85_samples.tsv",),
        license="MIT (Bioconductor DEGreport)",
        homepage="https://bioconductor.org/packages/DEGreport",
    ),
    Source(
        "test_l1000",
        "real L1000 level-3 GCT (377 A375 profiles x 978 landmarks, cmapPy test data)",
        None,
        "test_l1000.gct",
        local_paths=("l1000/test_l1000.gct",),
        license="BSD-3 (cmap/cmapPy)",
        homepage="https://github.com/cmap/cmapPy",
    ),
]

_REGISTRY: dict[str, Source] = {s.name: s for s in _SOURCES}


def register_source(source: Source, *, replace: bool = False) -> None:
    """Add a data source (e.g. a mirror or a private file) to the registry."""
    if source.name in _REGISTRY and not replace:
        raise ConfigError(f"data source {source.name!r} is already registered")
    _REGISTRY[source.name] = source


def unregister_source(name: str) -> None:
    """Remove a data source added with :func:`register_source`."""
    _REGISTRY.pop(name, None)


def get_source(name: str) -> Source:
    """The registered :class:`Source` called ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigError(f"unknown data source {name!r}; known sources: {known}") from None


def list_sources() -> list[Source]:
    """All registered sources, in registry order."""
    return list(_REGISTRY.values())
