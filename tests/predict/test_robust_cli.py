"""Commands under attack (issue 13): options, model files, locks, leftovers, failing disks,
imputation limits and worker processes, on a real model and real L1000 profiles. Every user
mistake is one line ``geneinfer: error: ...`` and exit code 2, and nothing is left behind."""

from __future__ import annotations

import ctypes
import gzip
import json
import logging
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from geneinfer.cli import main
from geneinfer.errors import ConfigError, InputFormatError, MissingGenesError, ModelFileError
from geneinfer.expression import ExpressionData
from geneinfer.models.bundle import MODEL_JSON, InferenceModel
from geneinfer.predict import PlanOptions, predict_file

from .helpers import L1000_GCT, generated_profiles, read_matrix, write_gctx

RUN_PREDICT = Path(__file__).with_name("run_predict.py")
BLADDER = "gpl96/bladderbatch.gct.gz"


_PR_CAPBSET_DROP, _CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 24, 1, 2


def _cli(*args: str, limit_bytes: int | None = None, obey_modes: bool = False,
         timeout: float = 300) -> subprocess.CompletedProcess:
    """``geneinfer ARGS`` in a fresh process, optionally under a file-size limit (how a full
    disk looks to a writer), or (``obey_modes``) without root's power to write anywhere."""
    def setup() -> None:
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
        if obey_modes and os.geteuid() == 0:
            libc = ctypes.CDLL(None, use_errno=True)
            for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
                if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                    raise OSError(ctypes.get_errno(), "cannot drop root's file capabilities")

    return subprocess.run([sys.executable, "-m", "geneinfer", *args], capture_output=True,
                          text=True, timeout=timeout, preexec_fn=setup)


def _one_line_error(r: subprocess.CompletedProcess, *parts: str) -> None:
    """Exit 2 and one error line (after any warnings the run logged), no traceback."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr[-2000:]
    assert lines and all(ln.startswith("WARNING ") for ln in lines[:-1]), r.stderr
    err = lines[-1]
    assert err.startswith("geneinfer: error: "), err
    for part in parts:
        assert part in err, err


@pytest.fixture(scope="module")
def profiles(shared, tmp_path_factory):
    """600 realistic L1000 profiles (all 978 landmarks) in a GCTX file."""
    d = generated_profiles(shared, 600, seed=11)
    path = tmp_path_factory.mktemp("in") / "profiles.gctx"
    write_gctx(path, d["X"], d["probe"], d["sample_ids"],
               gene_meta={"pr_gene_id": np.array([int(e) for e in d["entrez"]]),
                          "pr_gene_symbol": np.array(d["symbol"], dtype="S")})
    return d, path


def _subset(d: dict, keep: np.ndarray, path: Path, X: np.ndarray | None = None) -> Path:
    X = d["X"][:, keep] if X is None else X
    return write_gctx(path, X, [d["probe"][i] for i in keep], d["sample_ids"],
                      gene_meta={"pr_gene_id": np.array([int(d["entrez"][i]) for i in keep])})


# ------------------------------------------------------------------ options
@pytest.mark.parametrize(("option", "value", "message"), [
    ("--batch-size", "-1", "argument --batch-size: must be at least 1, got -1"),
    ("--batch-size", "0", "must be at least 1"),
    ("--batch-size", "abc", "expected a whole number, got 'abc'"),
    ("--threads", "0", "argument --threads: must be at least 1, got 0"),
    ("--block-size", "0", "argument --block-size: must be at least 1"),
    ("--workers", "-2", "argument --workers: must be at least 1"),
    ("--min-r", "1.5", "argument --min-r: must be between -1 and 1, got 1.5"),
    ("--min-r", "nan", "expected a finite number"),
    ("--max-impute", "2", "argument --max-impute: must be between 0 and 1"),
])
def test_numeric_options_checked_on_one_line(model_dir, profiles, tmp_path, capsys, option,
                                             value, message):
    out = tmp_path / "o.gctx"
    rc = main(["predict", "--model", str(model_dir), "--input", str(profiles[1]), "--output",
               str(out), option, value, "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("geneinfer: error: ") and "\n" not in err
    assert message in err
    assert not out.exists()  # --batch-size -1 wrote an all-zero matrix, exit 0


def test_numeric_options_checked_in_the_api(model_dir, profiles, tmp_path):
    for bad in ({"batch_size": -1}, {"block_size": 0}, {"min_r": 2.0}, {"max_impute": -0.1},
                {"nonfinite": "zero"}):
        with pytest.raises(ConfigError):
            PlanOptions(**bad)
    for bad in ({"workers": 0}, {"threads": 0}):
        with pytest.raises(ConfigError, match="at least 1"):
            predict_file(model_dir, profiles[1], tmp_path / "o.gctx", progress=False, **bad)
    assert main(["train", "--train", "x.gct", "--out", str(tmp_path / "m"),
                 "--valid-fraction", "1.5"]) == 2


# ------------------------------------------------------------------ model files
def test_model_json_is_covered_by_its_digest(model, model_dir, profiles, tmp_path, caplog):
    path = tmp_path / "m"
    shutil.copytree(model_dir, path)
    doc = json.loads((path / MODEL_JSON).read_text())
    ids = doc["targets"]["ids"]
    ids[0], ids[1] = ids[1], ids[0]  # predictions would come under the wrong genes, exit 0
    (path / MODEL_JSON).write_text(json.dumps(doc, indent=1))
    r = _cli("predict", "--model", str(path), "--input", str(profiles[1]), "--output",
             str(tmp_path / "o.gctx"))
    _one_line_error(r, "model.json: content does not match its recorded digest")
    # format 1 (no digest) still loads, with a warning; a digest in a format-1 file does not
    doc["targets"]["ids"][:2] = ids[1], ids[0]
    doc["format_version"] = 1
    del doc["files"][MODEL_JSON]
    (path / MODEL_JSON).write_text(json.dumps(doc))
    with caplog.at_level(logging.WARNING):
        old = InferenceModel.load(path)
    assert old.target_ids == model.target_ids and "format 1 has no digest" in caplog.text
    doc["files"][MODEL_JSON] = {"sha256_canonical": "0" * 64}
    (path / MODEL_JSON).write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="format 1 files carry no digest"):
        InferenceModel.load(path)


def test_deeply_nested_or_huge_model_json_refused(model_dir, tmp_path):
    path = tmp_path / "m"
    shutil.copytree(model_dir, path)
    (path / MODEL_JSON).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelFileError, match="nested too deeply"):  # was a RecursionError
        InferenceModel.load(path)
    (path / MODEL_JSON).write_text('{"a": ' * 80 + "1" + "}" * 80)
    with pytest.raises(ModelFileError, match="nested too deeply"):
        InferenceModel.load(path)
    with open(path / MODEL_JSON, "wb") as fh:
        fh.truncate(65 * 1024 * 1024)  # sparse: no disk used
    with pytest.raises(ModelFileError, match="implausibly large"):
        InferenceModel.load(path)


# ------------------------------------------------------------------ training runs
def _train(shared: Path, out: Path, *extra: str, train: Path | None = None
           ) -> subprocess.CompletedProcess:
    return _cli("train", "--model", "ridge", "--train", str(train or shared / BLADDER),
                "--out", str(out), "--data-dir", str(shared), "--no-dedup", "--quiet", *extra)


def test_train_replaces_a_model_only_when_asked_or_when_rerun(shared, tmp_path):
    out = tmp_path / "m"
    assert _train(shared, out).returncode == 0
    first = (out / MODEL_JSON).read_text()
    r = _train(shared, out, "--param", "alphas=[10]")  # other settings: silently replaced
    _one_line_error(r, f"{out} already holds a model trained on other data or settings",
                    "--overwrite")
    assert (out / MODEL_JSON).read_text() == first
    assert _train(shared, out).returncode == 0  # the same training again may replace it
    assert _train(shared, out, "--param", "alphas=[10]", "--overwrite").returncode == 0
    assert InferenceModel.load(out).estimator.get_params()["alphas"] == (10,)


def _hold_lock(target: Path) -> subprocess.Popen:
    """Another process holding the output lock of ``target`` (as a running geneinfer)."""
    code = textwrap.dedent(f"""
        import sys, time
        from geneinfer.utils.locks import exclusive_lock
        with exclusive_lock({str(target)!r}, what="writing"):
            print("locked", flush=True)
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_on_the_same_output_stops_naming_the_holder(shared, model_dir, profiles,
                                                                 tmp_path):
    cases = {
        "train": lambda out: _train(shared, out),
        "predict": lambda out: _cli("predict", "--model", str(model_dir), "--input",
                                    str(profiles[1]), "--output", str(out)),
        "convert": lambda out: _cli("convert", str(shared / L1000_GCT), str(out)),
    }
    for name, run in cases.items():
        out = tmp_path / (f"{name}.gctx" if name != "train" else "m")
        holder = _hold_lock(out)
        try:
            r = run(out)
        finally:
            holder.kill()
            holder.wait()
        _one_line_error(r, f"pid {holder.pid}", str(out))
        assert not out.exists()


# ------------------------------------------------------------------ leftovers
def _die_while_writing(target: Path, *, folder: bool) -> None:
    """A process killed (SIGKILL) half-way through writing ``target``."""
    code = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from geneinfer.utils.files import atomic_dir, atomic_path
        with ({"atomic_dir" if folder else "atomic_path"})({str(target)!r}) as tmp:
            part = tmp / "weights.safetensors" if {folder} else tmp
            part.write_bytes(b"half a file")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def test_leftovers_of_killed_writes_are_removed_by_the_next_run(shared, tmp_path):
    out = tmp_path / "ksave"
    _die_while_writing(out, folder=True)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")]
    assert _train(shared, out).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ksave"]  # no .ksave.*.part
    gct = tmp_path / "out.gct"
    _die_while_writing(gct, folder=False)
    assert any(p.name.startswith(".out.gct.") for p in tmp_path.iterdir())
    assert main(["convert", str(shared / L1000_GCT), str(gct)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ksave", "out.gct"]


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat_line = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat_line.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_workers_die_with_their_parent(model_dir, profiles, tmp_path):
    args = {"model": str(model_dir), "input": str(profiles[1]), "output": str(tmp_path / "o.gctx"),
            "block_size": 50, "workers": 2, "threads": 1, "delay": 10.0}
    parent = subprocess.Popen([sys.executable, str(RUN_PREDICT), json.dumps(args)],
                              stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 120
    workers: list[int] = []
    while time.time() < deadline and len(workers) < 2:
        time.sleep(0.2)
        workers = [p for p in _children(parent.pid)
                   if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
    assert len(workers) == 2, "workers did not start"
    time.sleep(3)  # well inside their blocks
    parent.kill()  # kill -9 of the parent only, not of its process group
    parent.wait()
    deadline = time.time() + 15
    while time.time() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.2)
    left = [p for p in workers if _alive(p)]
    for p in left:  # do not leave them running if the test fails
        os.kill(p, signal.SIGKILL)
    assert not left, "worker processes outlived their killed parent"


# ------------------------------------------------------------------ outputs and disks
@pytest.mark.parametrize("name", ["o.gctx", "o.h5ad", "o.gct", "o.tsv"])
def test_predict_creates_the_output_folder_for_every_format(model_dir, profiles, tmp_path,
                                                            name):
    out = tmp_path / "new" / "dir" / name  # .gctx failed while .gct created it
    res = predict_file(model_dir, profiles[1], out, progress=False)
    assert out.is_file() and res.n_samples == 600
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_read_only_output_folder_is_one_line_for_every_command(shared, model_dir, profiles,
                                                               tmp_path):
    """(Root writes anywhere: the commands run without that capability.)"""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    runs = [
        ("convert", str(profiles[1]), str(ro / "c.gct")),
        ("convert", str(profiles[1]), str(ro / "c.gctx")),
        ("predict", "--model", str(model_dir), "--input", str(profiles[1]), "--output",
         str(ro / "p.gctx")),
        ("predict", "--model", str(model_dir), "--input", str(profiles[1]), "--output",
         str(ro / "p.gct")),
        ("train", "--model", "ridge", "--train", str(shared / BLADDER), "--out", str(ro / "m"),
         "--data-dir", str(shared), "--no-dedup", "--quiet"),
    ]
    try:
        for args in runs:
            r = _cli(*args, obey_modes=True)
            _one_line_error(r, str(ro), "Permission denied")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_file_size_limit_is_one_line_and_leaves_nothing(shared, model_dir, profiles, tmp_path):
    """A file-size limit (``ulimit -f``) fails writes as a full disk does (EFBIG / ENOSPC)."""
    src = shared / L1000_GCT
    runs = [
        ["convert", str(src), str(tmp_path / "c.gct")],
        ["convert", str(src), str(tmp_path / "c.h5ad")],
        ["convert", str(src), str(tmp_path / "c.tsv")],
        ["predict", "--model", str(model_dir), "--input", str(profiles[1]), "--output",
         str(tmp_path / "p.gct"), "--no-progress"],
        ["predict", "--model", str(model_dir), "--input", str(profiles[1]), "--output",
         str(tmp_path / "p.tsv"), "--no-progress"],
        ["train", "--model", "ridge", "--train", str(shared / BLADDER), "--out",
         str(tmp_path / "m"), "--data-dir", str(shared), "--no-dedup", "--quiet"],
    ]
    for args in runs:
        r = _cli(*args, limit_bytes=300_000)
        _one_line_error(r, "disk full or file size limit")
        assert list(tmp_path.iterdir()) == [], (args, list(tmp_path.iterdir()))


# ------------------------------------------------------------------ imputation limits
def test_imputing_most_landmarks_is_refused_unless_forced(model, model_dir, profiles,
                                                          tmp_path):
    d, _ = profiles
    few = _subset(d, np.arange(100), tmp_path / "few.gctx")  # 878 of 978 landmarks absent
    out = tmp_path / "o.gctx"
    r = _cli("predict", "--model", str(model_dir), "--input", str(few),
             "--output", str(out), "--missing-landmarks", "impute", "--no-progress")
    _one_line_error(r, "878 of 978 landmark genes of the model are missing", "(89.8%)",
                    "--max-impute 0.9")
    assert not out.exists()
    r = _cli("predict", "--model", str(model_dir), "--input", str(few),
             "--output", str(out), "--missing-landmarks", "impute", "--max-impute", "0.9",
             "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "878 of 978 landmark genes missing" in r.stderr  # told also under --no-progress
    data = ExpressionData(values=d["X"][:, :100], gene_ids=[d["entrez"][i] for i in range(100)],
                          sample_ids=d["sample_ids"], scale="log2", gene_id_kind="entrez")
    with pytest.raises(MissingGenesError, match=r"--max-impute 0\.9"):
        model.predict(data, missing_landmarks="impute")
    assert model.predict(data, missing_landmarks="impute",
                         max_impute_fraction=1.0).n_samples == 600


def test_a_few_absent_landmarks_are_still_imputed_and_always_reported(model_dir, profiles,
                                                                      tmp_path):
    d, _ = profiles
    inp = _subset(d, np.arange(50, 978), tmp_path / "most.gctx")  # 50 absent: 5.1%
    r = _cli("predict", "--model", str(model_dir), "--input", str(inp), "--output",
             str(tmp_path / "o.gctx"), "--missing-landmarks", "impute", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "50 of 978 landmark genes missing" in r.stderr  # under --no-progress: no note


# ------------------------------------------------------------------ non-finite inputs
def test_infinite_landmarks_refused_or_read_as_missing(model, model_dir, profiles, tmp_path):
    d, _ = profiles
    X = d["X"].copy()
    X[7, 3] = np.inf
    inp = _subset(d, np.arange(978), tmp_path / "inf.gctx", X=X)
    out = tmp_path / "o.gctx"
    r = _cli("predict", "--model", str(model_dir), "--input", str(inp), "--output", str(out))
    _one_line_error(r, f"sample {d['sample_ids'][7]}, gene {d['probe'][3]} is infinite")
    r = _cli("predict", "--model", str(model_dir), "--input", str(inp), "--output", str(out),
             "--nonfinite", "missing", "--missing-landmarks", "impute", "--no-progress")
    assert r.returncode == 0 and "1 non-finite values" in r.stderr, r.stderr
    X[7, 3] = model.landmark_means[3]
    np.testing.assert_allclose(read_matrix(out), model.predict_log2(X), rtol=1e-5, atol=1e-4)
    data = ExpressionData(values=d["X"].copy(), gene_ids=d["entrez"],
                          sample_ids=d["sample_ids"], scale="log2", gene_id_kind="entrez")
    data.values[2, 9] = -np.inf  # in memory: was treated as a very small value
    with pytest.raises(InputFormatError, match="infinite"):
        model.predict(data)


def test_train_refuses_infinite_values_or_reads_them_as_missing(shared, tmp_path):
    with gzip.open(shared / BLADDER, "rt") as fh:
        lines = fh.read().split("\n")
    fields = lines[60].split("\t")
    fields[20] = "inf"
    lines[60] = "\t".join(fields)
    src = tmp_path / "inf.gct"
    src.write_text("\n".join(lines))
    out = tmp_path / "m"
    r = _train(shared, out, train=src)  # was a traceback in dedup
    _one_line_error(r, "line 61: value inf", "--nonfinite missing")
    r = _cli("train", "--model", "ridge", "--train", str(src), "--out", str(out),
             "--data-dir", str(shared), "--nonfinite", "missing")
    assert r.returncode == 0, r.stderr
    assert "1 non-finite values read as missing" in r.stdout
