"""Fuzz the readers: mutated real files through ``geneinfer convert`` (and some through
``geneinfer predict``), every outcome classified.

For each reader family (GCT, GCT.gz, TSV/CSV, SOFT, series matrix, GCTX, h5ad) the harness
cuts small seed files out of the real shared data, then makes N mutated inputs per family by
seeded mutations: byte flips, truncation, inserted NUL / control bytes, non-numeric cells,
``inf`` / ``1e999`` / float32 overflow, blank lines, duplicated / short / long rows, huge
declared sizes, long fields, duplicated ids, quotes; for HDF5 files also infinite values,
out-of-range or repeated sparse indices, broken index pointers, link loops, huge declared
datasets and byte damage. Each input goes through ``geneinfer convert IN OUT.gctx`` in a
worker process (``geneinfer.cli.main``, in-process there) and every ``--predict-every``-th
one also through ``geneinfer predict``. Outcomes:

* ``correct``: exit 0 and the output equals the input as an independent reference reader
  (this file, written from the documented rules of :mod:`geneinfer.io.cells`) reads it;
* ``clean error``: exit 2 with one line ``geneinfer: error: <file>...``;
* ``traceback``: any other exception or exit status, or an error message not on one line;
* ``crash``: the worker process died (e.g. a segfault);
* ``hang``: no answer within ``--timeout`` seconds;
* ``silent change``: exit 0 but the output differs from the input beyond the documented
  rules (missing-value tokens read as NaN, values rounded to float32, blank lines skipped,
  derived ``symbol``/``entrez`` columns, a stale ``values`` scale note restated), or the
  reference refuses an input that geneinfer accepted.

Usage (the full run; the test suite runs a few hundred with a fixed seed)::

    python benchmarks/fuzz_readers.py --n 10000 --workers 2
    python benchmarks/fuzz_readers.py --n 50 --families gct,h5ad --seed 3

Inputs that were not ``correct`` or ``clean error`` are kept under ``--keep DIR`` with the
worker's report, for replay: ``python benchmarks/fuzz_readers.py --replay FILE``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gzip
import io
import json
import os
import random
import re
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GENEINFER_SHARED", ROOT.parent / "shared" / "data"))
FAMILIES = ("gct", "gct.gz", "tsv/csv", "soft", "series-matrix", "gctx", "h5ad")
OUTCOMES = ("correct", "clean error", "traceback", "crash", "hang", "silent change",
            "unchecked")
BAD = ("traceback", "crash", "hang", "silent change", "unchecked")

# the documented rules (geneinfer.io.cells), restated independently
NA_TOKENS = {"", "NA", "NaN", "nan", "-nan", "-NaN", "N/A", "#N/A", "NULL", "null", "na",
             "None"}
NUMBER = re.compile(r"[ \t]*(?:[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|"
                    r"[+-]?(?:[iI][nN][fF](?:[iI][nN][iI][tT][yY])?))[ \t]*")
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)")
MAX_ID_CHARS = 4096
MAX_FIELD_CHARS = 131_072


class Invalid(Exception):
    """The reference reader refuses the input (so geneinfer must not accept it)."""


# ====================================================================== seeds
@dataclass
class Seed:
    """A small real file to mutate, and what the reference needs to know about it."""

    family: str
    name: str  # file name (its suffix picks the format)
    data: bytes
    args: list[str] = field(default_factory=list)  # extra convert arguments
    cells: list[tuple[int, int]] = field(default_factory=list)  # (line, field) of values
    rows: list[int] = field(default_factory=list)  # data row lines
    dims_line: int | None = None  # GCT: the line of the declared sizes


def _gct_cut(path: Path, n_genes: int, n_samples: int, *, gz: bool) -> Seed:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as fh:
        lines = [fh.readline().rstrip("\n") for _ in range(3)]
        _, _, n_rmeta, n_cmeta = (int(x) for x in lines[1].split("\t"))
        keep = 1 + n_rmeta + n_samples
        body = [fh.readline().rstrip("\n") for _ in range(n_cmeta + n_genes)]
    lines[1] = f"{n_genes}\t{n_samples}\t{n_rmeta}\t{n_cmeta}"
    lines[2] = "\t".join(lines[2].split("\t")[:keep])
    lines += ["\t".join(b.split("\t")[:keep]) for b in body]
    text = ("\n".join(lines) + "\n").encode()
    first = 3 + n_cmeta
    cells = [(i, j) for i in range(first, len(lines)) for j in range(1 + n_rmeta, keep)]
    name = "cut.gct.gz" if gz else "cut.gct"
    return Seed("gct.gz" if gz else "gct", name, gzip.compress(text) if gz else text,
                cells=cells, rows=list(range(first, len(lines))), dims_line=1)


def _table_seeds() -> list[Seed]:
    """A GEUVADIS counts cut (TSV, genes in rows) and a bladderbatch cut written as an
    R-style quoted CSV with a symbol column, samples in rows."""
    with gzip.open(SHARED / "rnaseq" / "geuvadis85_counts.tsv.gz", "rt") as fh:
        rows = [fh.readline().rstrip("\n").split("\t")[:11] for _ in range(41)]
    tsv = "\n".join("\t".join(r) for r in rows) + "\n"
    cells = [(i, j) for i in range(1, len(rows)) for j in range(1, 11)]
    seeds = [Seed("tsv/csv", "cut.tsv", tsv.encode(), ["--orientation", "genes-in-rows"],
                  cells=cells, rows=list(range(1, len(rows))))]
    with gzip.open(SHARED / "gpl96" / "bladderbatch.gct.gz", "rt") as fh:
        lines = [fh.readline().rstrip("\n").split("\t") for _ in range(7 + 30)]
    samples = lines[2][3:11]
    genes = [ln[0] for ln in lines[7:]]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)
    writer.writerow(["sample", *genes])
    for k, sample in enumerate(samples):
        writer.writerow([sample, *(float(ln[3 + k]) for ln in lines[7:])])
    text = out.getvalue()
    n = len(genes)
    cells = [(i, j) for i in range(1, 1 + len(samples)) for j in range(1, 1 + n)]
    seeds.append(Seed("tsv/csv", "cut.csv", text.encode(),
                      ["--orientation", "samples-in-rows"], cells=cells,
                      rows=list(range(1, 1 + len(samples)))))
    return seeds


def _soft_blocks(n_rows: int) -> tuple[list[str], dict[str, list[str]]]:
    """The first header lines, and each platform's or sample's block with the first
    ``n_rows`` rows of its table (the platforms and the first 8 samples)."""
    head: list[str] = []
    blocks: dict[str, list[str]] = {}
    cur: list[str] = head
    taken, in_table = 0, False
    with gzip.open(SHARED / "geo" / "GSE781_family.soft.gz", "rt", errors="replace") as fh:
        for raw in fh:
            line = raw.rstrip("\n")
            if line.startswith(("^PLATFORM", "^SAMPLE")):
                if sum(a.startswith("GSM") for a in blocks) >= 8:
                    break
                cur = blocks.setdefault(line.split("=", 1)[1].strip(), [])
            if line.lower().endswith("_table_begin"):
                in_table, taken = True, 0
            elif line.lower().endswith("_table_end"):
                in_table = False
            elif in_table:
                taken += 1
                if taken > n_rows + 1:  # the header, then n_rows rows
                    continue
            if cur is head and len(head) >= 12:
                continue
            cur.append(line)
    return head, blocks


def _soft_seeds() -> list[Seed]:
    """The GSE781 cut with both platforms (``--platform GPL96``) and with GPL96 only."""
    head, blocks = _soft_blocks(40)
    gsm = [a for a in blocks if a.startswith("GSM")]
    gpl96 = [a for a in gsm if "!Sample_platform_id = GPL96" in blocks[a]]
    both = _soft_seed(head, blocks, ["GPL96", "GPL97", *gsm[:5]], "GSE781_family.soft",
                      ["--platform", "GPL96"])
    one = _soft_seed(head, blocks, ["GPL96", *gpl96[:4]], "GSE781_gpl96_family.soft", [])
    return [both, one]


def _soft_seed(head: list[str], blocks: dict[str, list[str]], keep: list[str], name: str,
               args: list[str]) -> Seed:
    lines = head + [ln for acc in keep for ln in blocks[acc]]
    cells, rows = [], []
    in_sample = in_table = False
    header_seen = False
    for i, ln in enumerate(lines):
        if ln.startswith("^"):
            in_sample = ln.startswith("^SAMPLE")
        elif ln.lower().endswith("_table_begin"):
            in_table, header_seen = True, False
        elif ln.lower().endswith("_table_end"):
            in_table = False
        elif in_table and not header_seen:
            header_seen = True
        elif in_table and in_sample:
            cells.append((i, 1))
            rows.append(i)
    text = "\n".join(lines) + "\n"
    return Seed("soft", name, text.encode(), args, cells=cells, rows=rows)


def _series_seed() -> Seed:
    """A series-matrix file made from the GPL96 samples of the SOFT cut (GEO's layout)."""
    _, blocks = _soft_blocks(40)
    samples = [a for a in blocks if a.startswith("GSM")]
    gpl96 = [a for a in samples if "!Sample_platform_id = GPL96" in blocks[a]][:4]
    ids, values = None, []
    titles = []
    for acc in gpl96:
        lines = blocks[acc]
        titles.append(next((ln.split("=", 1)[1].strip() for ln in lines
                            if ln.startswith("!Sample_title")), acc))
        start = lines.index("!sample_table_begin") + 2
        rows = [ln.split("\t") for ln in lines[start:] if not ln.startswith("!")]
        ids = [r[0] for r in rows]
        values.append([r[1] for r in rows])
    q = '"{}"'.format
    lines = ['!Series_title\t"GSE781 cut"', '!Series_geo_accession\t"GSE781"',
             "!Sample_title\t" + "\t".join(q(t) for t in titles),
             "!Sample_geo_accession\t" + "\t".join(q(a) for a in gpl96),
             '!Sample_data_processing\t' + "\t".join(q("MAS5 signal") for _ in gpl96),
             "!series_matrix_table_begin", "\t".join(q(x) for x in ["ID_REF", *gpl96])]
    first = len(lines)
    for k, gene in enumerate(ids or []):
        lines.append("\t".join([q(gene), *(v[k] for v in values)]))
    lines.append("!series_matrix_table_end")
    cells = [(i, j) for i in range(first, len(lines) - 1) for j in range(1, 1 + len(gpl96))]
    return Seed("series-matrix", "GSE781_series_matrix.txt",
                ("\n".join(lines) + "\n").encode(), cells=cells,
                rows=list(range(first, len(lines) - 1)))


def _gctx_seeds(tmp: Path) -> list[Seed]:
    import h5py

    with h5py.File(SHARED / "l1000" / "test_l1000_highprecision.gctx", "r") as f:
        X = f["0/DATA/0/matrix"][:12, :60]
        rows = {k: f["0/META/ROW"][k][:60] for k in f["0/META/ROW"]}
        cols = {k: f["0/META/COL"][k][:12] for k in f["0/META/COL"]}
    seeds = []
    for name, chunked in (("cut.gctx", True), ("contiguous.gctx", False)):
        path = tmp / name
        with h5py.File(path, "w") as f:
            f.attrs["version"] = np.bytes_(b"GCTX1.0")
            opts = {"chunks": (4, 60), "compression": "gzip"} if chunked else {}
            f.create_dataset("0/DATA/0/matrix", data=X.astype(np.float32), **opts)
            for k, v in rows.items():
                f.create_dataset(f"0/META/ROW/{k}", data=v)
            for k, v in cols.items():
                f.create_dataset(f"0/META/COL/{k}", data=v)
        seeds.append(Seed("gctx", name, path.read_bytes()))
    return seeds


def _h5ad_seeds(tmp: Path) -> list[Seed]:
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    with gzip.open(SHARED / "rnaseq" / "geuvadis85_counts.tsv.gz", "rt") as fh:
        table = pd.read_csv(fh, sep="\t", index_col=0, nrows=50)
    X = table.iloc[:, :10].T.to_numpy(dtype=np.float32)
    obs = pd.DataFrame({"sex": ["f", "m"] * 5}, index=list(table.columns[:10]))
    var = pd.DataFrame(index=list(table.index))
    seeds = []
    for name, matrix in (("dense.h5ad", X), ("sparse.h5ad", sp.csr_matrix(X))):
        path = tmp / name
        ad.AnnData(X=matrix, obs=obs, var=var).write_h5ad(path)
        seeds.append(Seed("h5ad", name, path.read_bytes()))
    return seeds


def make_seeds(tmp: Path) -> dict[str, list[Seed]]:
    """The seed files of every family (real data, cut small so each run is quick)."""
    seeds: dict[str, list[Seed]] = {f: [] for f in FAMILIES}
    seeds["gct"].append(_gct_cut(SHARED / "l1000" / "test_l1000.gct", 60, 12, gz=False))
    seeds["gct.gz"].append(_gct_cut(SHARED / "gpl96" / "bladderbatch.gct.gz", 50, 10, gz=True))
    seeds["tsv/csv"] = _table_seeds()
    seeds["soft"] = _soft_seeds()
    seeds["series-matrix"].append(_series_seed())
    seeds["gctx"] = _gctx_seeds(tmp)
    seeds["h5ad"] = _h5ad_seeds(tmp)
    return seeds


# ====================================================================== mutations
BAD_CELLS = ["abc", "n/a", "1,5", "1_000", "NAN", "--1", "\u0661", "0x10", "1e", ".", "+",
             "1.2.3", "e5", "inf5", "nan1"]
#: cells that are fine by the rules (missing-value tokens, odd but valid numbers)
GOOD_CELLS = [" 7 ", "NA", "", " NA ", "1e5", "-0", "7.", "  ", ".5", "+3", "1E+05", "null",
              "#N/A", "-1.5e-3", "0000012", "1e-50", "3.4028234e38", "123456789.123456789"]
NONFINITE = ["inf", "-Infinity", "INF", "1e999", "3.5e38", "-1e39", "1e300"]
CONTROLS = [b"\x00", b"\x01", b"\x07", b"\x0b", b"\x0c", b"\x1b", b"\x7f", b"\r"]


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _set_cell(lines: list[bytes], cell: tuple[int, int], text: str, sep: bytes) -> None:
    i, j = cell
    if i < len(lines):
        fields = lines[i].split(sep)
        if j < len(fields):
            fields[j] = text.encode()
            lines[i] = sep.join(fields)


def mutate_text(seed: Seed, rng: random.Random) -> tuple[bytes, list[str]]:
    """1-3 seeded mutations of a text seed; returns the bytes and what was done."""
    gz = seed.name.endswith(".gz")
    data = gzip.decompress(seed.data) if gz else seed.data
    sep = b"," if seed.name.endswith(".csv") else b"\t"
    lines = _lines(data)
    done: list[str] = []
    for _ in range(rng.choices([1, 2, 3], weights=[6, 3, 1])[0]):
        op = rng.choice(["cell", "good_cell", "good_cell", "good_cell", "nonfinite", "blank",
                         "blank", "dup_row", "short_row", "long_row", "del_row", "swap",
                         "dup_id", "long_field", "huge_dims", "quote", "crlf", "crlf",
                         "sep_in_cell", "bytes", "bytes", "control", "truncate"])
        done.append(op)
        if op in ("cell", "good_cell", "nonfinite") and seed.cells:
            pool = {"cell": BAD_CELLS, "good_cell": GOOD_CELLS, "nonfinite": NONFINITE}[op]
            for _ in range(rng.choice([1, 1, 1, 5])):
                _set_cell(lines, rng.choice(seed.cells), rng.choice(pool), sep)
        elif op == "blank" and len(lines) > 3:
            lines.insert(rng.randrange(3, len(lines)), rng.choice([b"", b"  ", b"\r"]))
        elif op in ("dup_row", "short_row", "long_row", "del_row", "dup_id") and seed.rows:
            i = rng.choice(seed.rows)
            if i >= len(lines):
                continue
            if op == "dup_row":
                lines.insert(i, lines[i])
            elif op == "short_row":
                lines[i] = sep.join(lines[i].split(sep)[:-1])
            elif op == "long_row":
                lines[i] = lines[i] + sep + b"1.5"
            elif op == "del_row":
                del lines[i]
            else:
                j = rng.choice(seed.rows)
                if j < len(lines):
                    fields = lines[j].split(sep)
                    fields[0] = lines[i].split(sep)[0]
                    lines[j] = sep.join(fields)
        elif op == "swap" and len(lines) > 2:
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "long_field" and seed.rows:
            i = rng.choice(seed.rows)
            if i < len(lines):
                fields = lines[i].split(sep)
                k = rng.randrange(len(fields))
                fields[k] = b"x" * rng.choice([5000, 140_000, 200_000])
                lines[i] = sep.join(fields)
        elif op == "huge_dims" and seed.dims_line is not None:
            fields = lines[seed.dims_line].split(b"\t")
            fields[0] = rng.choice([b"999999999999", b"4000000000", b"100000"])
            lines[seed.dims_line] = b"\t".join(fields)
        elif op == "quote" and len(lines) > 1:
            i = rng.randrange(len(lines))
            k = rng.randrange(len(lines[i]) + 1)
            lines[i] = lines[i][:k] + b'"' + lines[i][k:]
        elif op == "crlf" and len(lines) > 1:
            i = rng.randrange(len(lines) - 1)
            lines[i] = lines[i] + b"\r"
        elif op == "sep_in_cell" and seed.cells:
            i, j = rng.choice(seed.cells)
            if i < len(lines):
                fields = lines[i].split(sep)
                if j < len(fields):
                    fields[j] = fields[j][:1] + sep + fields[j][1:]
                    lines[i] = sep.join(fields)
    data = b"\n".join(lines)
    data = _byte_ops(data, rng, done)
    if gz:
        data = gzip.compress(data, mtime=0)
        if rng.random() < 0.3:
            done.append("gz_bytes")
            data = _flip(data, rng, rng.randint(1, 3))
            if rng.random() < 0.3:
                data = data[: rng.randrange(len(data))]
    return data, done


def _byte_ops(data: bytes, rng: random.Random, done: list[str]) -> bytes:
    """The byte-level mutations picked in ``done`` (applied last)."""
    for op in list(done):
        if op == "bytes":
            data = _flip(data, rng, rng.randint(1, 4))
        elif op == "control":
            k = rng.randrange(len(data) + 1)
            data = data[:k] + rng.choice(CONTROLS) + data[k:]
        elif op == "truncate" and data:
            data = data[: rng.randrange(len(data))]
    return data


def _flip(data: bytes, rng: random.Random, n: int) -> bytes:
    raw = bytearray(data)
    for _ in range(n):
        if raw:
            k = rng.randrange(len(raw))
            raw[k] = raw[k] ^ (1 << rng.randrange(8)) if rng.random() < 0.7 else \
                rng.randrange(256)
    return bytes(raw)


def mutate_hdf5(seed: Seed, rng: random.Random, path: Path) -> list[str]:
    """Write a mutated copy of an HDF5 seed to ``path``; return what was done."""
    import h5py

    path.write_bytes(seed.data)
    done: list[str] = []
    matrix = "0/DATA/0/matrix" if seed.family == "gctx" else "X"
    ops = ["inf", "nan", "nan", "float64_big", "float64_ok", "dup_id", "empty_id", "long_id",
           "huge_ids", "link_loop", "drop", "shape", "bytes", "bytes", "window", "truncate"]
    if seed.name == "sparse.h5ad":
        ops += ["sp_oob", "sp_huge", "sp_neg", "sp_indptr", "sp_len", "sp_dup", "sp_shape"] * 2
    for _ in range(rng.choices([1, 2], weights=[3, 1])[0]):
        op = rng.choice(ops)
        done.append(op)
        if op in ("bytes", "window", "truncate"):
            continue
        try:
            with h5py.File(path, "r+") as f:
                _h5_edit(f, op, matrix, seed, rng)
        except Exception:  # an earlier mutation broke the file: fine, it stays broken
            done.append("(edit failed)")
    data = path.read_bytes()
    for op in done:
        if op == "bytes":
            data = _flip(data, rng, rng.randint(1, 8))
        elif op == "window" and len(data) > 16:
            k = rng.randrange(len(data) - 16)
            data = data[:k] + bytes(rng.randrange(256) for _ in range(16)) + data[k + 16:]
        elif op == "truncate":
            data = data[: rng.randrange(len(data))]
    path.write_bytes(data)
    return done


def _ids_path(seed: Seed, axis: str) -> str:
    if seed.family == "gctx":
        return f"0/META/{axis}/id"
    group = "var" if axis == "ROW" else "obs"
    return f"{group}/_index"


def _replace(f, name: str, data) -> None:
    del f[name]
    f.create_dataset(name, data=data)


def _h5_edit(f, op: str, matrix: str, seed: Seed, rng: random.Random) -> None:
    import h5py

    axis = rng.choice(["ROW", "COL"])
    ids_name = _ids_path(seed, axis)
    if op in ("inf", "nan", "float64_big", "float64_ok") and \
            isinstance(f.get(matrix), h5py.Dataset):
        m = f[matrix][()]
        i, j = rng.randrange(m.shape[0]), rng.randrange(m.shape[1])
        if op.startswith("float64"):
            m = m.astype(np.float64)
            m[i, j] = rng.choice([1e300, -1e39, 3.5e38] if op == "float64_big" else
                                 [1e-300, 0.1, 3.4e38, 123456.789])
        else:
            m[i, j] = {"inf": rng.choice([np.inf, -np.inf]), "nan": np.nan}[op]
        _replace(f, matrix, m)
        if seed.family == "h5ad":
            f[matrix].attrs["encoding-type"] = "array"
            f[matrix].attrs["encoding-version"] = "0.2.0"
    elif op in ("inf", "nan", "float64_big", "float64_ok"):  # sparse X: a stored value
        d = f[f"{matrix}/data"][()].astype(np.float64)
        if len(d):
            d[rng.randrange(len(d))] = {"inf": np.inf, "nan": np.nan, "float64_big": 1e300,
                                        "float64_ok": 0.25}[op]
            _replace(f, f"{matrix}/data", d)
    elif op in ("dup_id", "empty_id", "long_id"):
        ids = f[ids_name][()]
        ids = ids.astype(object)
        k = rng.randrange(len(ids))
        ids[k] = {"dup_id": ids[(k + 1) % len(ids)], "empty_id": b"",
                  "long_id": b"g" * 5000}[op]
        _replace(f, ids_name, np.array([bytes(x) if isinstance(x, bytes) else
                                        str(x).encode() for x in ids], dtype=object).astype("S"))
        if seed.family == "h5ad":
            f[ids_name].attrs["encoding-type"] = "string-array"
            f[ids_name].attrs["encoding-version"] = "0.2.0"
    elif op == "huge_ids":
        del f[ids_name]
        f.create_dataset(ids_name, shape=(4_000_000_000,), dtype="S10", chunks=(1024,))
    elif op == "link_loop":
        del f[matrix]
        f[matrix] = h5py.SoftLink("/" + matrix)
    elif op == "drop":
        del f[rng.choice([matrix, ids_name])]
    elif op == "shape" and isinstance(f.get(matrix), h5py.Dataset):
        _replace(f, matrix, f[matrix][()][:, :-1])
    elif op.startswith("sp_"):
        _sparse_edit(f, op, matrix, rng)


def _sparse_edit(f, op: str, matrix: str, rng: random.Random) -> None:
    idx, ptr = f[f"{matrix}/indices"][()], f[f"{matrix}/indptr"][()]
    if op in ("sp_oob", "sp_huge", "sp_neg", "sp_dup") and len(idx) > 1:
        k = rng.randrange(len(idx))
        shape = f[matrix].attrs["shape"]
        idx = idx.astype(np.int64)
        idx[k] = {"sp_oob": int(shape[1]), "sp_huge": 10**9, "sp_neg": -1,
                  "sp_dup": idx[k - 1] if k else idx[1]}[op]
        _replace(f, f"{matrix}/indices", idx)
    elif op == "sp_indptr" and len(ptr) > 2:
        k = rng.randrange(1, len(ptr) - 1)
        ptr = ptr.copy()
        ptr[k] = ptr[k + 1] + 3
        _replace(f, f"{matrix}/indptr", ptr)
    elif op == "sp_len":
        _replace(f, f"{matrix}/data", f[f"{matrix}/data"][()][:-1])
    elif op == "sp_shape":
        shape = np.array(f[matrix].attrs["shape"])
        shape[rng.randrange(2)] += rng.choice([-1, 1, 10**9])
        f[matrix].attrs["shape"] = shape


# ====================================================================== reference readers
@dataclass
class Table:
    """What an input holds by the documented rules: ids and values (samples x genes)."""

    genes: list[str]
    samples: list[str]
    values: np.ndarray
    gene_meta: dict[str, list[str]] = field(default_factory=dict)
    sample_meta: dict[str, list[str]] = field(default_factory=dict)


def _text(data: bytes) -> list[str]:
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except Exception as exc:
            raise Invalid(f"gzip: {exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("not UTF-8") from None
    if CONTROL.search(text):
        raise Invalid("control character")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def _blank(line: str) -> bool:
    return not line.strip(" ")


def _number(text: str) -> float:
    if text.strip(" \t") in NA_TOKENS:
        return float("nan")
    if not NUMBER.fullmatch(text):
        raise Invalid(f"not a number: {text[:20]!r}")
    with np.errstate(over="ignore"):
        value = np.float32(float(text.strip(" \t")))
    if np.isinf(value):
        raise Invalid("non-finite")
    return float(value)


def _check_ids(ids: list[str], what: str) -> None:
    if len(set(ids)) != len(ids):
        raise Invalid(f"duplicate {what} ids")
    for i in ids:
        if not i.strip() or len(i) > MAX_ID_CHARS:
            raise Invalid(f"bad {what} id")


def ref_gct(data: bytes) -> Table:
    lines = _text(data)
    if len(lines) < 3 or not lines[0].startswith("#") or \
            lines[0].strip().lstrip("#") not in ("1.2", "1.3"):
        raise Invalid("version line")
    v13 = lines[0].strip().lstrip("#") == "1.3"
    dims = [p.strip() for p in (lines[1].split("\t") if "\t" in lines[1] else
                                lines[1].split()) if p.strip()]
    if len(dims) != (4 if v13 else 2) or not all(re.fullmatch("[0-9]+", d) for d in dims):
        raise Invalid("dims")
    n_g, n_s, n_rm, n_cm = (int(d) for d in dims) if v13 else (int(dims[0]), int(dims[1]), 1, 0)
    head = lines[2].split("\t")
    if len(head) != 1 + n_rm + n_s:
        raise Invalid("header")
    samples = head[1 + n_rm:]
    _check_ids(samples, "sample")
    if len(set(head[1:1 + n_rm])) != n_rm or any(len(h) > MAX_FIELD_CHARS for h in head):
        raise Invalid("header names")
    col_meta = {}
    for k in range(n_cm):
        if 3 + k >= len(lines):
            raise Invalid("col meta")
        fields = lines[3 + k].split("\t")
        if len(fields) != len(head) or fields[0] in col_meta or \
                any(len(x) > MAX_FIELD_CHARS for x in fields):
            raise Invalid("col meta row")
        col_meta[fields[0]] = fields[1 + n_rm:]
    genes, rows, meta = [], [], {n: [] for n in head[1:1 + n_rm]}
    for line in lines[3 + n_cm:]:
        if _blank(line):
            continue
        fields = line.split("\t")
        if len(fields) != len(head) or any(len(x) > MAX_FIELD_CHARS for x in fields):
            raise Invalid("row width")
        genes.append(fields[0])
        for name, text in zip(head[1:1 + n_rm], fields[1:1 + n_rm]):
            meta[name].append(text)
        rows.append([_number(t) for t in fields[1 + n_rm:]])
    if len(genes) != n_g:
        raise Invalid("row count")
    _check_ids(genes, "gene")
    values = np.array(rows, dtype=np.float32).reshape(n_g, n_s).T
    return Table(genes, samples, values, meta, col_meta)


def _split_quoted(line: str, sep: str) -> list[str]:
    """RFC 4180 fields of one line: a quote opens a field only at its start and must close
    it, on the same line; elsewhere a quote is a character like any other."""
    fields, k, n = [], 0, len(line)
    while True:
        if k < n and line[k] == '"':
            k += 1
            buf = []
            while True:
                if k >= n:
                    raise Invalid("unclosed quote")
                if line[k] == '"':
                    if k + 1 < n and line[k + 1] == '"':
                        buf.append('"')
                        k += 2
                        continue
                    k += 1
                    break
                buf.append(line[k])
                k += 1
            fields.append("".join(buf))
            if k >= n:
                return fields
            if line[k] != sep:
                raise Invalid("text after a closing quote")
            k += 1
        else:
            end = line.find(sep, k)
            if end < 0:
                fields.append(line[k:])
                return fields
            fields.append(line[k:end])
            k = end + 1


def _is_meta(name: str, texts: list[str]) -> bool:
    cells = [t for t in texts if t.strip(" \t") not in NA_TOKENS]
    n_text = sum(not NUMBER.fullmatch(t) for t in cells)
    names = {"symbol", "gene_symbol", "description", "gene_name", "name", "gene_title", "chr",
             "chrom", "chromosome", "biotype", "gene_biotype", "gene_type", "strand", "entrez",
             "entrez_id", "ensembl", "ensembl_id"}
    return bool(n_text) and (2 * n_text > len(cells) or name.strip().lower() in names)


def ref_table(data: bytes, *, sep: str, genes_in_rows: bool) -> Table:
    lines = _text(data)
    if not lines or not lines[0].strip():
        raise Invalid("header")
    header = _split_quoted(lines[0], sep)
    body = [_split_quoted(ln, sep) for ln in lines[1:] if not _blank(ln)]
    if len(header) < 2 or len(set(header)) != len(header) or not body:
        raise Invalid("header")
    n_meta = 0
    for j in range(1, len(header) - 1):
        if not _is_meta(header[j], [r[j] for r in body[:200] if len(r) > j]):
            break
        n_meta += 1
    cols = header[1 + n_meta:]
    if any(not c.strip() for c in cols) or any(len(h) > MAX_ID_CHARS for h in header):
        raise Invalid("header ids")
    ids, rows, meta = [], [], {header[c]: [] for c in range(1, 1 + n_meta)}
    for r in body:
        if len(r) != len(header) or any(len(x) > MAX_FIELD_CHARS for x in r):
            raise Invalid("row width")
        ids.append(r[0])
        for c in range(1, 1 + n_meta):
            meta[header[c]].append(r[c])
        rows.append([_number(t) for t in r[1 + n_meta:]])
    _check_ids(ids, "row")
    _check_ids(cols, "column")
    values = np.array(rows, dtype=np.float32).reshape(len(ids), len(cols))
    if genes_in_rows:
        return Table(ids, cols, values.T, gene_meta=meta)
    return Table(cols, ids, values, sample_meta=meta)


def ref_soft(data: bytes, platform: str) -> Table:
    lines = _text(data)
    blocks: list[dict] = []
    cur: dict | None = None
    in_table = False
    for line in lines:
        if in_table:
            if line.startswith("!") and line.lower().endswith("_table_end"):
                in_table = False
            elif _blank(line):
                continue
            elif cur["header"] is None:
                cur["header"] = line.split("\t")
            else:
                cur["rows"].append(line.split("\t"))
            continue
        m = re.match(r"^\^(\w+)\s*=\s*(.*)$", line)
        if m:
            cur = {"kind": m.group(1).upper(), "acc": m.group(2).strip(), "attrs": {},
                   "header": None, "rows": []}
            blocks.append(cur)
        elif cur is not None and line.startswith("!") and line.lower().endswith("_table_begin"):
            in_table = True
        elif cur is not None and line.startswith("!"):
            key, _, val = line[1:].partition("=")
            key = key.strip()
            key = key.split("_", 1)[1] if "_" in key else key
            cur["attrs"].setdefault(key, []).append(val.strip())
    if in_table:
        raise Invalid("unended table")
    samples = [b for b in blocks if b["kind"] == "SAMPLE"
               and (b["attrs"].get("platform_id") or [""])[0] == platform]
    plat = next((b for b in blocks if b["kind"] == "PLATFORM" and b["acc"] == platform), None)
    order: list[str] = []
    for b in [plat, *samples]:
        if b is not None and b["header"] and len(set(b["header"])) != len(b["header"]):
            raise Invalid("duplicate table column names")
    if plat is not None and plat["header"]:
        for r in plat["rows"]:
            if len(r) != len(plat["header"]):
                raise Invalid("platform row width")
        order = [r[0] for r in plat["rows"]]
        _check_ids(order, "platform row")
    per = []
    for s in samples:
        if not s["header"] or "VALUE" not in s["header"]:
            raise Invalid("sample table")
        col = s["header"].index("VALUE")
        for r in s["rows"]:
            if len(r) != len(s["header"]):
                raise Invalid("row width")
        ids = [r[0] for r in s["rows"]]
        _check_ids(ids, "sample row")
        per.append((ids, [_number(r[col]) for r in s["rows"]]))
        order += [i for i in ids if i not in set(order)]
    if not samples:
        raise Invalid("no samples")
    _check_ids([s["acc"] for s in samples], "sample")
    pos = {g: k for k, g in enumerate(order)}
    values = np.full((len(samples), len(order)), np.nan, dtype=np.float32)
    for k, (ids, vals) in enumerate(per):
        values[k, [pos[i] for i in ids]] = vals
    return Table(order, [s["acc"] for s in samples], values)


def ref_series(data: bytes) -> Table:
    lines = _text(data)
    if not lines or not lines[0].startswith("!"):
        raise Invalid("first line")
    try:
        begin = next(i for i, ln in enumerate(lines)
                     if ln.startswith("!series_matrix_table_begin"))
        end = next(i for i, ln in enumerate(lines) if ln.startswith("!series_matrix_table_end"))
    except StopIteration:
        raise Invalid("no table") from None
    if end < begin:
        raise Invalid("table end before begin")
    body = [ln for ln in lines[begin + 1:end] if not _blank(ln)]
    if not body:
        raise Invalid("no header")
    header = _split_quoted(body[0], "\t")
    if header[0] != "ID_REF":
        raise Invalid("ID_REF")
    samples = header[1:]
    _check_ids(samples, "sample")
    ids, rows = [], []
    for ln in body[1:]:
        r = _split_quoted(ln, "\t")
        if len(r) != len(header) or len(r[0]) > MAX_FIELD_CHARS:
            raise Invalid("row width")
        ids.append(r[0])
        rows.append([_number(t) for t in r[1:]])
    _check_ids(ids, "gene")
    for ln in lines[:begin]:
        if ln.startswith("!Sample_") and len(_split_quoted(ln, "\t")) != len(header):
            raise Invalid("sample attribute count")
    values = np.array(rows, dtype=np.float32).reshape(len(ids), len(samples)).T
    return Table(ids, samples, values)


def _h5_texts(ds) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in ds[()].tolist()]


def _finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind not in "biuf":
        raise Invalid("dtype")
    with np.errstate(over="ignore"):
        out = values.astype(np.float32)
    if np.isinf(out).any():
        raise Invalid("non-finite")
    return out


def ref_gctx(path: Path) -> Table:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            genes = _h5_texts(f["0/META/ROW/id"])
            samples = _h5_texts(f["0/META/COL/id"])
            m = f["0/DATA/0/matrix"]
            if m.shape != (len(samples), len(genes)):
                raise Invalid("shape")
            values = _finite(m[()])
    except Invalid:
        raise
    except Exception as exc:
        raise Invalid(f"h5py: {type(exc).__name__}") from None
    _check_ids(genes, "gene")
    _check_ids(samples, "sample")
    return Table(genes, samples, values)


def _index(group) -> list[str]:
    name = group.attrs.get("_index", "_index")
    name = name.decode() if isinstance(name, bytes) else str(name)
    return _h5_texts(group[name])


def ref_h5ad(path: Path) -> Table:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            samples, genes = _index(f["obs"]), _index(f["var"])
            x = f["X"]
            if isinstance(x, h5py.Dataset):
                values = _finite(x[()])
            else:
                values = _finite(_csr(x))
    except Invalid:
        raise
    except Exception as exc:
        raise Invalid(f"h5py: {type(exc).__name__}") from None
    if values.shape != (len(samples), len(genes)):
        raise Invalid("shape")
    _check_ids(genes, "gene")
    _check_ids(samples, "sample")
    return Table(genes, samples, values)


def _csr(x) -> np.ndarray:
    kind = x.attrs.get("encoding-type")
    kind = kind.decode() if isinstance(kind, bytes) else kind
    shape = [int(v) for v in x.attrs["shape"]]
    if kind not in ("csr_matrix", "csc_matrix") or len(shape) != 2 or min(shape) < 0:
        raise Invalid("sparse encoding")
    data, idx, ptr = x["data"][()], x["indices"][()], x["indptr"][()]
    major, minor = shape if kind == "csr_matrix" else shape[::-1]
    if len(ptr) != major + 1 or ptr[0] != 0 or (np.diff(ptr) < 0).any() or \
            ptr[-1] != len(idx) or len(idx) != len(data):
        raise Invalid("indptr")
    if max(shape) > 10**6:
        raise Invalid("shape too large for a check")
    dense = np.zeros((major, minor), dtype=np.float64)
    seen = np.zeros((major, minor), dtype=bool)
    for r in range(major):
        for k in range(ptr[r], ptr[r + 1]):
            c = int(idx[k])
            if not 0 <= c < minor or seen[r, c]:
                raise Invalid("sparse index")
            seen[r, c] = True
            dense[r, c] = data[k]
    return dense if kind == "csr_matrix" else dense.T


def reference(family: str, seed_name: str, path: Path, args: list[str]) -> Table:
    data = path.read_bytes() if family not in ("gctx", "h5ad") else b""
    if family in ("gct", "gct.gz"):
        return ref_gct(data)
    if family == "tsv/csv":
        sep = "," if seed_name.endswith(".csv") else "\t"
        return ref_table(data, sep=sep, genes_in_rows="genes-in-rows" in args)
    if family == "soft":
        return ref_soft(data, "GPL96")
    if family == "series-matrix":
        return ref_series(data)
    if family == "gctx":
        return ref_gctx(path)
    return ref_h5ad(path)


# ====================================================================== comparison
def _out_texts(ds) -> list[str]:
    values = ds[()]
    if values.dtype.kind in "SO":
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values.tolist()]
    if values.dtype.kind == "f":
        return [repr(float(v)) for v in values.tolist()]
    return [str(int(v)) for v in values.tolist()]


def compare(ref: Table, out: Path) -> str | None:
    """None when the output holds what the reference read (by the documented rules), else
    what differs."""
    import h5py

    with h5py.File(out, "r") as f:
        genes = _h5_texts(f["0/META/ROW/id"])
        samples = _h5_texts(f["0/META/COL/id"])
        values = f["0/DATA/0/matrix"][()]
        row = {k: _out_texts(f["0/META/ROW"][k]) for k in f["0/META/ROW"] if k != "id"}
        col = {k: _out_texts(f["0/META/COL"][k]) for k in f["0/META/COL"] if k != "id"}
    if genes != ref.genes:
        return "gene ids differ"
    if samples != ref.samples:
        return "sample ids differ"
    if values.shape != ref.values.shape or not np.array_equal(values, ref.values,
                                                              equal_nan=True):
        return "values differ"
    for name, texts in ref.gene_meta.items():
        if name not in row:
            # a derived column of the same content may stand for it (symbol, entrez)
            return f"gene metadata {name!r} missing"
        if row[name] != texts:
            return f"gene metadata {name!r} differs"
    for name, texts in ref.sample_meta.items():
        if name not in col:
            return f"sample metadata {name!r} missing"
        got = col[name]
        if name == "values":  # a stale scale note is restated: "<scale> (from <note>)"
            got = [g if g == t else (t if g.endswith(f"(from {t})") else g)
                   for g, t in zip(got, texts)]
        if got != texts:
            return f"sample metadata {name!r} differs"
    return None


# ====================================================================== worker process
def _run_cli(argv: list[str]) -> dict[str, Any]:
    from geneinfer.cli import main

    out, err = io.StringIO(), io.StringIO()
    exc_text = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # a traceback: what the user would have seen
            rc, exc_text = 1, traceback.format_exc(limit=6)
    return {"rc": rc, "stderr": err.getvalue(), "exception": exc_text}


def worker_loop() -> None:
    """Answer tasks (JSON lines on stdin): convert, then (separately) check the output."""
    import warnings

    warnings.simplefilter("ignore")
    for line in sys.stdin:
        task = json.loads(line)
        res = _run_cli(task["argv"])
        print(json.dumps({"phase": "run", **res}), flush=True)
        verdict = None
        if task.get("check"):
            verdict = _check(task, res)
        print(json.dumps({"phase": "check", "verdict": verdict}), flush=True)


def _check(task: dict[str, Any], res: dict[str, Any]) -> str | None:
    """The outcome of a finished run (hang and crash are decided by the parent)."""
    if res["exception"] or res["rc"] not in (0, 2):
        return "traceback"
    if res["rc"] == 2:
        err = res["stderr"].strip()
        one_line = err.startswith("geneinfer: error: ") and "\n" not in err
        return "clean error" if one_line else "traceback"
    if task["kind"] == "predict":
        try:
            reference(task["family"], task["seed"], Path(task["input"]), task["args"])
        except Invalid as exc:
            return f"silent change: predicted from an input the reference refuses ({exc})"
        return "correct"
    try:
        ref = reference(task["family"], task["seed"], Path(task["input"]), task["args"])
    except Invalid as exc:
        return f"silent change: accepted an input the reference refuses ({exc})"
    diff = compare(ref, Path(task["output"]))
    return "correct" if diff is None else f"silent change: {diff}"


class Worker:
    """A worker process; restarted after a crash or a hang."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self._buf = b""

    def _start(self) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", GENEINFER_MALLOC_TUNING="0")
        env.setdefault("PYTHONPATH", str(ROOT / "src"))  # (a given one: another geneinfer)
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker"], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, bufsize=0)
        self._buf = b""

    def _read(self, timeout: float) -> dict[str, Any] | str:
        """The worker's next JSON line; "hang" after ``timeout`` s, "crash" if it died.
        (Raw reads: a buffered reader could hold the next line where select cannot see.)"""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                self.stop()
                return "hang"
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                self.proc.wait()
                code = self.proc.returncode
                self.proc = None
                return f"crash (exit {code})"
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def run(self, task: dict[str, Any]) -> tuple[str, str]:
        """``(outcome, detail)`` of one task."""
        if self.proc is None:
            self._start()
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(task) + "\n").encode())
        first = self._read(self.timeout + 60)  # + the worker's start-up
        if isinstance(first, str):
            return ("hang" if first == "hang" else "crash"), first
        second = self._read(self.timeout + 60)
        if isinstance(second, str):  # the reference reader died or hung: not geneinfer's
            return "unchecked", f"reference {second}"
        verdict = second["verdict"] or "?"
        detail = (first.get("exception") or first.get("stderr") or "").strip()[-400:]
        if verdict.startswith("silent change"):
            return "silent change", verdict
        return verdict, detail

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait()
            self.proc = None


# ====================================================================== driving
def make_model(folder: Path) -> Path:
    """A small ridge model on the real L1000 landmarks (for the predict sample)."""
    import h5py
    import pandas as pd

    from geneinfer.models.bundle import InferenceModel
    from geneinfer.models.linear import Ridge

    with h5py.File(SHARED / "l1000" / "test_l1000_highprecision.gctx", "r") as f:
        entrez = [str(v) for v in f["0/META/ROW/pr_gene_id"][:]]
        symbols = [v.decode() for v in f["0/META/ROW/pr_gene_symbol"][:]]
    table = pd.read_csv(SHARED / "l1000" / "test_l1000.gct", sep="\t", skiprows=2,
                        low_memory=False)
    X = table.iloc[35:, 12:].astype(np.float32).to_numpy().T
    rng = np.random.default_rng(0)
    W = rng.standard_normal((X.shape[1], 20)).astype(np.float32) * 0.03
    Y = X @ W + 6
    est = Ridge().fit(X, Y)
    model = InferenceModel.from_fitted(est, None, entrez,
                                       [str(900000 + k) for k in range(20)],
                                       landmark_symbols=symbols, landmark_means=X.mean(axis=0),
                                       info={"model": "ridge"})
    return model.save(folder / "model")


def tasks(seeds: dict[str, list[Seed]], families: list[str], n: int, seed: int,
          work: Path, model: Path | None, predict_every: int):
    """(family, index, task) for every input, made lazily (the mutated file written)."""
    for fi, family in enumerate(families):
        for i in range(n):
            rng = random.Random(seed * 1_000_003 + FAMILIES.index(family) * 100_003 + i)
            s = rng.choice(seeds[family])
            inp = work / f"in{fi}-{i}-{s.name}"
            if family in ("gctx", "h5ad"):
                done = mutate_hdf5(s, rng, inp)
            else:
                data, done = mutate_text(s, rng)
                inp.write_bytes(data)
            base = {"family": family, "seed": s.name, "input": str(inp), "args": s.args,
                    "mutations": done, "check": True}
            out = work / f"out{fi}-{i}.gctx"
            runs = [{**base, "kind": "convert", "output": str(out),
                     "argv": ["convert", str(inp), str(out), *s.args]}]
            if model is not None and predict_every and i % predict_every == 0:
                pout = work / f"pred{fi}-{i}.gctx"
                runs.append({**base, "kind": "predict", "output": str(pout), "argv": [
                    "predict", "--model", str(model), "--input", str(inp), "--output",
                    str(pout), "--missing-landmarks", "impute", "--max-impute", "1",
                    "--no-progress", "--data-dir", str(SHARED)]})
            yield family, i, runs


def _cleanup(runs: list[dict[str, Any]]) -> None:
    for task in runs:
        for key in ("input", "output"):
            p = Path(task[key])
            with contextlib.suppress(OSError):
                p.unlink()
            for extra in p.parent.glob(glob_escape(p.name) + ".*"):
                with contextlib.suppress(OSError):
                    extra.unlink() if extra.is_file() else shutil.rmtree(extra)


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def run(families: list[str], n: int, *, seed: int = 0, workers: int = 2,
        timeout: float = 30.0, predict_every: int = 25, keep: Path | None = None,
        quiet: bool = False) -> dict[str, Counter]:
    """Fuzz ``n`` inputs per family; return ``{family: Counter(outcome)}`` (predict runs
    are counted under ``"<family> (predict)"``)."""
    results: dict[str, Counter] = {}
    with tempfile.TemporaryDirectory(prefix="geneinfer-fuzz-") as tmp:
        root = Path(tmp)
        seeds = make_seeds(root)
        model = make_model(root) if predict_every else None
        work = root / "work"
        work.mkdir()
        source = tasks(seeds, families, n, seed, work, model, predict_every)
        lock = threading.Lock()
        t0 = time.time()

        def drive(worker: Worker) -> None:
            while True:
                with lock:  # one generator feeds every worker
                    item = next(source, None)
                if item is None:
                    return
                family, i, runs = item
                for task in runs:
                    outcome, detail = worker.run(task)
                    key = family if task["kind"] == "convert" else f"{family} (predict)"
                    with lock:
                        results.setdefault(key, Counter())[outcome] += 1
                    if outcome in BAD:
                        if keep is not None:
                            _keep(keep, family, i, task, outcome, detail)
                        if not quiet:
                            print(f"[{key} #{i}] {outcome}: {task['mutations']} "
                                  f"{detail[:300]}", file=sys.stderr, flush=True)
                _cleanup(runs)

        pool = [Worker(timeout) for _ in range(max(1, workers))]
        threads = [threading.Thread(target=drive, args=(w,)) for w in pool]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            for w in pool:
                w.stop()
        if not quiet:
            print(f"{sum(sum(c.values()) for c in results.values())} runs in "
                  f"{time.time() - t0:.0f} s", file=sys.stderr)
    return results


def _keep(keep: Path, family: str, i: int, task: dict[str, Any], outcome: str,
          detail: str) -> None:
    keep.mkdir(parents=True, exist_ok=True)
    stem = f"{family.replace('/', '_')}-{i}-{task['kind']}"
    src = Path(task["input"])
    if src.exists():
        shutil.copy(src, keep / f"{stem}{''.join(src.suffixes) or '.in'}")
    (keep / f"{stem}.json").write_text(json.dumps({**task, "outcome": outcome,
                                                   "detail": detail}, indent=1))


def table(results: dict[str, Counter]) -> str:
    """The outcome table, one row per family (and per family's predict sample)."""
    cols = list(OUTCOMES)
    width = max([len(k) for k in results] + [10])
    lines = [f"{'family':<{width}} " + " ".join(f"{c:>13}" for c in cols) + f" {'total':>7}",
             "-" * (width + 14 * len(cols) + 8)]
    for key in sorted(results, key=lambda k: (k.split(" ")[0], k)):
        counts = results[key]
        lines.append(f"{key:<{width}} " + " ".join(f"{counts.get(c, 0):>13}" for c in cols)
                     + f" {sum(counts.values()):>7}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10000, help="inputs per family")
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="worker processes (at most 2 here)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per input (hang)")
    p.add_argument("--predict-every", type=int, default=25,
                   help="also run every k-th input through predict (0: never)")
    p.add_argument("--keep", type=Path, default=None, help="folder for bad inputs")
    p.add_argument("--json", type=Path, default=None, help="write the counts here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker_loop()
        return 0
    families = [f for f in args.families.split(",") if f]
    unknown = set(families) - set(FAMILIES)
    if unknown:
        p.error(f"unknown families {sorted(unknown)}; choose from {', '.join(FAMILIES)}")
    results = run(families, args.n, seed=args.seed, workers=args.workers,
                  timeout=args.timeout, predict_every=args.predict_every, keep=args.keep)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps({k: dict(v) for k, v in results.items()}, indent=1))
    bad = sum(c.get(o, 0) for c in results.values() for o in BAD)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
