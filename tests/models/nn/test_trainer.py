"""Training loop: early stopping, recipes, checkpoints, SIGKILL + resume, and DDP equivalence."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from geneinfer.errors import ConfigError
from geneinfer.models.nn.modules import build_module
from geneinfer.models.nn.trainer import BatchSource, TrainConfig, Trainer

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_worker.py"
sys.path.insert(0, str(HERE))
from _worker import make_data  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny networks: one thread is fastest, and avoids spinning threads on a busy machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _sources(n_val: int = 48):
    X, Y = make_data()
    n = len(X) - n_val
    xm, xs = X[:n].mean(0), X[:n].std(0)
    ym, ys = Y[:n].mean(0), Y[:n].std(0)
    stats = {"x_mean": xm, "x_scale": xs, "y_mean": ym, "y_scale": ys}
    train = BatchSource(X, Y, rows=np.arange(n), **stats)
    val = BatchSource(X, Y, rows=np.arange(n, len(X)), **stats)
    return train, val


def _net(seed: int = 0, hidden: int = 32, dropout: float = 0.1):
    torch.manual_seed(seed)
    return build_module("mlp", 40, 120, hidden=[hidden], dropout=dropout)


def _mse(module, src: BatchSource) -> float:
    x, y = src.batch(np.arange(len(src)))
    with torch.no_grad():
        return float(((module(x) - y) ** 2).mean())


def test_deterministic_and_best_weights_restored():
    train, val = _sources()
    # fp32: the check below recomputes the loss in fp32 (on a CPU with native bf16, "auto"
    # would train in bf16)
    cfg = TrainConfig(max_epochs=8, batch_size=32, progress=False, device="cpu", lr=3e-3,
                      precision="fp32")
    a, b = _net(), _net()
    res_a = Trainer(cfg).fit(a, train, val)
    Trainer(cfg).fit(b, train, val)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    vals = [h["val_loss"] for h in res_a.history]
    assert res_a.history[0]["epoch"] == 0 and len(vals) == 9
    assert vals[-1] < 0.5 * vals[0]  # it learned
    assert res_a.best_val_loss == min(vals)
    assert _mse(a, val) == pytest.approx(min(vals), rel=1e-4)


def test_early_stopping_keeps_best_epoch():
    # 40 noisy samples, a wide net and a large learning rate: validation loss turns up
    X, Y = make_data(n=60)
    Y = Y + np.random.default_rng(1).normal(size=Y.shape).astype(np.float32)
    train = BatchSource(X, Y, rows=np.arange(40))
    val = BatchSource(X, Y, rows=np.arange(40, 60))
    cfg = TrainConfig(max_epochs=200, patience=3, batch_size=10, lr=1e-2, progress=False,
                      device="cpu", weight_decay=0.0)
    module = _net(hidden=256, dropout=0.0)
    res = Trainer(cfg).fit(module, train, val)
    vals = [h["val_loss"] for h in res.history]
    assert res.stopped_early and len(vals) < 201
    assert res.best_epoch == int(np.argmin(vals)) == len(vals) - 1 - 3
    assert _mse(module, val) == pytest.approx(min(vals), rel=1e-4)


def test_paper_recipe_decays_lr_when_training_error_rises():
    train, val = _sources()
    # a learning rate on the edge of stability makes the training error go up at times
    cfg = TrainConfig(recipe="paper", lr=5e-3, max_epochs=12, patience=100, batch_size=32,
                      progress=False, device="cpu")
    res = Trainer(cfg).fit(_net(hidden=64), train, val)
    hist = res.history[1:]
    rises = 0
    # the decay after epoch i (train loss up from epoch i-1) applies to epoch i+1
    for before, prev, cur in zip(hist, hist[1:], hist[2:]):
        rose = prev["train_loss"] > before["train_loss"]
        assert cur["lr"] == pytest.approx(prev["lr"] * (0.9 if rose else 1.0))
        rises += rose
    assert hist[0]["lr"] == pytest.approx(5e-3)
    assert rises >= 1, [h["train_loss"] for h in hist]


def test_modern_schedule_warms_up_then_decays():
    cfg = TrainConfig(lr=1e-3, warmup_fraction=0.1, max_epochs=10)
    trainer = Trainer(cfg)

    class S:
        global_step = 0
        lr_factor = 1.0

    lrs = []
    for t in range(100):
        S.global_step = t
        lrs.append(trainer._lr(S, 10, 100))
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(b <= a for a, b in itertools.pairwise(lrs[9:])) and lrs[-1] < 1e-5


def test_checkpoints_are_tensor_only_and_foreign_ones_refused(tmp_path):
    train, val = _sources()
    cfg = TrainConfig(max_epochs=2, batch_size=32, progress=False, device="cpu",
                      checkpoint_dir=str(tmp_path), checkpoint_every_steps=4)
    module = _net()
    Trainer(cfg).fit(module, train, val, run_name="net0", module_config={"h": 32})
    files = sorted((tmp_path / "net0").glob("ckpt-*.pt"))
    assert len(files) == 2  # older ones pruned
    payload = torch.load(files[-1], weights_only=True)
    assert payload["state"]["finished"] and payload["state"]["epoch"] == 2
    # rerunning a finished fit loads it instead of training again
    again = _net(seed=5)
    res = Trainer(cfg).fit(again, train, val, run_name="net0", module_config={"h": 32})
    assert res.resumed_from == {"epoch": 2, "step_in_epoch": 0, "global_step": 26}
    for pa, pb in zip(module.parameters(), again.parameters()):
        assert torch.equal(pa, pb)
    with pytest.raises(ConfigError, match="different fit"):
        Trainer(cfg).fit(_net(), train, val, run_name="net0", module_config={"h": 33})
    # a truncated newest checkpoint (power cut) falls back to the previous one
    files[-1].write_bytes(files[-1].read_bytes()[:1000])
    res = Trainer(cfg).fit(_net(), train, val, run_name="net0", module_config={"h": 32})
    assert res.resumed_from["global_step"] == int(files[0].name.split("-")[1])


def _load(prefix: Path, rank: int = 0) -> tuple[dict[str, np.ndarray], dict]:
    with np.load(f"{prefix}.rank{rank}.npz") as z:
        arrays = dict(z)
    meta = json.loads(Path(f"{prefix}.rank{rank}.json").read_text())
    return arrays, meta


def _assert_same_weights(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=atol, rtol=0, err_msg=key)


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    args = ["--epochs", "12", "--hidden", "256", "--every", "3"]
    ckdir = tmp_path / "ck"
    plain = subprocess.Popen([sys.executable, WORKER, tmp_path / "plain", *args], env=_env())
    victim = subprocess.Popen(
        [sys.executable, WORKER, tmp_path / "killed", "--checkpoint-dir", ckdir, *args],
        env=_env(),
    )
    deadline = time.monotonic() + 120
    killed_at = None
    while time.monotonic() < deadline and victim.poll() is None:
        names = [p.name for p in (ckdir / "net0").glob("ckpt-*.pt")]
        steps = [int(n.split("-")[1]) for n in names if not n.endswith("s000000.pt")]
        if steps and max(steps) >= 30:  # a mid-epoch checkpoint exists: pull the plug
            os.kill(victim.pid, signal.SIGKILL)
            killed_at = max(steps)
            break
        time.sleep(0.002)
    assert victim.wait() == -signal.SIGKILL, "training finished before it could be killed"
    assert not Path(f"{tmp_path / 'killed'}.rank0.npz").exists()
    resumed = subprocess.run(
        [sys.executable, WORKER, tmp_path / "resumed", "--checkpoint-dir", ckdir, *args],
        env=_env(), check=True,
    )
    assert resumed.returncode == 0 and plain.wait() == 0
    a_plain, m_plain = _load(tmp_path / "plain")
    a_res, m_res = _load(tmp_path / "resumed")
    start = m_res["history_"][0]["resumed_from"]
    assert start is not None and start["global_step"] >= killed_at
    assert m_res["history_"][0]["steps"] == m_plain["history_"][0]["steps"] == 120
    _assert_same_weights(a_plain, a_res, atol=1e-6)
    curve = [h["val_loss"] for h in m_plain["history_"][0]["history"]]
    assert curve == pytest.approx([h["val_loss"] for h in m_res["history_"][0]["history"]])


def test_ddp_two_processes_match_single_process(tmp_path):
    # dropout off: with dropout each rank draws its own masks (statistically, not bitwise, equal)
    args = ["--epochs", "3", "--hidden", "48", "--dropout", "0", "--batch", "40"]
    single = subprocess.Popen([sys.executable, WORKER, tmp_path / "single", *args], env=_env())
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         WORKER, tmp_path / "ddp", *args],
        env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert single.wait(timeout=300) == 0
    a_single, m_single = _load(tmp_path / "single")
    a0, m0 = _load(tmp_path / "ddp", 0)
    a1, _ = _load(tmp_path / "ddp", 1)
    _assert_same_weights(a0, a1, atol=0)  # every rank ends with the same model
    assert m0["history_"][0]["world_size"] == 2
    assert m0["history_"][0]["steps"] == m_single["history_"][0]["steps"] == 30
    _assert_same_weights(a_single, a0, atol=2e-5)


def test_validation_with_groups_is_the_within_group_z_scored_mse():
    """``2 (1 - r)`` per gene and group, averaged over genes, then groups (weight 1 each)."""
    from geneinfer.models.selection import zscore_mse

    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 5)).astype(np.float32)
    Y = (X @ rng.normal(size=(5, 3)) + rng.normal(size=(90, 3))).astype(np.float32)
    groups = np.repeat([0, 1, 2], [50, 30, 10])
    Y[groups == 1] += 5.0  # a study offset: not counted
    torch.manual_seed(0)
    net = torch.nn.Linear(5, 3)
    trainer = Trainer(TrainConfig(device="cpu", precision="fp32", progress=False))
    got = trainer._evaluate(net, BatchSource(X, Y, groups=groups), torch.device("cpu"), "fp32")
    with torch.no_grad():
        pred = net(torch.from_numpy(X)).numpy()
    expected = np.mean([np.nanmean(zscore_mse(Y[groups == g], pred[groups == g]))
                        for g in range(3)])
    assert got == pytest.approx(expected, rel=1e-6)
