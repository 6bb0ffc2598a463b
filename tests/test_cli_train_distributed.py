"""``torchrun -m geneinfer train``: two CPU ranks (gloo) train one model equal to one process."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from geneinfer.genes import collapse_probes
from geneinfer.io import read, write
from geneinfer.models.bundle import InferenceModel
from geneinfer.preprocess import to_log2

N_LANDMARKS, N_TARGETS = 40, 200


@pytest.fixture(scope="module")
def small_training_set(shared, tmp_path_factory):
    """bladderbatch collapsed to genes, cut to 240 genes, plus a landmark panel file."""
    folder = tmp_path_factory.mktemp("ddp")
    data = collapse_probes(to_log2(read(shared / "gpl96" / "bladderbatch.gct.gz")))
    order = np.argsort(-np.nanvar(data.values, axis=0))  # informative genes first
    genes = data.gene_ids[order[: N_LANDMARKS + N_TARGETS]]
    write(data.select_genes(genes), folder / "train.gct")
    (folder / "panel.txt").write_text("\n".join(genes[:N_LANDMARKS]) + "\n")
    return folder


def _train(folder, out, nproc: int) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                "--master-port", str(29500 + nproc + os.getpid() % 1000)] if nproc > 1 else [
                sys.executable]
    cmd = [*launcher, "-m", "geneinfer", "train", "--model", "dgex",
           "--panel", str(folder / "panel.txt"), "--train", str(folder / "train.gct"),
           "--out", str(out), "--no-dedup", "--quiet", "--device", "cpu",
           "--param", "hidden=[32]", "--param", "dropout=0.0", "--param", "max_epochs=4",
           "--param", "batch_size=16", "--param", "patience=10"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_two_ranks_write_one_model_equal_to_single_process(small_training_set):
    folder = small_training_set
    single = _train(folder, folder / "single", 1)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = _train(folder, folder / "ddp", 2)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    # rank 0 alone wrote the model: exactly one model folder, no temporary leftovers
    written = sorted(p.name for p in folder.iterdir() if p.name.startswith(("ddp", ".ddp")))
    assert written == ["ddp"]
    a, b = InferenceModel.load(folder / "single"), InferenceModel.load(folder / "ddp")
    assert a.landmark_ids == b.landmark_ids and a.target_ids == b.target_ids
    x = read(folder / "train.gct").select_genes(a.landmark_ids).values
    pa, pb = a.predict_log2(x), b.predict_log2(x)
    assert np.abs(pa - pa.mean(0)).max() > 0.01  # the model learned something sample-specific
    np.testing.assert_allclose(pb, pa, atol=2e-3)
