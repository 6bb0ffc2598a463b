"""Build the embedded default dataset in ``src/geneinfer/_embedded/`` from the shared data.

Only files that the data README allows to embed are used: bladderbatch (Artistic-2.0), the
17 GPL96 samples of GSE781 (GEO public data), the GPL96 annotation (GEO) and the 85 GEUVADIS
samples (MIT). Microarray probes are collapsed to Entrez genes with
``geneinfer.genes.collapse_probes`` (mean of a gene's probes) on float32 values parsed from
the text files, exactly as ``geneinfer`` does when it reads the originals.

Usage::

    python scripts/build_embedded.py [--data-dir ../shared/data]

Each set becomes ``<name>.npz`` (``values`` float32 samples x genes, or int32 counts;
``gene_ids``, ``sample_ids``, ``gene__<col>`` and ``sample__<col>`` metadata arrays; no
pickles) plus an entry in ``manifest.json`` (scale, id kind, provenance, license, sha256).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from geneinfer.expression import ExpressionData  # noqa: E402
from geneinfer.genes.ids import read_lincs_gene_info  # noqa: E402
from geneinfer.genes.mapping import collapse_probes  # noqa: E402
from geneinfer.genes.probes import read_platform_annotation  # noqa: E402
from geneinfer.utils.files import atomic_path  # noqa: E402

OUT = ROOT / "src" / "geneinfer" / "_embedded"

PROVENANCE = {
    "bladderbatch": {
        "source_file": "gpl96/bladderbatch.gct.gz",
        "origin": "Bioconductor package bladderbatch (Debian r-bioc-bladderbatch): 57 HG-U133A "
                  "bladder arrays (GEO GSM71019...), RMA log2; Dyrskjot et al. 2004",
        "license": "Artistic-2.0",
    },
    "gse781": {
        "source_file": "geo/GSE781_family.soft.gz",
        "origin": "GEO series GSE781 (Lenburg et al. 2003, renal clear cell carcinoma and "
                  "normal kidney), SOFT family file from Bioconductor GEOquery extdata; the 17 "
                  "GPL96 (HG-U133A) samples, MAS5 values",
        "license": "GEO public data (NCBI)",
    },
    "geuvadis": {
        "source_file": "rnaseq/geuvadis85_counts.tsv.gz",
        "origin": "Bioconductor package DEGreport (Debian r-bioc-degreport) humanGender: 85 "
                  "GEUVADIS / 1000 Genomes lymphoblastoid RNA-seq samples, raw counts; "
                  "Lappalainen et al. 2013",
        "license": "MIT",
    },
    "l1000_genes": {
        "source_file": "genes/GSE92742_Broad_LINCS_gene_info.txt",
        "origin": "LINCS GSE92742 gene table: the ids and symbols of the 978 L1000 landmark "
                  "genes (pr_is_lm) and the 'best inferred' genes (pr_is_bing) only",
        "license": "GEO public data (LINCS / Broad Institute)",
    },
    "GPL96_annotation": {
        "source_file": "genes/GPL96_annotation.tsv.gz",
        "origin": "platform table of GPL96 (Affymetrix HG-U133A) in the GSE781 SOFT file",
        "license": "GEO public data (NCBI)",
    },
}


def read_gct_probes(path: Path, dataset: str) -> ExpressionData:
    """A GCT 1.3 file of probes with pr_gene_symbol / pr_gene_id and column metadata rows."""
    with gzip.open(path, "rt") as fh:
        fh.readline()
        n_rows, n_cols, n_rmeta, n_cmeta = (int(x) for x in fh.readline().split("\t"))
        table = pd.read_csv(fh, sep="\t", dtype=str, keep_default_na=False)
    table = table.set_index(table.columns[0])
    row_meta_cols = list(table.columns[:n_rmeta])
    sample_ids = list(table.columns[n_rmeta:])
    col_meta = table.iloc[:n_cmeta, n_rmeta:].T
    body = table.iloc[n_cmeta:]
    if body[sample_ids].shape != (n_rows, n_cols):
        raise ValueError(
            f"{path}: body is {body[sample_ids].shape}, header says {(n_rows, n_cols)}"
        )
    values = body[sample_ids].replace({"": "nan", "NA": "nan", "NaN": "nan"}).astype(np.float64)
    samples = col_meta.copy()
    samples["dataset"] = dataset
    return ExpressionData(
        values=values.to_numpy().T.astype(np.float32), gene_ids=body.index,
        sample_ids=sample_ids, genes=body[row_meta_cols], samples=samples,
        scale="log2" if "log2" in str(col_meta["values"].iloc[0]) else "linear",
        gene_id_kind="probe", source=str(path),
    )


def read_soft_gpl96(path: Path) -> ExpressionData:
    """The GPL96 samples of a GEO SOFT family file (VALUE column), with titles."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    samples: dict[str, dict[str, str]] = {}
    tables: dict[str, pd.Series] = {}
    current: str | None = None
    i = 0
    while i < len(lines):
        ln = lines[i]
        if ln.startswith("^SAMPLE"):
            current = ln.split("=", 1)[1].strip()
            samples[current] = {}
        elif ln.startswith("^"):
            current = None
        elif current and ln.startswith("!Sample_title"):
            samples[current]["title"] = ln.split("=", 1)[1].strip()
        elif current and ln.startswith("!Sample_platform_id"):
            samples[current]["platform"] = ln.split("=", 1)[1].strip()
        elif current and ln.startswith("!sample_table_begin"):
            end = lines.index("!sample_table_end", i)
            t = pd.read_csv(io.StringIO("\n".join(lines[i + 1:end])), sep="\t", dtype=str,
                            keep_default_na=False)
            tables[current] = t.set_index("ID_REF")["VALUE"]
            i = end
        i += 1
    keep = [s for s, m in samples.items() if m.get("platform") == "GPL96"]
    probes = tables[keep[0]].index
    for s in keep:
        if not tables[s].index.equals(probes):
            raise ValueError(f"{path}: sample {s} has different probes")
    values = np.stack([
        tables[s].replace({"": "nan", "null": "nan"}).astype(np.float64).to_numpy() for s in keep
    ]).astype(np.float32)
    meta = pd.DataFrame({
        "dataset": "gse781",
        # Titles start with N (normal kidney) or C (clear cell carcinoma) + patient number;
        # some N titles say "Renal Clear Cell Carcinoma" but are the matched normal tissue.
        "label": ["Normal" if samples[s]["title"].startswith("N") else "Cancer" for s in keep],
        "title": [samples[s]["title"] for s in keep],
        "platform": "GPL96",
        "values": "MAS5 linear",
    }, index=keep)
    return ExpressionData(values=values, gene_ids=probes, sample_ids=keep, samples=meta,
                          scale="linear", gene_id_kind="probe", source=str(path))


def read_geuvadis(counts: Path, sample_table: Path) -> tuple[ExpressionData, np.ndarray]:
    table = pd.read_csv(counts, sep="\t", index_col=0, dtype={0: str})
    ints = table.to_numpy(dtype=np.int64).T
    if ints.max() >= 2**24:
        raise ValueError("counts too large for exact float32")
    info = pd.read_csv(sample_table, sep="\t", index_col=0, dtype=str).reindex(table.columns)
    samples = pd.DataFrame({
        "dataset": "geuvadis", "label": info["group"].to_numpy(),
        "sex": info["group"].to_numpy(), "lib_size": info["lib.size"].astype(np.int64).to_numpy(),
        "values": "RNA-seq counts",
    }, index=table.columns)
    genes = pd.DataFrame({"ensembl": table.index}, index=table.index)
    data = ExpressionData(values=ints.astype(np.float32), gene_ids=table.index,
                          sample_ids=table.columns, genes=genes, samples=samples,
                          scale="counts", gene_id_kind="ensembl", source=str(counts))
    return data, ints.astype(np.int32)


def save_l1000_genes(src: Path) -> dict:
    """The landmark and BING rows of the LINCS gene table (ids, symbols, flags only)."""
    table = read_lincs_gene_info(src / PROVENANCE["l1000_genes"]["source_file"])
    flags = table[["pr_is_lm", "pr_is_bing"]].astype(str).apply(lambda c: c.str.strip())
    keep = (flags["pr_is_lm"] == "1") | (flags["pr_is_bing"] == "1")
    out = table.loc[keep, ["pr_gene_id", "pr_gene_symbol"]].assign(
        pr_is_lm=flags.loc[keep, "pr_is_lm"], pr_is_bing=flags.loc[keep, "pr_is_bing"])
    path = OUT / "l1000_genes.tsv.gz"
    with atomic_path(path, suffix=".gz") as tmp:
        # mtime=0: the same table always gives the same bytes (and checksum)
        with gzip.GzipFile(tmp, "wb", mtime=0) as fh:
            fh.write(out.to_csv(sep="\t", index=False).encode())
    path.chmod(0o644)
    return {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "n_genes": int(keep.sum()), "n_landmarks": int((out["pr_is_lm"] == "1").sum()),
            **PROVENANCE["l1000_genes"]}


def _meta_arrays(prefix: str, meta: pd.DataFrame) -> dict[str, np.ndarray]:
    out = {}
    for col in meta.columns:
        s = meta[col]
        if pd.api.types.is_integer_dtype(s):
            out[f"{prefix}__{col}"] = s.to_numpy(dtype=np.int64)
        else:
            out[f"{prefix}__{col}"] = s.fillna("").astype(str).to_numpy(dtype=str)
    return out


def save(name: str, data: ExpressionData, *, int_values: np.ndarray | None = None) -> dict:
    arrays = {
        "values": int_values if int_values is not None else data.values,
        "gene_ids": data.gene_ids.to_numpy(dtype=str),
        "sample_ids": data.sample_ids.to_numpy(dtype=str),
        **_meta_arrays("gene", data.genes),
        **_meta_arrays("sample", data.samples),
    }
    path = OUT / f"{name}.npz"
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    path.chmod(0o644)
    return {
        "file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "n_samples": data.n_samples, "n_genes": data.n_genes, "scale": data.scale,
        "gene_id_kind": data.gene_id_kind, **PROVENANCE[name],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    args = ap.parse_args(argv)
    src = args.data_dir
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "GPL96_annotation.tsv.gz").unlink(missing_ok=True)
    shutil.copyfile(src / PROVENANCE["GPL96_annotation"]["source_file"],
                    OUT / "GPL96_annotation.tsv.gz")
    ann = read_platform_annotation(OUT / "GPL96_annotation.tsv.gz")
    manifest: dict[str, dict] = {}

    bb, rep = collapse_probes(read_gct_probes(src / PROVENANCE["bladderbatch"]["source_file"],
                                              "bladderbatch"), annotation=ann, return_report=True)
    manifest["bladderbatch"] = {**save("bladderbatch", bb), "collapse": rep.summary()}
    gse, rep = collapse_probes(read_soft_gpl96(src / PROVENANCE["gse781"]["source_file"]),
                               annotation=ann, return_report=True)
    # Same gene order as bladderbatch (GSE781's probe table starts with the AFFX controls).
    gse = gse.select_genes(bb.gene_ids)
    manifest["gse781"] = {**save("gse781", gse), "collapse": rep.summary()}
    geu, ints = read_geuvadis(src / PROVENANCE["geuvadis"]["source_file"],
                              src / "rnaseq" / "geuvadis85_samples.tsv")
    manifest["geuvadis"] = save("geuvadis", geu, int_values=ints)
    manifest["l1000_genes"] = save_l1000_genes(src)
    manifest["GPL96_annotation"] = {
        "file": "GPL96_annotation.tsv.gz",
        "sha256": hashlib.sha256((OUT / "GPL96_annotation.tsv.gz").read_bytes()).hexdigest(),
        **PROVENANCE["GPL96_annotation"],
    }
    with atomic_path(OUT / "manifest.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    for p in (OUT / "manifest.json", OUT / "GPL96_annotation.tsv.gz"):
        p.chmod(0o644)
    total = sum(p.stat().st_size for p in OUT.iterdir() if p.is_file())
    for name, m in manifest.items():
        print(f"{name}: {m.get('n_samples', '-')} x {m.get('n_genes', '-')}  {m['file']}")
    print(f"total {total / 1e6:.2f} MB in {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
