"""Interrupted runs: kill -9, killed workers, a full disk; reruns resume to identical output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from geneinfer.io import open_blocks
from geneinfer.predict import PlanOptions, as_predictor, make_plan, predict_file
from geneinfer.predict.plan import prepare_output, run_blocks
from geneinfer.predict.resume import ProgressLog, done_paths, partial_path
from geneinfer.predict.sharded import shard, thread_limit

from .helpers import read_matrix, write_generated

SCRIPT = Path(__file__).with_name("run_predict.py")
BLOCK = 250
# BLAS sums in a thread-count dependent order: equal threads per process -> identical bits
THREADS = 1


@pytest.fixture(scope="module")
def big_input(shared, tmp_path_factory):
    path = tmp_path_factory.mktemp("in") / "profiles.gctx"
    write_generated(shared, path, 3000)  # 12 blocks of 250
    return path


@pytest.fixture(scope="module")
def reference(model_dir, big_input, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ref.gctx"
    predict_file(model_dir, big_input, out, block_size=BLOCK, threads=THREADS, progress=False)
    return read_matrix(out)


def _start(model_dir, inp, out, **kw) -> subprocess.Popen:
    args = {"model": str(model_dir), "input": str(inp), "output": str(out),
            "block_size": BLOCK, "threads": THREADS, **kw}
    return subprocess.Popen([sys.executable, str(SCRIPT), json.dumps(args)],
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _fingerprint(out: Path) -> str:
    with h5py.File(partial_path(out), "r") as f:
        return str(f.attrs["geneinfer_fingerprint"])


def _kill_after(proc: subprocess.Popen, out: Path, n_blocks: int) -> int:
    """SIGKILL the process group once ``n_blocks`` are recorded; return how many were."""
    deadline = time.time() + 120
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        if partial_path(out).exists() and done_paths(out):
            done = ProgressLog.finished_blocks(out, _fingerprint(out))
            if len(done) >= n_blocks:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return len(done)
        time.sleep(0.05)
    raise AssertionError("run did not make progress")


def test_kill9_then_rerun_resumes_to_identical_output(model_dir, big_input, reference,
                                                      tmp_path, capsys):
    out = tmp_path / "out.gctx"
    proc = _start(model_dir, big_input, out, delay=0.25)
    _kill_after(proc, out, 3)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()  # an unfinished output never carries the final name
    with h5py.File(partial_path(out), "r") as f:
        assert int(f.attrs["geneinfer_complete"]) == 0
    res = predict_file(model_dir, big_input, out, block_size=BLOCK, threads=THREADS,
                       progress=True)
    assert "resuming" in capsys.readouterr().err
    assert 3 <= res.resumed_blocks < 12
    np.testing.assert_array_equal(read_matrix(out), reference)
    assert not partial_path(out).exists() and not done_paths(out)


def test_full_disk_clear_error_then_resume(model_dir, big_input, reference, tmp_path):
    out = tmp_path / "out.gctx"
    cli = [sys.executable, "-m", "geneinfer", "predict", "--model", str(model_dir), "--input",
           str(big_input), "--output", str(out), "--block-size", str(BLOCK),
           "--threads", str(THREADS), "--no-progress"]

    def limited(limit: int) -> subprocess.CompletedProcess:
        def cap() -> None:
            import resource

            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        return subprocess.run(cli, capture_output=True, text=True, preexec_fn=cap, timeout=120)

    # 1) no room even for the output file: clear one-line error, nothing left behind
    r = limited(200_000)
    assert r.returncode == 2, r.stderr
    assert "disk full or file size limit" in r.stderr and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []

    # 2) the disk fills up in the middle: blocks 0-1 were written by an earlier run
    pred = as_predictor(model_dir)
    with open_blocks(big_input) as src:
        plan = make_plan(pred, src, PlanOptions(block_size=BLOCK))
        prepare_output(plan, out, "gctx", progress=False)
        with thread_limit(THREADS):
            run_blocks(plan, out, "gctx", [0, 1])
    with h5py.File(partial_path(out), "r") as f:
        offset = f["0/DATA/0/matrix"].id.get_offset()
    row_bytes = 300 * 4
    r = limited(offset + 5 * BLOCK * row_bytes + 100)  # room for blocks 0..4 only
    assert r.returncode == 2, r.stderr
    assert "disk full or file size limit" in r.stderr and "rerun to resume" in r.stderr
    assert not out.exists()
    assert ProgressLog.finished_blocks(out, plan.fingerprint) == {0, 1, 2, 3, 4}

    # 3) space again: the rerun resumes after block 4 and the result is exact
    res = predict_file(model_dir, big_input, out, block_size=BLOCK, threads=THREADS,
                       progress=False)
    assert res.resumed_blocks == 5
    np.testing.assert_array_equal(read_matrix(out), reference)


def test_partial_of_other_run_is_not_resumed(model_dir, big_input, reference, tmp_path,
                                             capsys):
    out = tmp_path / "out.gctx"
    pred = as_predictor(model_dir)
    with open_blocks(big_input) as src:  # a partial made with another block size
        plan = make_plan(pred, src, PlanOptions(block_size=BLOCK * 2))
        prepare_output(plan, out, "gctx", progress=False)
        run_blocks(plan, out, "gctx", [0])
    res = predict_file(model_dir, big_input, out, block_size=BLOCK, threads=THREADS,
                       progress=True)
    assert "starting over" in capsys.readouterr().err
    assert res.resumed_blocks == 0
    np.testing.assert_array_equal(read_matrix(out), reference)


def test_two_workers_resume_a_killed_shard_and_equal_one(model_dir, big_input, reference,
                                                          tmp_path):
    """Worker 1 of an earlier run finished its shard (blocks 6-11) before the run died."""
    out = tmp_path / "w2.gctx"
    pred = as_predictor(model_dir)
    with open_blocks(big_input) as src, thread_limit(THREADS):
        plan = make_plan(pred, src, PlanOptions(block_size=BLOCK))
        prepare_output(plan, out, "gctx", progress=False)
        run_blocks(plan, out, "gctx", shard(range(12), 2, 1), rank=1)
    res = predict_file(model_dir, big_input, out, block_size=BLOCK, workers=2,
                       threads=THREADS, progress=False)
    assert res.resumed_blocks == 6
    np.testing.assert_array_equal(read_matrix(out), reference)


def test_torchrun_two_ranks_equal_one(model_dir, big_input, reference, tmp_path):
    out = tmp_path / "tr.gctx"
    torchrun = Path(sys.executable).with_name("torchrun")
    r = subprocess.run(
        [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "geneinfer", "predict",
         "--model", str(model_dir), "--input", str(big_input), "--output", str(out),
         "--block-size", str(BLOCK), "--threads", str(THREADS), "--no-progress"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    np.testing.assert_array_equal(read_matrix(out), reference)
    # plain h5py (what CMap readers use) sees one ordinary dataset
    with h5py.File(out, "r") as f:
        assert f["0/DATA/0/matrix"].shape == (3000, 300)
        assert not f["0/DATA/0/matrix"].is_virtual
