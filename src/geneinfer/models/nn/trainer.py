"""The training loop shared by every torch estimator of geneinfer.

:class:`Trainer` trains one network on (landmarks -> targets) with

* a recipe: ``"modern"`` (AdamW, linear warm-up then cosine decay) or ``"paper"`` (the D-GEX
  recipe of Chen et al. 2016: SGD, momentum 0.5, learning rate x0.9 whenever the epoch's
  training error rises);
* validation after every epoch (and once before training, "epoch 0"), early stopping with
  patience, and the best weights restored at the end;
* checkpoints (model, optimizer, schedule, RNG states and the position in the epoch's data
  order) written atomically at every epoch end and every ``checkpoint_every_steps`` steps;
  rerunning the same fit with the same ``checkpoint_dir`` resumes from the newest one and ends
  with the same model as an uninterrupted run;
* DistributedDataParallel when launched under ``torchrun`` (see :mod:`.distributed`).

Data stay in their original numpy arrays; rows are gathered and standardized per batch
(:class:`BatchSource`), so a full-compendium fit never holds a standardized copy. Data larger
than memory come from a *streamed* source instead: any object with ``epoch_batches`` and
``steps_per_epoch`` (``geneinfer.train.outofcore.StreamedSource``) that reads its own
shuffled chunks (each rank its own) in a background thread and yields the batches.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from geneinfer.errors import ConfigError
from geneinfer.models.nn import distributed as D
from geneinfer.models.selection import constant_floor, zscore_mse_from_moments
from geneinfer.utils.files import atomic_path
from geneinfer.utils.memory import reuse_freed_memory

CKPT_FORMAT = "geneinfer-train-checkpoint"
CKPT_VERSION = 1
RECIPES = ("modern", "paper")
PRECISIONS = ("auto", "fp32", "bf16")
_RECIPE_LR = {"modern": 1e-3, "paper": 5e-4}
_RECIPE_WD = {"modern": 1e-4, "paper": 0.0}
_EVAL_ROWS = 4096


# --------------------------------------------------------------------------- data
@dataclass
class BatchSource:
    """Rows of ``X``/``Y`` served as standardized float32 tensors, one batch at a time.

    Parameters
    ----------
    X, Y
        The full matrices (never copied).
    rows
        Which rows belong to this source (``None`` = all).
    x_cols, y_cols
        Column subsets (e.g. a reordering of landmarks, or one chunk of targets).
    x_mean, x_scale, y_mean, y_scale
        Per-column standardization of the *selected* columns (``None`` = none).
    groups
        Group code (``0..G-1``, e.g. the study) of each row of this source. A validation
        source with groups is scored by the within-group z-scored MSE (see
        :func:`within_group_score`) instead of the MSE.
    offset
        (rows x targets of ``Y``) A prediction the network's output is added to, e.g. the
        ridge base of a residual model: the within-group score compares ``offset +
        output`` with ``offset + target`` (the MSE does not depend on it).
    """

    X: np.ndarray
    Y: np.ndarray
    rows: np.ndarray | None = None
    x_cols: np.ndarray | slice | None = None
    y_cols: np.ndarray | slice | None = None
    x_mean: np.ndarray | None = None
    x_scale: np.ndarray | None = None
    y_mean: np.ndarray | None = None
    y_scale: np.ndarray | None = None
    has_nan: bool = field(default=False)
    groups: np.ndarray | None = None
    offset: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows) if self.rows is not None else self.X.shape[0]

    @property
    def n_in(self) -> int:
        return self.X[:1][:, self.x_cols].shape[1] if self.x_cols is not None else self.X.shape[1]

    @property
    def n_out(self) -> int:
        return self.Y[:1][:, self.y_cols].shape[1] if self.y_cols is not None else self.Y.shape[1]

    def _take(self, M: np.ndarray, r: np.ndarray, cols, mean, scale) -> torch.Tensor:
        block = M[r]
        if cols is not None:
            block = block[:, cols]
        block = np.asarray(block, dtype=np.float32)
        if mean is not None:
            block = (block - mean) / scale
        return torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32))

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardized ``(x, y)`` for positions ``idx`` of this source."""
        r = self.rows[idx] if self.rows is not None else idx
        x = self._take(self.X, r, self.x_cols, self.x_mean, self.x_scale)
        y = self._take(self.Y, r, self.y_cols, self.y_mean, self.y_scale)
        return x, y

    def fingerprint(self) -> str:
        """Cheap content hash (shapes, statistics and up to ~2,000 strided rows)."""
        h = hashlib.blake2b(digest_size=16)
        n = len(self)
        step = max(1, n // 2000)
        x, y = self.batch(np.arange(0, n, step))
        for arr in (x.numpy(), y.numpy()):
            h.update(str(arr.shape).encode())
            h.update(np.nan_to_num(arr, nan=-999.0).tobytes())
        h.update(str((n, self.n_in, self.n_out)).encode())
        if self.groups is not None:
            h.update(np.ascontiguousarray(self.groups, dtype=np.int64).tobytes())
        return h.hexdigest()


# --------------------------------------------------------------------------- config
@dataclass
class TrainConfig:
    """Hyper-parameters of the training loop (see the estimators' docstrings)."""

    recipe: str = "modern"
    lr: float | None = None
    batch_size: int = 200
    max_epochs: int = 100
    patience: int = 10
    min_delta: float = 0.0
    weight_decay: float | None = None
    warmup_fraction: float = 0.05
    momentum: float = 0.5
    lr_decay: float = 0.9
    grad_clip: float | None = None
    precision: str = "auto"
    device: str = "auto"
    seed: int = 0
    checkpoint_dir: str | None = None
    checkpoint_every_steps: int | None = 500
    keep_checkpoints: int = 2
    progress: bool = True

    def validate(self) -> None:
        if self.recipe not in RECIPES:
            raise ConfigError(f"unknown training recipe {self.recipe!r}; choose one of {RECIPES}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; choose one of {PRECISIONS}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"unknown device {self.device!r}; choose 'auto', 'cpu' or 'cuda'")
        for name in ("batch_size", "max_epochs"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.patience < 1:
            raise ConfigError(f"patience must be >= 1, got {self.patience}")
        if self.checkpoint_every_steps is not None and self.checkpoint_every_steps < 1:
            raise ConfigError("checkpoint_every_steps must be >= 1 or None")

    @property
    def lr_(self) -> float:
        return float(self.lr if self.lr is not None else _RECIPE_LR[self.recipe])

    @property
    def weight_decay_(self) -> float:
        wd = self.weight_decay
        return float(wd if wd is not None else _RECIPE_WD[self.recipe])


def resolve_device(device: str, info: D.DistInfo | None = None) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; under torchrun one GPU per local rank."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("device='cuda' requested but no CUDA GPU is available")
        if device == "cuda" and info is not None and info.enabled:
            return torch.device("cuda", info.local_rank)
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` -> bf16 where the hardware has fast bf16 matmul, else fp32.

    Measured on an AVX2-only CPU (no AVX512-BF16/AMX), bf16 matmul ran ~50x *slower* than
    fp32, so CPUs without native bf16 keep fp32.
    """
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    try:
        fast = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        fast = False
    return "bf16" if fast else "fp32"


# --------------------------------------------------------------------------- result
@dataclass
class TrainResult:
    """What one network's training produced (JSON-able via :meth:`to_json`)."""

    history: list[dict[str, Any]]
    best_epoch: int
    best_val_loss: float | None
    stopped_early: bool
    resumed_from: dict[str, int] | None
    device: str
    precision: str
    world_size: int
    steps: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _State:
    """Loop position and schedule state (all plain numbers, saved in checkpoints)."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    lr_factor: float = 1.0
    prev_train_loss: float | None = None
    epoch_loss_sum: float = 0.0
    epoch_loss_count: int = 0
    best_val: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    finished: bool = False
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


# --------------------------------------------------------------------------- trainer
class Trainer:
    """Train one torch network; see the module docstring for what it does.

    Parameters
    ----------
    config
        A :class:`TrainConfig`.
    """

    def __init__(self, config: TrainConfig) -> None:
        config.validate()
        self.config = config

    # ---- public ---------------------------------------------------------------------
    def fit(
        self,
        module: nn.Module,
        train: BatchSource,
        val: BatchSource | None = None,
        *,
        run_name: str = "net",
        module_config: dict[str, Any] | None = None,
    ) -> TrainResult:
        """Train ``module`` in place on ``train``; early-stop on ``val``; keep the best weights.

        ``module_config`` (JSON-able) identifies the architecture in checkpoint fingerprints,
        so a checkpoint of another fit in the same folder is refused instead of resumed.
        """
        cfg = self.config
        info = D.env_info()
        device = resolve_device(cfg.device, info)
        info = D.setup(device)
        precision = resolve_precision(cfg.precision, device)
        if device.type == "cpu":
            reuse_freed_memory()  # per-step gradients and activations without page faults
        module.to(device)
        n_train = len(train)
        per_rank = self._per_rank_batch(n_train, info)
        if _streamed(train):  # reads its own chunks: no sampler over row indices
            sampler = None
            steps_per_epoch = int(train.steps_per_epoch(per_rank, info.world_size,
                                                        seed=cfg.seed))
        else:
            sampler = DistributedSampler(
                range(n_train), num_replicas=info.world_size, rank=info.rank,
                shuffle=True, seed=cfg.seed, drop_last=True,
            )
            steps_per_epoch = len(sampler) // per_rank
        total_steps = steps_per_epoch * cfg.max_epochs
        optimizer = self._optimizer(module)
        ckdir = Path(cfg.checkpoint_dir) / run_name if cfg.checkpoint_dir else None
        fingerprint = self._fingerprint(train, val, module_config, precision)
        state = _State()
        best_state: dict[str, torch.Tensor] | None = None
        resumed_from = None
        t0 = time.perf_counter()
        seed_devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=seed_devices), _deterministic(device):
            torch.manual_seed(cfg.seed * 7919 + info.rank)
            if ckdir is not None:
                loaded = self._load_latest(ckdir, fingerprint, module, optimizer, device, info)
                if loaded is not None:
                    state, best_state = loaded
                    resumed_from = {
                        "epoch": state.epoch, "step_in_epoch": state.step_in_epoch,
                        "global_step": state.global_step,
                    }
            if not state.history:  # epoch 0: the untrained network is the first "best"
                val_loss = self._evaluate(module, val, device, precision)
                state.history.append({"epoch": 0, "train_loss": None, "val_loss": val_loss,
                                      "lr": 0.0, "seconds": 0.0})
                state.best_val, state.best_epoch = val_loss, 0
                best_state = _copy_state(module)
            net: nn.Module = module
            if info.enabled:
                net = DistributedDataParallel(
                    module, device_ids=[device.index] if device.type == "cuda" else None
                )
            bar = tqdm(
                total=total_steps, initial=state.global_step, unit="step", desc=run_name,
                disable=not (cfg.progress and info.is_main), leave=False,
            )
            try:
                while not state.finished and state.epoch < cfg.max_epochs:
                    self._run_epoch(
                        net, module, optimizer, train, val, sampler, state, per_rank,
                        steps_per_epoch, total_steps, device, precision, bar, ckdir,
                        fingerprint, best_state, info,
                    )
                    if state.best_epoch == state.epoch:
                        best_state = _copy_state(module)
                    state.finished = state.finished or state.epoch >= cfg.max_epochs
                    if ckdir is not None:
                        self._save(ckdir, fingerprint, module, optimizer, best_state, state, info)
            finally:
                bar.close()
        if best_state is not None:
            module.load_state_dict(best_state)
        module.eval()
        return TrainResult(
            history=state.history, best_epoch=state.best_epoch,
            best_val_loss=state.best_val, stopped_early=state.stopped_early,
            resumed_from=resumed_from, device=str(device), precision=precision,
            world_size=info.world_size, steps=state.global_step,
            seconds=time.perf_counter() - t0,
        )

    # ---- one epoch ------------------------------------------------------------------
    def _run_epoch(
        self, net, module, optimizer, train, val, sampler, state, per_rank, steps_per_epoch,
        total_steps, device, precision, bar, ckdir, fingerprint, best_state, info,
    ) -> None:
        cfg = self.config
        t_epoch = time.perf_counter()
        batches = _epoch_batches(train, sampler, state, per_rank, steps_per_epoch, cfg.seed,
                                 info)
        net.train()
        lr = self._lr(state, steps_per_epoch, total_steps)
        for step in range(state.step_in_epoch, steps_per_epoch):
            lr = self._lr(state, steps_per_epoch, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = next(batches)
            loss = self._step(net, module, optimizer, x.to(device), y.to(device), device,
                              precision)
            loss = float(D.all_reduce_mean(loss.detach().float().reshape(1).cpu(), info)[0])
            state.epoch_loss_sum += loss
            state.epoch_loss_count += 1
            state.global_step += 1
            state.step_in_epoch = step + 1
            bar.update(1)
            every = cfg.checkpoint_every_steps
            if (ckdir is not None and every and state.global_step % every == 0
                    and step + 1 < steps_per_epoch):
                self._save(ckdir, fingerprint, module, optimizer, best_state, state, info)
        batches.close()  # a streamed source stops reading ahead
        train_loss = state.epoch_loss_sum / max(state.epoch_loss_count, 1)
        val_loss = self._evaluate(module, val, device, precision)
        state.epoch += 1
        state.history.append({
            "epoch": state.epoch, "train_loss": train_loss, "val_loss": val_loss,
            "lr": lr,  # the learning rate of the epoch's last step
            "seconds": time.perf_counter() - t_epoch,
        })
        if cfg.recipe == "paper":
            if state.prev_train_loss is not None and train_loss > state.prev_train_loss:
                state.lr_factor *= cfg.lr_decay
            state.prev_train_loss = train_loss
        state.step_in_epoch, state.epoch_loss_sum, state.epoch_loss_count = 0, 0.0, 0
        if val_loss is not None:
            if state.best_val is None or val_loss < state.best_val - cfg.min_delta:
                state.best_val, state.best_epoch, state.bad_epochs = val_loss, state.epoch, 0
            else:
                state.bad_epochs += 1
            if state.bad_epochs >= cfg.patience:
                state.finished = state.stopped_early = True
        else:  # no validation data: the last epoch is the best
            state.best_epoch = state.epoch
        bar.set_postfix(train=f"{train_loss:.4f}",
                        val="-" if val_loss is None else f"{val_loss:.4f}")

    def _step(self, net, module, optimizer, x, y, device, precision) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            pred = net(x)
        mse, opt_loss = _losses(pred.float(), y, sum_outputs=self.config.recipe == "paper")
        opt_loss.backward()
        if self.config.grad_clip:
            nn.utils.clip_grad_norm_(module.parameters(), self.config.grad_clip)
        optimizer.step()
        return mse

    @torch.no_grad()
    def _evaluate(self, module, val: BatchSource | None, device, precision) -> float | None:
        """MSE of the standardized targets on ``val`` (NaN left out), or, for a source
        with groups, the within-group z-scored MSE of :func:`within_group_score`."""
        if val is None or len(val) == 0:
            return None
        module.eval()
        sse, count = 0.0, 0
        grouped = None if val.groups is None else _GroupMoments(val.groups, val.n_out, device)
        for start in range(0, len(val), _EVAL_ROWS):
            rows = np.arange(start, min(start + _EVAL_ROWS, len(val)))
            x, y = val.batch(rows)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                pred = module(x.to(device)).float()
            y = y.to(device)
            if grouped is not None:
                if val.offset is not None:
                    base = torch.from_numpy(np.asarray(val.offset[rows], np.float32)).to(device)
                    pred, y = pred + base, y + base
                grouped.add(pred, y, rows)
                continue
            mask = ~torch.isnan(y)
            diff = torch.where(mask, pred - torch.nan_to_num(y), torch.zeros_like(pred))
            sse += float(diff.double().square().sum())
            count += int(mask.sum())
        module.train()
        return grouped.score() if grouped is not None else sse / max(count, 1)

    # ---- schedule / optimizer -------------------------------------------------------
    def _optimizer(self, module: nn.Module) -> torch.optim.Optimizer:
        cfg = self.config
        # fused: one pass over each parameter per step instead of several (AdamW on a
        # 28.6M-parameter layer, 2 CPU cores: 17 ms vs 59-143 ms per step)
        fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point
                    for p in module.parameters())
        if cfg.recipe == "paper":
            return torch.optim.SGD(module.parameters(), lr=cfg.lr_, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay_, fused=fused)
        return torch.optim.AdamW(module.parameters(), lr=cfg.lr_, weight_decay=cfg.weight_decay_,
                                 fused=fused)

    def _lr(self, state: _State, steps_per_epoch: int, total_steps: int) -> float:
        cfg = self.config
        if cfg.recipe == "paper":
            return cfg.lr_ * state.lr_factor
        warmup = max(1, int(cfg.warmup_fraction * total_steps))
        t = state.global_step
        if t < warmup:
            return cfg.lr_ * (t + 1) / warmup
        progress = min(1.0, (t - warmup) / max(1, total_steps - warmup))
        return cfg.lr_ * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _per_rank_batch(self, n_train: int, info: D.DistInfo) -> int:
        batch = int(self.config.batch_size)
        if batch % info.world_size:
            raise ConfigError(
                f"batch_size {batch} is not divisible by the {info.world_size} processes"
            )
        # tiny data sets: one (smaller) batch per epoch rather than none
        usable = (n_train // info.world_size) * info.world_size
        if usable < info.world_size:
            raise ConfigError(f"only {n_train} training samples for {info.world_size} processes")
        batch = min(batch, usable)
        return max(1, batch // info.world_size)

    # ---- checkpoints ----------------------------------------------------------------
    def _fingerprint(self, train, val, module_config, precision) -> str:
        cfg = asdict(self.config)
        for key in ("checkpoint_dir", "checkpoint_every_steps", "keep_checkpoints", "progress",
                    "device"):
            cfg.pop(key)
        cfg["precision"] = precision
        payload = {
            "config": cfg, "module": module_config or {},
            "train": train.fingerprint(), "val": val.fingerprint() if val is not None else None,
        }
        return hashlib.blake2b(json.dumps(payload, sort_keys=True, default=str).encode(),
                               digest_size=16).hexdigest()

    def _save(self, ckdir, fingerprint, module, optimizer, best_state, state, info) -> None:
        rng = _gather_rng(info)
        if not info.is_main:
            return
        payload = {
            "format": CKPT_FORMAT, "version": CKPT_VERSION, "fingerprint": fingerprint,
            "model": module.state_dict(), "optimizer": optimizer.state_dict(),
            "best_model": best_state, "rng_cpu": rng,
            "rng_cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
            "state": asdict(state),
        }
        ckdir.mkdir(parents=True, exist_ok=True)
        name = f"ckpt-{state.global_step:09d}-e{state.epoch:05d}s{state.step_in_epoch:06d}.pt"
        path = ckdir / name
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        for old in sorted(ckdir.glob("ckpt-*.pt"))[: -max(1, self.config.keep_checkpoints)]:
            old.unlink(missing_ok=True)

    def _load_latest(self, ckdir, fingerprint, module, optimizer, device, info):
        for path in sorted(ckdir.glob("ckpt-*.pt"), reverse=True):
            try:
                payload = torch.load(path, map_location=device, weights_only=True)
            except Exception:  # truncated/corrupt file: fall back to the previous one
                continue
            if payload.get("format") != CKPT_FORMAT or payload.get("version") != CKPT_VERSION:
                continue
            if payload["fingerprint"] != fingerprint:
                raise ConfigError(
                    f"{path}: checkpoint of a different fit (other data, network or training "
                    "settings); use another checkpoint_dir or delete this one"
                )
            module.load_state_dict(payload["model"])
            optimizer.load_state_dict(payload["optimizer"])
            rng = payload["rng_cpu"].cpu()
            if rng.ndim == 2:  # one state per rank of a distributed run
                rng = rng[min(info.rank, len(rng) - 1)]
            torch.set_rng_state(rng)
            if payload.get("rng_cuda") is not None and device.type == "cuda":
                torch.cuda.set_rng_state(payload["rng_cuda"].cpu())
            state = _State(**payload["state"])
            best = payload["best_model"]
            return state, ({k: v.to(device) for k, v in best.items()} if best else None)
        return None


# --------------------------------------------------------------------------- helpers
class _GroupMoments:
    """Per-group, per-gene sums of truth and prediction over a validation pass (float64)."""

    def __init__(self, groups: np.ndarray, n_out: int, device: torch.device) -> None:
        self.codes = torch.as_tensor(np.asarray(groups, dtype=np.int64), device=device)
        n_groups = int(self.codes.max()) + 1 if len(self.codes) else 0
        self.sums = {key: torch.zeros(n_groups, n_out, dtype=torch.float64, device=device)
                     for key in ("n", "y", "yy", "p", "pp", "py")}

    def add(self, pred: torch.Tensor, y: torch.Tensor, rows: np.ndarray) -> None:
        codes = self.codes[torch.as_tensor(rows, device=self.codes.device)]
        mask = ~torch.isnan(y)
        w = mask.double()
        yv = torch.nan_to_num(y).double() * w
        pv = pred.double() * w
        for key, value in (("n", w), ("y", yv), ("yy", yv * yv), ("p", pv), ("pp", pv * pv),
                           ("py", pv * yv)):
            self.sums[key].index_add_(0, codes, value)

    def score(self) -> float:
        s = {k: v.cpu().numpy() for k, v in self.sums.items()}
        return within_group_score(s["n"], s["y"], s["yy"], s["p"], s["pp"], s["py"])


def within_group_score(n, sy, syy, sp, spp, spy) -> float:
    """Mean over groups of the mean over genes of ``2 (1 - r)`` from per-group sums.

    All arguments are (groups x genes) sums over each group's rows (``n``: rows with a
    value). Genes with fewer than 3 values or a constant truth in a group are left out of
    that group; a prediction constant in the group scores 2. Groups without a scored gene
    are left out (see :mod:`geneinfer.models.selection`, the same rule).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        m = np.maximum(n, 1.0)
        my, mp = sy / m, sp / m
        var_y = syy / m - my * my
        var_p = np.maximum(spp / m - mp * mp, 0.0)
        cov = spy / m - mp * my
        total = np.maximum(n.sum(0), 1.0)
        var_all = syy.sum(0) / total - (sy.sum(0) / total) ** 2
    scores = zscore_mse_from_moments(cov, var_p, var_y, floor_y=constant_floor(var_all))
    scores[n < 3] = np.nan
    scored = np.isfinite(scores).any(axis=1)
    if not scored.any():
        return float("nan")
    with np.errstate(invalid="ignore"):
        return float(np.mean(np.nanmean(scores[scored], axis=1)))


def _streamed(source: Any) -> bool:
    """Whether ``source`` reads its own batches (out of core) rather than rows of arrays."""
    return hasattr(source, "epoch_batches")


def _epoch_batches(train, sampler, state: _State, per_rank: int, steps_per_epoch: int,
                   seed: int, info: D.DistInfo) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of the current epoch from its ``state.step_in_epoch`` on (resume)."""
    if _streamed(train):
        return train.epoch_batches(epoch=state.epoch, start_step=state.step_in_epoch,
                                   batch_size=per_rank, rank=info.rank,
                                   world_size=info.world_size, seed=seed)
    sampler.set_epoch(state.epoch)  # same permutation on every rank and on resume
    order = np.fromiter(iter(sampler), dtype=np.int64)
    return (train.batch(order[step * per_rank:(step + 1) * per_rank])
            for step in range(state.step_in_epoch, steps_per_epoch))


def _losses(pred: torch.Tensor, y: torch.Tensor, *, sum_outputs: bool):
    """(per-value MSE for reports, loss to optimize). NaN targets are left out of both.

    The paper recipe sums the squared error over output genes (mean over samples), which is
    the scale at which its learning rate (5e-4) was tuned.
    """
    if torch.isnan(y).any():
        mask = ~torch.isnan(y)
        diff = torch.where(mask, pred - torch.nan_to_num(y), torch.zeros_like(pred))
        se = diff.square()
        mse = se.sum() / mask.sum().clamp(min=1)
    else:
        se = (pred - y).square()
        mse = se.mean()
    opt = se.sum() / pred.shape[0] if sum_outputs else mse
    return mse, opt


def _copy_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _gather_rng(info: D.DistInfo) -> torch.Tensor:
    """CPU RNG state of every rank, stacked (rank 0's alone for a single process)."""
    mine = torch.get_rng_state()
    if not info.enabled:
        return mine
    import torch.distributed as dist

    parts = [torch.empty_like(mine) for _ in range(info.world_size)]
    if dist.get_backend() == "nccl":
        cuda_parts = [p.cuda() for p in parts]
        dist.all_gather(cuda_parts, mine.cuda())
        parts = [p.cpu() for p in cuda_parts]
    else:
        dist.all_gather(parts, mine)
    return torch.stack(parts)


@contextlib.contextmanager
def _deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic kernels during training (CPU: exact; CUDA: where torch offers them)."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)
