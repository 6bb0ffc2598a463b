"""Readers and writers under attack (issue 13): every case of the fault-injection run, on cuts
of the real shared files. Each is refused with one located error (or, for non-finite values
under ``nonfinite="missing"``, read as NaN and counted); nothing is silently changed."""

from __future__ import annotations

import gzip
import io
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from geneinfer.errors import GeneinferError, InputFormatError
from geneinfer.expression import ExpressionData
from geneinfer.io import NA_TOKENS, NonFinite, open_blocks, read, write
from geneinfer.io.cells import MAX_FIELD_CHARS, MAX_ID_CHARS, parse_texts

anndata = pytest.importorskip("anndata")

GEUVADIS = "rnaseq/geuvadis85_counts.tsv.gz"


def _geuvadis_lines(shared: Path, n: int = 300) -> list[str]:
    with gzip.open(shared / GEUVADIS, "rt") as fh:
        return [fh.readline().rstrip("\n") for _ in range(n)]


def _set_field(line: str, k: int, text: str, sep: str = "\t") -> str:
    fields = line.split(sep)
    fields[k] = text
    return sep.join(fields)


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="")
    return path


# ------------------------------------------------------------------ text cells
@pytest.mark.parametrize("bad", ["abc", "n/a", "\x00"])
def test_bad_cell_in_first_sample_column_is_named_not_turned_into_metadata(shared, tmp_path,
                                                                          bad):
    lines = _geuvadis_lines(shared)
    sample = lines[0].split("\t")[1]
    lines[5] = _set_field(lines[5], 1, bad)  # file line 6, column 2 (the first sample)
    path = _write_lines(tmp_path / "geuvadis.tsv", lines)
    with pytest.raises(InputFormatError) as err:
        read(path)  # was read as 84 samples, the first sample's values becoming metadata
    msg = str(err.value)
    assert err.value.where == 6
    assert "NUL" in msg if bad == "\x00" else f"{bad!r} in field 2 (sample {sample})" in msg
    # a leading text column (mostly not numbers, or named like metadata) stays metadata
    path = _write_lines(tmp_path / "t.tsv", [
        "gene_id\tsymbol\tchromosome\tS1\tS2",
        "ENSG00000000003\tTSPAN6\tX\t1\t2",
        "ENSG00000000005\tTNMD\t7\t3\t4",
        "ENSG00000000419\tDPM1\t20\t5\t6",
    ])
    data = read(path)
    assert list(data.sample_ids) == ["S1", "S2"]
    assert list(data.genes["chromosome"]) == ["X", "7", "20"]


def test_blank_line_before_short_row_does_not_hide_it(shared, tmp_path):
    lines = _geuvadis_lines(shared)
    lines.insert(10, "")  # file line 11
    lines[12] = "\t".join(lines[12].split("\t")[:-1])  # line 13: one field short
    path = _write_lines(tmp_path / "geuvadis.tsv", lines)
    with pytest.raises(InputFormatError, match=r"line 13: row has 85 fields \(expected 86"):
        read(path)  # was accepted, the missing field read as NaN
    # blank lines are skipped; messages name the lines of the file
    lines = _geuvadis_lines(shared, 50)
    clean = read(_write_lines(tmp_path / "clean.tsv", lines))
    blanks = [*lines[:5], "", "   ", *lines[5:]]
    blanks[30] = _set_field(blanks[30], 3, "oops")
    with pytest.raises(InputFormatError, match=r"line 31: non-numeric value 'oops'"):
        read(_write_lines(tmp_path / "b.tsv", blanks))
    blanks[30] = lines[28]
    data = read(_write_lines(tmp_path / "b2.tsv", blanks))
    np.testing.assert_array_equal(data.values, clean.values)


def test_nul_in_a_gct_value_is_refused_by_every_path(shared, tmp_path):
    lines = (shared / "l1000" / "test_l1000.gct").read_text().split("\n")
    lines[50] = _set_field(lines[50], 12, "10.\x001466")  # was read as 10.0 by convert
    path = tmp_path / "nul.gct"
    path.write_text("\n".join(lines), encoding="utf-8", newline="")
    for reader in (read, open_blocks):
        with pytest.raises(InputFormatError, match=r"nul\.gct, line 51: control character NUL"):
            reader(path)


@pytest.mark.parametrize("char", ["\x01", "\x0b", "\x1b", "\x7f", "\r"])
@pytest.mark.parametrize("fmt", ["gct", "tsv", "csv", "soft", "series"])
def test_control_characters_refused_with_their_line(tmp_path, char, fmt):
    texts = {
        "gct": "#1.2\n2\t1\nName\tDescription\tS1\ng1\tx\t1\ng2\ty\t2\n",
        "tsv": "gene_id\tS1\tS2\nENSG00000000003\t1\t2\nENSG00000000005\t3\t4\n",
        "csv": "gene_id,S1,S2\nENSG00000000003,1,2\nENSG00000000005,3,4\n",
        "soft": "^SAMPLE = GSM1\n!Sample_platform_id = GPL96\n!sample_table_begin\n"
                "ID_REF\tVALUE\n1007_s_at\t1.5\n1053_at\t2.5\n!sample_table_end\n",
        "series": '!Series_title\t"x"\n!Sample_geo_accession\t"GSM1"\n'
                  '!series_matrix_table_begin\n"ID_REF"\t"GSM1"\n"1007_s_at"\t1.5\n'
                  '"1053_at"\t2.5\n!series_matrix_table_end\n',
    }
    lines = texts[fmt].split("\n")
    lines[2] = lines[2][:3] + char + lines[2][3:]  # file line 3
    name = {"soft": "x_family.soft", "series": "x_series_matrix.txt"}.get(fmt, f"x.{fmt}")
    path = tmp_path / name
    path.write_bytes("\n".join(lines).encode())
    with pytest.raises(InputFormatError, match="control character") as err:
        read(path)
    assert err.value.where == 3


# ------------------------------------------------------------------ non-finite values
NONFINITE = ["inf", "-Infinity", "1e999", "3.5e38", "1e300"]


def _gct(values: list[str]) -> str:
    rows = "".join(f"g{k}\tx\t{v}\t1\n" for k, v in enumerate(values))
    return f"#1.2\n{len(values)}\t2\nName\tDescription\tS1\tS2\n{rows}"


@pytest.mark.parametrize("text", NONFINITE)
def test_nonfinite_text_values_refused_or_read_as_missing(tmp_path, text):
    path = tmp_path / "x.gct"
    path.write_text(_gct(["1.5", text, "2.5"]))
    with pytest.raises(InputFormatError, match=r"line 5: value -?inf for gene g1, sample S1"):
        read(path)
    counter = NonFinite("missing")
    data = read(path, nonfinite=counter)
    assert counter.count == 1
    assert np.isnan(data.values[0, 1]) and data.values[0, 2] == np.float32(2.5)
    tsv = tmp_path / "x.tsv"
    tsv.write_text(f"gene_id\tS1\nENSG00000000003\t1\nENSG00000000005\t{text}\n")
    with pytest.raises(InputFormatError, match="line 3: value"):
        read(tsv)
    assert np.isnan(read(tsv, nonfinite="missing").values[0, 1])


@pytest.mark.parametrize("fmt", ["soft", "series"])
def test_nonfinite_in_soft_and_series_matrix(tmp_path, fmt):
    if fmt == "soft":
        path = tmp_path / "x_family.soft"
        path.write_text("^SAMPLE = GSM1\n!Sample_platform_id = GPL96\n!sample_table_begin\n"
                        "ID_REF\tVALUE\n1007_s_at\t1e999\n1053_at\t2.5\n!sample_table_end\n")
        line = 5
    else:
        path = tmp_path / "x_series_matrix.txt"
        path.write_text('!Series_title\t"x"\n!series_matrix_table_begin\n"ID_REF"\t"GSM1"\n'
                        '"1007_s_at"\t1e999\n"1053_at"\t2.5\n!series_matrix_table_end\n')
        line = 4
    with pytest.raises(InputFormatError) as err:
        read(path)
    assert err.value.where == line and "infinite" in str(err.value)
    counter = NonFinite("missing")
    data = read(path, nonfinite=counter)
    assert counter.count == 1 and np.isnan(data.values[0, 0]) and data.values[0, 1] == 2.5


@pytest.mark.parametrize("value", [np.inf, -np.inf, 1e300, 3.5e38])
def test_nonfinite_gctx_values_refused_naming_sample_and_gene(l1000_gctx, tmp_path, value):
    path = tmp_path / "x.gctx"
    with h5py.File(l1000_gctx, "r") as src, h5py.File(path, "w") as f:
        X = src["0/DATA/0/matrix"][:20].astype(np.float64)
        X[3, 5] = value
        f["0/DATA/0/matrix"] = X
        f["0/META/ROW/id"] = src["0/META/ROW/id"][:]
        f["0/META/COL/id"] = src["0/META/COL/id"][:20]
        sample = src["0/META/COL/id"][3].decode()
        gene = src["0/META/ROW/id"][5].decode()
    with pytest.raises(InputFormatError) as err:
        read(path)  # was read as an infinity without a word
    assert f"sample {sample}, gene {gene}" in str(err.value) and err.value.where == \
        "/0/DATA/0/matrix"
    counter = NonFinite("missing")
    data = read(path, nonfinite=counter)
    assert counter.count == 1 and np.isnan(data.values[3, 5])
    assert np.isfinite(np.delete(data.values.ravel(), 3 * data.n_genes + 5)).all()


def test_nonfinite_h5ad_values(tmp_path):
    X = np.arange(12, dtype=np.float64).reshape(3, 4)
    X[1, 2] = 1e300
    path = tmp_path / "x.h5ad"
    anndata.AnnData(X=X, obs=pd.DataFrame(index=["a", "b", "c"]),
                    var=pd.DataFrame(index=["g1", "g2", "g3", "g4"])).write_h5ad(path)
    for reader in (read, lambda p: open_blocks(p).read(0, 3)):
        with pytest.raises(InputFormatError, match="sample b, gene g3 is infinite"):
            reader(path)
    assert np.isnan(read(path, nonfinite="missing").values[1, 2])


def test_writers_refuse_what_readers_refuse(tmp_path):
    data = ExpressionData(values=np.array([[1.0, np.inf]]), gene_ids=["g1", "g2"],
                          sample_ids=["s1"])
    for name in ("x.gct", "x.tsv", "x.gctx", "x.h5ad"):
        with pytest.raises(GeneinferError, match="cannot write the infinite value of sample "
                                                 "s1, gene g2"):
            write(data, tmp_path / name)
    ok = ExpressionData(values=np.ones((1, 2)), gene_ids=["g1", "g\x01"], sample_ids=["s1"])
    for name in ("x.gct", "x.tsv"):
        with pytest.raises(GeneinferError, match="control character U\\+0001"):
            write(ok, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ sizes and lengths
def test_long_gene_id_is_one_line_error_and_never_written(shared, tmp_path):
    lines = _geuvadis_lines(shared, 20)
    lines[7] = _set_field(lines[7], 0, "E" * 200_000)  # over the csv module's field limit
    path = _write_lines(tmp_path / "long.tsv", lines)
    with pytest.raises(InputFormatError) as err:
        read(path)  # was a traceback from the csv module
    assert "\n" not in str(err.value)
    lines[7] = _set_field(lines[7], 0, "E" * (MAX_ID_CHARS + 1))
    with pytest.raises(InputFormatError, match=f"line 8: gene id of {MAX_ID_CHARS + 1} char"):
        read(_write_lines(tmp_path / "long2.tsv", lines))
    huge = ExpressionData(values=np.ones((1, 1)), gene_ids=["G" * 2_000_000], sample_ids=["s"])
    for name in ("x.gct", "x.tsv", "x.gctx", "x.h5ad"):  # convert wrote such ids before
        with pytest.raises(GeneinferError, match="2000000 characters"):
            write(huge, tmp_path / name)
    meta = pd.DataFrame({"note": ["n" * (MAX_FIELD_CHARS + 1)]}, index=["g"])
    with pytest.raises(GeneinferError, match="at most 131072"):
        write(ExpressionData(values=np.ones((1, 1)), gene_ids=["g"], sample_ids=["s"],
                             genes=meta), tmp_path / "x.gct")


def test_gct_declaring_more_rows_than_the_file_holds(shared, tmp_path):
    lines = (shared / "l1000" / "test_l1000.gct").read_text().split("\n")
    lines[1] = "999999999999\t377\t11\t35"
    path = tmp_path / "huge.gct"
    path.write_text("\n".join(lines))
    for reader in (read, open_blocks):  # was a MemoryError before any check
        with pytest.raises(InputFormatError, match=r"line 2: declares 999999999999 genes"):
            reader(path)


def _run_capped(code: str, *, address_space: int = 3 << 30) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter whose memory is capped (a bad reader fails there
    instead of taking the machine's memory) and whose crash cannot take pytest down."""
    prog = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({address_space}, {address_space}))
        from geneinfer.errors import InputFormatError
        from geneinfer.io import read
        try:
            {code}
        except InputFormatError as exc:
            print(exc)
            sys.exit(2)
    """)
    return subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True,
                          timeout=300)


def test_gctx_declaring_4e9_sample_ids(tmp_path):
    path = tmp_path / "big.gctx"
    with h5py.File(path, "w") as f:
        f.create_dataset("0/META/COL/id", shape=(4_000_000_000,), dtype="S10", chunks=(1024,))
        f["0/META/ROW/id"] = np.array([b"g1", b"g2"])
        f.create_dataset("0/DATA/0/matrix", shape=(4_000_000_000, 2), dtype="f4",
                         chunks=(1024, 2))
    r = _run_capped(f"read({str(path)!r})")
    assert r.returncode == 2, r.stderr[-500:]  # was a MemoryError
    assert "/0/META/COL/id: declares shape (4000000000,)" in r.stdout


def _sparse_h5ad(path: Path) -> Path:
    import scipy.sparse as sp

    X = sp.random(6, 8, density=0.5, format="csr", random_state=0, dtype=np.float32)
    anndata.AnnData(X=X, obs=pd.DataFrame(index=[f"s{i}" for i in range(6)]),
                    var=pd.DataFrame(index=[f"g{i}" for i in range(8)])).write_h5ad(path)
    return path


@pytest.mark.parametrize(("dataset", "position", "value", "message"), [
    ("indices", 0, 8, "an index outside 0..7"),  # the value was lost, exit 0
    ("indices", 0, 10**9, "an index outside 0..7"),  # segfault (rc 139)
    ("indices", 0, -1, "an index outside 0..7"),
    ("indices", 1, None, "an entry stored twice"),
    ("indptr", 3, 999, "index pointers"),
])
def test_sparse_h5ad_indices_checked_before_use(tmp_path, dataset, position, value, message):
    path = _sparse_h5ad(tmp_path / "x.h5ad")
    with h5py.File(path, "r+") as f:
        arr = f[f"X/{dataset}"][()].astype(np.int64)
        arr[position] = arr[position - 1] if value is None else value
        del f[f"X/{dataset}"]
        f[f"X/{dataset}"] = arr
    # in a separate process: before the check, scipy could crash on these
    r = _run_capped(f"read({str(path)!r})")
    assert r.returncode == 2, (r.returncode, r.stderr[-500:])
    assert message in r.stdout and f"/X/{dataset}" in r.stdout


def test_hdf5_link_loop_and_damaged_bytes_are_located_errors(l1000_gctx, tmp_path):
    loop = tmp_path / "loop.gctx"
    with h5py.File(loop, "w") as f:
        f["0/META/ROW/id"] = np.array([b"a"])
        f["0/META/COL/id"] = np.array([b"s"])
        f["0/DATA/0/matrix"] = h5py.SoftLink("/0/DATA/0/matrix")
    with pytest.raises(InputFormatError, match=r"loop\.gctx, /0/DATA/0/matrix: cannot read"):
        read(loop)
    h5ad = _sparse_h5ad(tmp_path / "x.h5ad")
    rng = random.Random(13)
    for src in (l1000_gctx, h5ad):
        data = src.read_bytes()
        for k in range(25):  # flipped bytes anywhere: a located error or the (changed) data
            raw = bytearray(data)
            for _ in range(4):
                raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
            path = tmp_path / f"flip{k}{src.suffix}"
            path.write_bytes(bytes(raw))
            try:
                read(path)
            except InputFormatError as exc:
                assert exc.path == str(path) and "\n" not in str(exc)


# ------------------------------------------------------------------ one parser
def test_numeric_grammar_agrees_with_the_fast_parser():
    """pandas' C parser (the fast path) accepts exactly the numbers of the grammar, with
    the same float32 values, on a seeded corpus of number-like texts."""
    rng = random.Random(7)
    alphabet = "0123456789.eE+- infINFatyNn_x,dD"
    texts = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7)))
             for _ in range(20000)}
    texts |= {repr(rng.uniform(-1e6, 1e6)) for _ in range(2000)}
    texts |= {f"{rng.lognormvariate(0, 40):.9g}" for _ in range(2000)} | set(NA_TOKENS)
    texts = sorted(t for t in texts if "," not in t)
    for t in texts:
        try:
            with np.errstate(over="ignore"):  # float32 overflow: inf, as the reader sees it
                fast = pd.read_csv(io.BytesIO(f"x\t{t}\n".encode()), sep="\t", header=None,
                                   dtype={0: str, 1: np.float32}, keep_default_na=False,
                                   na_values={1: list(NA_TOKENS)},
                                   float_precision="round_trip")
            ok, fast_value = len(fast) == 1, fast[1].to_numpy()[0] if len(fast) else None
        except ValueError:
            ok, fast_value = False, None
        value, bad = parse_texts([t])
        if ok:
            assert bad is None, t
            assert np.array_equal(value[:1], np.array([fast_value], np.float32),
                                  equal_nan=True), t


def test_extra_field_at_a_chunk_boundary_is_refused(tmp_path):
    """pandas drops an extra field on the first row of a later chunk without a word."""
    rows = [f"ENSG{k:011d}\t{k}\t{k + 1}" for k in range(6000)]
    rows[5000] += "\t99"  # data row 5001: the first row of the parser's second chunk
    path = _write_lines(tmp_path / "t.tsv", ["gene_id\tS1\tS2", *rows])
    with pytest.raises(InputFormatError, match=r"line 5002: row has 4 fields"):
        read(path)


def test_a_quote_above_the_table_does_not_shift_its_rows(tmp_path):
    path = tmp_path / "x_series_matrix.txt"
    path.write_text('!Series_title\t"x\n!series_matrix_table_begin\n"ID_REF"\t"GSM1"\n'
                    '"1007_s_at"\t1.5\n"1053_at"\t2.5\n!series_matrix_table_end\n')
    data = read(path)
    assert list(data.gene_ids) == ["1007_s_at", "1053_at"]
    assert data.values.tolist() == [[1.5, 2.5]]


def test_atomic_writes_have_normal_permissions(tmp_path):
    data = ExpressionData(values=np.ones((2, 2)), gene_ids=["g1", "g2"], sample_ids=["a", "b"])
    old = os.umask(0o022)
    try:
        for name in ("x.gct", "x.tsv", "x.gctx", "x.h5ad"):
            write(data, tmp_path / name)
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name  # was 0600
    finally:
        os.umask(old)


def test_soft_table_with_a_repeated_column_name(tmp_path):
    """Found by the fuzz harness: a repeated name in a table header was a traceback."""
    path = tmp_path / "x_family.soft"
    path.write_text("^PLATFORM = GPL96\n!platform_table_begin\nID\tGB_ACC\tID\n"
                    "1007_s_at\tU48705\tx\n1053_at\tM87338\ty\n!platform_table_end\n"
                    "^SAMPLE = GSM11805\n!Sample_platform_id = GPL96\n!sample_table_begin\n"
                    "ID_REF\tVALUE\tABS_CALL\n1007_s_at\t1946.9\tP\n1053_at\t53.8\tA\n"
                    "!sample_table_end\n")
    with pytest.raises(InputFormatError, match="duplicate GPL96 column ids: ID") as err:
        read(path)
    assert err.value.where == 3


def test_h5ad_whose_x_does_not_match_obs_and_var(tmp_path):
    """Found by the fuzz harness: predict (anndata's backed mode) read a matrix one gene
    narrower than ``var`` without a word."""
    path = tmp_path / "x.h5ad"
    anndata.AnnData(X=np.arange(12, dtype=np.float32).reshape(3, 4),
                    obs=pd.DataFrame(index=["a", "b", "c"]),
                    var=pd.DataFrame(index=["g1", "g2", "g3", "g4"])).write_h5ad(path)
    with h5py.File(path, "r+") as f:
        narrow = f["X"][:, :3]
        del f["X"]
        f["X"] = narrow
        f["X"].attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
    for reader in (read, open_blocks):
        with pytest.raises(InputFormatError, match=r"/X: X has shape \(3, 3\) \(expected "
                                                   r"\(3, 4\)"):
            reader(path)


def _global_heap_objects(raw: bytes) -> list[tuple[int, int]]:
    """``(offset, size)`` of the objects of the file's first global heap collection."""
    import struct

    start = raw.find(b"GCOL")
    end = start + struct.unpack_from("<Q", raw, start + 8)[0]
    pos, found = start + 16, []
    while pos + 16 <= end:
        index, _, _, size = struct.unpack_from("<HHIQ", raw, pos)
        if index == 0:
            break
        found.append((pos, size))
        pos += 16 + (size + 7) // 8 * 8
    return found


def test_hdf5_metadata_that_makes_the_library_loop_is_refused(tmp_path):
    """Found by the fuzz harness: one changed byte in a global heap (the text of attributes)
    makes the HDF5 library loop for ever while reading an attribute."""
    import struct

    path = tmp_path / "loop.h5ad"
    anndata.AnnData(X=np.ones((3, 2), np.float32),
                    obs=pd.DataFrame({"sex": ["f", "m", "f"]}, index=["a", "b", "c"]),
                    var=pd.DataFrame(index=["g1", "g2"])).write_h5ad(path)
    raw = bytearray(path.read_bytes())
    offset, size = _global_heap_objects(bytes(raw))[-3]
    struct.pack_into("<Q", raw, offset + 8, size + 16)  # the object now overlaps the next
    path.write_bytes(bytes(raw))
    walk = (f"import h5py; f = h5py.File({str(path)!r}); "
            "f.visititems(lambda n, o: [o.attrs[k] for k in o.attrs])")
    try:
        subprocess.run([sys.executable, "-c", walk], capture_output=True, timeout=20)
        pytest.skip("this HDF5 library does not loop on the damaged heap")
    except subprocess.TimeoutExpired:
        pass  # it does: geneinfer must not
    env = {**os.environ, "GENEINFER_HDF5_PROBE_SECONDS": "3"}
    r = subprocess.run([sys.executable, "-m", "geneinfer", "convert", str(path),
                        str(tmp_path / "o.gctx")], capture_output=True, text=True, timeout=120,
                       env=env)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (f"geneinfer: error: {path}: reading its HDF5 structure did not "
                                "finish in 3 s (the HDF5 library loops on damaged metadata) "
                                "(expected an AnnData .h5ad file (X, obs, var))")
