"""Small files in the layouts of public compendia, built from the real shared data with plain
h5py / pandas / gzip (independently of geneinfer's readers and writers).

* ARCHS4 gene-count ``.h5`` (v2 layout, as archs4py reads it): the 85 real GEUVADIS RNA-seq
  libraries (raw counts, 10,101 Ensembl genes) with D-GEX gene symbols, GSM ids, series
  (one sample in two series, as ARCHS4 writes "GSE3,GSE4"), single-cell probabilities and
  free-text metadata; uint32 counts genes x samples in gzip chunks of whole genes.
* GTEx gene TPM GCT 1.2 (``Name`` = versioned Ensembl id, ``Description`` = symbol) of the
  same libraries as TPM-like values, and a GTEx sample attribute table (SAMPID, SMTS, SMTSD).
* Another microarray platform: the real bladderbatch HG-U133A arrays with their probes
  renamed and a third of them left out (as an older array measures fewer genes), without
  annotation columns, and that platform's annotation (the real GPL96 rows, re-keyed) in
  every layout geneinfer reads: GEO SOFT platform record, GEO full-table download,
  Affymetrix CSV, GSEA .chip, two columns probe -> symbol.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

N_SINGLE_CELL = 5  # samples 3, 20, 37, 54, 71 are "single-cell" libraries


def geuvadis(shared: Path) -> pd.DataFrame:
    """Raw counts, genes x samples (Ensembl ids x NA ids)."""
    return pd.read_csv(shared / "rnaseq" / "geuvadis85_counts.tsv.gz", sep="\t", index_col=0)


def dgex_symbols(shared: Path) -> dict[str, str]:
    out = {}
    for name in ("dgex_map_lm.txt", "dgex_map_tg.txt"):
        t = pd.read_csv(shared / "genes" / name, sep="\t", header=None, dtype=str)
        out.update(dict(zip(t[1], t[0])))
    return out


def archs4_samples(n: int) -> pd.DataFrame:
    idx = np.arange(n)
    series = np.where(idx < 30, "GSE1", np.where(idx < 60, "GSE2", "GSE3"))
    series = series.astype(object)
    series[idx >= 75] = "GSE3,GSE4"
    return pd.DataFrame({
        "geo_accession": [f"GSM{900000 + i}" for i in idx],
        "series_id": series,
        "singlecellprobability": np.where(idx % 17 == 3, 0.93, 0.02),
        "source_name_ch1": np.where(idx < 30, "lymphoblastoid cell line",
                                    "B-lymphocyte (EBV transformed)"),
        "characteristics_ch1": [f"cell type: LCL; donor: NA{20000 + i}" for i in idx],
        "title": [f"LCL_{i}_RNA-seq" for i in idx],
    })


def write_archs4(path: Path, shared: Path, *, chunk_samples: int = 8,
                 symbol_field: str = "gene_symbol") -> pd.DataFrame:
    """The ARCHS4-layout file; returns the sample table written."""
    counts = geuvadis(shared)
    sym = dgex_symbols(shared)
    samples = archs4_samples(counts.shape[1])
    with h5py.File(path, "w") as f:
        f.create_dataset("data/expression", data=counts.to_numpy(np.uint32),
                         chunks=(counts.shape[0], chunk_samples), compression="gzip",
                         compression_opts=4)
        f.create_dataset(f"meta/genes/{symbol_field}",
                         data=np.array([sym.get(g, g).encode() for g in counts.index]))
        f.create_dataset("meta/genes/ensembl_gene",
                         data=np.array([g.encode() for g in counts.index]))
        for col in samples:
            values = samples[col].to_numpy()
            if values.dtype.kind == "f":
                f.create_dataset(f"meta/samples/{col}", data=values)
            else:
                f.create_dataset(f"meta/samples/{col}",
                                 data=np.array([str(v).encode() for v in values]))
    return samples


# --------------------------------------------------------------------------- GTEx
TISSUES = ("Cells - EBV-transformed lymphocytes", "Whole Blood", "Muscle - Skeletal",
           "Liver")


def gtex_ids(n: int) -> list[str]:
    return [f"GTEX-{1000 + i:04X}-0{i % 7}26-SM-{5000 + 7 * i:05d}" for i in range(n)]


def write_gtex(folder: Path, shared: Path) -> tuple[Path, Path]:
    """(gene TPM GCT, sample attributes) in GTEx's layout."""
    counts = geuvadis(shared)
    sym = dgex_symbols(shared)
    tpm = counts / counts.sum(axis=0) * 1e6  # per-sample scaling, like TPM
    ids = gtex_ids(counts.shape[1])
    gct = folder / "GTEx_gene_tpm.gct.gz"
    with gzip.open(gct, "wt") as fh:
        fh.write(f"#1.2\n{tpm.shape[0]}\t{tpm.shape[1]}\n")
        fh.write("Name\tDescription\t" + "\t".join(ids) + "\n")
        for k, (gene, row) in enumerate(tpm.iterrows()):
            values = "\t".join(f"{v:.4g}" for v in row.to_numpy())
            fh.write(f"{gene}.{k % 13 + 1}\t{sym.get(gene, gene)}\t{values}\n")
    attrs = folder / "GTEx_Analysis_v8_Annotations_SampleAttributesDS.txt"
    tissue = [TISSUES[i % len(TISSUES)] for i in range(len(ids))]
    table = pd.DataFrame({"SAMPID": [*ids, "GTEX-NOT-IN-GCT"],
                          "SMATSSCR": ["1"] * (len(ids) + 1),
                          "SMTS": [t.split(" - ")[0] for t in tissue] + ["Skin"],
                          "SMTSD": [*tissue, "Skin - Sun Exposed (Lower leg)"],
                          "SMRIN": [f"{7 + (i % 30) / 10:.1f}" for i in range(len(ids) + 1)]})
    table.to_csv(attrs, sep="\t", index=False)
    return gct, attrs


# --------------------------------------------------------------------------- platforms
def gpl96_rows(shared: Path) -> pd.DataFrame:
    """The real GPL96 annotation rows (ID, Gene Symbol, ENTREZ_GENE_ID)."""
    return pd.read_csv(shared / "genes" / "GPL96_annotation.tsv.gz", sep="\t", dtype=str,
                       keep_default_na=False)


def other_probe(probe: str) -> str:
    return f"U95-{probe}"


def write_other_platform(folder: Path, shared: Path, *, keep_share: float = 0.8
                         ) -> tuple[Path, pd.DataFrame]:
    """bladderbatch on 'another platform': probes renamed, a fifth of the genes absent (as
    HG-U95Av2 lacks about a fifth of the D-GEX landmarks), no annotation columns. Returns
    the GCT and the platform's annotation rows (re-keyed GPL96 rows of its probes)."""
    path = shared / "gpl96" / "bladderbatch.gct.gz"
    with gzip.open(path, "rt") as fh:
        lines = fh.read().splitlines()
    _, _, n_rmeta, n_cmeta = (int(x) for x in lines[1].split("\t"))
    ann = gpl96_rows(shared)
    rng = np.random.default_rng(11)
    genes = ann["ENTREZ_GENE_ID"].unique()
    kept_genes = set(rng.choice(genes, int(keep_share * len(genes)), replace=False))
    keep = set(ann.loc[ann["ENTREZ_GENE_ID"].isin(kept_genes), "ID"])
    body = [ln.split("\t") for ln in lines[3 + n_cmeta:]]
    body = [[other_probe(f[0]), *f[1 + n_rmeta:]] for f in body if f[0] in keep]
    header = lines[2].split("\t")
    col_meta = [ln.split("\t") for ln in lines[3:3 + n_cmeta]]
    out = folder / "other_platform.gct.gz"
    with gzip.open(out, "wt") as fh:
        fh.write(f"#1.3\n{len(body)}\t{len(header) - 1 - n_rmeta}\t0\t{n_cmeta}\n")
        fh.write("\t".join([header[0], *header[1 + n_rmeta:]]) + "\n")
        for row in col_meta:
            fh.write("\t".join([row[0], *row[1 + n_rmeta:]]) + "\n")
        for f in body:
            fh.write("\t".join(f) + "\n")
    rows = ann[ann["ID"].isin(keep)].copy()
    rows["ID"] = rows["ID"].map(other_probe)
    return out, rows


def write_annotations(folder: Path, rows: pd.DataFrame) -> dict[str, Path]:
    """The platform's annotation in every layout; keys name the layout."""
    ident, sym, ent = rows["ID"].tolist(), rows["Gene Symbol"].tolist(), \
        rows["ENTREZ_GENE_ID"].tolist()
    out = {}
    soft = folder / "GPL9999.soft"
    with open(soft, "w") as fh:
        fh.write("^PLATFORM = GPL9999\n!Platform_title = [HG_U95Av2] like array\n"
                 "!Platform_technology = in situ oligonucleotide\n"
                 "#ID = Affymetrix Probe Set ID\n#Gene Symbol = A gene symbol\n"
                 "#ENTREZ_GENE_ID = Entrez Gene identifier\n!platform_table_begin\n")
        fh.write("ID\tGB_ACC\tGene Title\tGene Symbol\tENTREZ_GENE_ID\n")
        for i, s, e in zip(ident, sym, ent):
            fh.write(f"{i}\tNM_{100000 + len(i)}\ttitle of {s}\t{s}\t{e}\n")
        fh.write("!platform_table_end\n")
    out["geo-soft"] = soft
    full = folder / "GPL9999-full.txt"
    with open(full, "w") as fh:
        fh.write("#ID = Affymetrix Probe Set ID\n#Gene Symbol = A gene symbol\n"
                 "#ENTREZ_GENE_ID = Entrez Gene identifier\n")
        fh.write("ID\tSPOT_ID\tGene Symbol\tENTREZ_GENE_ID\n")
        for i, s, e in zip(ident, sym, ent):
            fh.write(f"{i}\t\t{s}\t{e}\n")
    out["geo-table"] = full
    csv = folder / "HG_U95Av2.na36.annot.csv"
    with open(csv, "w") as fh:
        fh.write('#%create_date=Tue Sep 20 11:05:00 PDT 2016\n#%chip_type=HG_U95Av2\n'
                 '#%genome-version=hg19\n')
        fh.write('"Probe Set ID","GeneChip Array","Gene Title","Gene Symbol","Entrez Gene"\n')
        for i, s, e in zip(ident, sym, ent):
            s2 = s if s else "---"
            e2 = e if e else "---"
            fh.write(f'"{i}","Human Genome HG-U95Av2","title, of {s2}","{s2}","{e2}"\n')
    out["affymetrix-csv"] = csv
    chip = folder / "HG_U95Av2.chip"
    with open(chip, "w") as fh:
        fh.write("Probe Set ID\tGene Symbol\tGene Title\n")
        for i, s in zip(ident, sym):
            fh.write(f"{i}\t{s if s else '---'}\ttitle of {s}\n")
    out["chip"] = chip
    two = folder / "probe_to_symbol.tsv"
    with open(two, "w") as fh:
        for i, s in zip(ident, sym):
            fh.write(f"{i}\t{s}\n")
    out["two-column"] = two
    return out
