"""Neural estimators (scikit-learn API) built on the networks of :mod:`geneinfer.models.nn.modules`.

* :class:`DGEX` — the D-GEX multi-layer perceptron (Chen et al., Bioinformatics 2016).
* :class:`BottleneckMLP` — autoencoder-style network with a narrow code layer.
* :class:`LandmarkCNN` — 1-D CNN over landmarks ordered so that correlated genes are adjacent.
* :class:`RidgeResidualMLP` — ridge regression plus an MLP on its residual; starts exactly at
  the ridge solution, and early stopping keeps it there unless the MLP helps on validation.

All train with :class:`geneinfer.models.nn.trainer.Trainer` (validation split or given
``X_val``/``Y_val``, early stopping, checkpoints and resume, DDP under ``torchrun``) and save
their fitted state as arrays + JSON (no pickle).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from geneinfer.errors import ConfigError, GeneinferError
from geneinfer.models.base import GeneModel, arrays_under
from geneinfer.models.nn.modules import build_module
from geneinfer.models.nn.trainer import BatchSource, TrainConfig, Trainer
from geneinfer.models.selection import (
    MIN_GROUP_ROWS,
    check_validation_pair,
    group_codes,
    n_distinct,
)

_PREDICT_ROWS = 4096
_COMMON_DOC = """
    recipe : {"modern", "paper"}
        ``"modern"``: AdamW with warm-up + cosine decay (default; better validation error on
        GPL96 data, see ``benchmarks/bench_neural.py``). ``"paper"``: the D-GEX recipe (SGD,
        momentum 0.5, learning rate x0.9 whenever the epoch's training error rises).
    lr : float, optional
        Learning rate (default 1e-3 modern, 5e-4 paper).
    batch_size : int
        Global mini-batch size (split across processes under torchrun).
    max_epochs, patience : int
        Epoch limit, and epochs without validation improvement before stopping.
    weight_decay : float, optional
        Decoupled weight decay (default 1e-4 modern, 0 paper).
    validation_fraction : float
        Share of training samples held out for early stopping when ``X_val`` is not given.
    standardize : bool
        Z-score inputs and targets with training statistics (inside the model).
    target_chunk_size : int, optional
        Train separate networks on chunks of this many target genes (D-GEX trained two halves
        of 4,760 genes), for output layers that do not fit in memory.
    precision : {"auto", "fp32", "bf16"}
        bf16 autocast where the hardware multiplies bf16 fast (``"auto"``).
    device : {"auto", "cpu", "cuda"}
    random_state : int
        Seeds weights, data order and dropout; CPU training is deterministic.
    checkpoint_dir : str, optional
        Folder for checkpoints; rerunning the same fit resumes from the newest one.
    checkpoint_every_steps : int, optional
        Also checkpoint every this many optimizer steps within an epoch.
    progress : bool
        Show a tqdm progress bar.
"""


def _check_2d(name: str, arr: Any, *, allow_nan: bool) -> np.ndarray:
    a = np.asarray(arr, dtype=np.float32)
    if a.ndim == 1 and name.startswith("Y"):
        a = a[:, None]
    if a.ndim != 2:
        raise GeneinferError(f"{name} must be a 2-D samples x genes matrix, got {a.ndim}-D")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise GeneinferError(f"{name} is empty (shape {a.shape})")
    if np.isinf(a).any():
        raise GeneinferError(f"{name} contains infinite values")
    if not allow_nan and np.isnan(a).any():
        rows = np.unique(np.nonzero(np.isnan(a))[0])
        raise GeneinferError(
            f"{name} has missing (NaN) values in {len(rows)} samples (first: row {rows[0]}); "
            "impute or drop them before fitting/predicting"
        )
    return a


def _std_stats(M: np.ndarray, rows: np.ndarray, block: int = 8192):
    """NaN-aware per-column mean and std of ``M[rows]``, in row blocks (no full copy)."""
    total = np.zeros(M.shape[1])
    sq = np.zeros(M.shape[1])
    count = np.zeros(M.shape[1])
    for start in range(0, len(rows), block):
        part = M[rows[start:start + block]].astype(np.float64)
        ok = ~np.isnan(part)
        part[~ok] = 0.0
        total += part.sum(axis=0)
        count += ok.sum(axis=0)
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    for start in range(0, len(rows), block):  # second pass: stable variance
        part = M[rows[start:start + block]].astype(np.float64) - mean
        sq += np.nansum(part * part, axis=0)
    std = np.sqrt(np.divide(sq, count, out=np.zeros_like(sq), where=count > 0))
    # constant (or all-missing) genes: scale 1 keeps their z-score at 0 instead of inf
    std = np.where(std > 1e-8, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


class _NeuralRegressor(GeneModel):
    """Shared fit/predict/save logic of the torch estimators."""

    cheap_refit = False

    _COMMON = (
        "recipe", "lr", "batch_size", "max_epochs", "patience", "weight_decay",
        "validation_fraction", "standardize", "target_chunk_size", "precision", "device",
        "random_state", "checkpoint_dir", "checkpoint_every_steps", "progress",
    )

    # ---- subclass hooks -------------------------------------------------------------
    #: True for residual models whose networks learn ``Y - base(X)``
    _has_base = False

    def _module_spec(self, n_in: int, n_out: int) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def _fit_input_order(self, Xs: np.ndarray) -> None:
        """Set ``landmark_order_`` (input column order); default: as given."""
        self.landmark_order_ = np.arange(Xs.shape[1], dtype=np.int64)

    def _fit_base(self, Xs: np.ndarray, Ys: np.ndarray, groups: np.ndarray | None) -> None:
        """Fit a non-neural base predictor in standardized space (residual models)."""

    def _base_predict(self, Xs: np.ndarray) -> np.ndarray | None:
        return None

    # ---- fitting --------------------------------------------------------------------
    def _train_config(self, max_epochs: int | None = None) -> TrainConfig:
        return TrainConfig(
            recipe=self.recipe, lr=self.lr, batch_size=int(self.batch_size),
            max_epochs=int(self.max_epochs if max_epochs is None else max_epochs),
            patience=int(self.patience),
            weight_decay=self.weight_decay, precision=self.precision, device=self.device,
            seed=int(self.random_state), checkpoint_dir=self.checkpoint_dir,
            checkpoint_every_steps=self.checkpoint_every_steps, progress=bool(self.progress),
        )

    def _split(self, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        frac = float(self.validation_fraction)
        if not 0.0 <= frac < 1.0:
            raise ConfigError(f"validation_fraction must be in [0, 1), got {frac}")
        n_val = round(frac * n)
        if frac == 0 or n_val == 0:
            return np.arange(n), None
        if n - n_val < 2:
            raise GeneinferError(f"only {n} samples: too few to hold out {n_val} for validation")
        perm = np.random.default_rng(self.random_state).permutation(n)
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])

    def _stats(self, X, Y, rows) -> None:
        if self.standardize:
            self.x_mean_, self.x_scale_ = _std_stats(X, rows)
            self.y_mean_, self.y_scale_ = _std_stats(Y, rows)
        else:
            p, q = X.shape[1], Y.shape[1]
            self.x_mean_, self.x_scale_ = np.zeros(p, np.float32), np.ones(p, np.float32)
            self.y_mean_, self.y_scale_ = np.zeros(q, np.float32), np.ones(q, np.float32)

    def fit(self, X, Y, *, groups=None, X_val=None, Y_val=None):
        """Train on ``X`` (samples x landmarks) -> ``Y`` (samples x targets).

        Early stopping watches, by precedence:

        * ``X_val``/``Y_val`` when given (the networks train on ``X``);
        * with ``groups`` (one label per row, e.g. the study; two or more groups of 3+
          rows): whole held-out groups, drawn at random (``random_state``) until they hold
          about ``validation_fraction`` of the rows (at least one group), scored by the
          within-group z-scored MSE of :mod:`geneinfer.models.selection`. The best epoch of
          each network is recorded and the networks are then **refit on all rows** for
          that many epochs (the learning-rate schedule spans those epochs);
        * otherwise a random ``validation_fraction`` of the rows (no refit).

        NaN in ``Y`` is left out of the loss. ``selection_`` records the rule used.
        """
        X = _check_2d("X", X, allow_nan=False)
        Y = _check_2d("Y", Y, allow_nan=True)
        if X.shape[0] != Y.shape[0]:
            raise GeneinferError(f"X has {X.shape[0]} samples but Y has {Y.shape[0]}")
        if check_validation_pair(X_val, Y_val):
            X_val, Y_val = self._check_val(X_val, Y_val, X.shape[1], Y.shape[1])
            train_rows, val_rows = np.arange(X.shape[0]), None
            # the groups still reach a residual model's ridge base
            codes = None if groups is None else group_codes(groups, X.shape[0])[0]
            selection = {"method": "holdout", "holdout": "given", "score": "mse"}
        else:
            train_rows, val_rows, codes, selection = self._choose_split(groups, X.shape[0])
        self._stats(X, Y, train_rows)
        self.n_features_in_, self.n_targets_ = X.shape[1], Y.shape[1]
        train_src, val_src = self._sources(X, Y, train_rows, val_rows, X_val, Y_val, codes)
        self._train_networks(train_src, val_src)
        if selection["method"] == "group-holdout":
            self._refit_all_rows(X, Y, codes)
            selection["best_epochs"] = [h["early_stopping"]["best_epoch"] for h in self.history_]
            selection["refit"] = True
        else:
            selection["best_epochs"] = [h["best_epoch"] for h in self.history_]
        self.selection_ = {**selection, "n_groups": n_distinct(groups, X.shape[0])}
        return self

    @staticmethod
    def _check_val(X_val, Y_val, p: int, t: int) -> tuple[np.ndarray, np.ndarray]:
        X_val = _check_2d("X_val", X_val, allow_nan=False)
        Y_val = _check_2d("Y_val", Y_val, allow_nan=True)
        if X_val.shape[1] != p or Y_val.shape[1] != t:
            raise GeneinferError(
                f"X_val/Y_val have {X_val.shape[1]}/{Y_val.shape[1]} genes; "
                f"expected {p}/{t} like X/Y"
            )
        return X_val, Y_val

    def _choose_split(self, groups: Any, n: int):
        """(training rows, validation rows or None, group codes or None, selection record)."""
        split = self._group_split(groups, n)
        if split is None:
            train_rows, val_rows = self._split(n)
            selection = ({"method": "none"} if val_rows is None else
                         {"method": "holdout", "holdout": "random", "score": "mse"})
            return train_rows, val_rows, None, selection
        train_rows, val_rows, codes = split
        selection = {"method": "group-holdout", "score": "within-group-z-mse",
                     "n_groups_scored": int(np.unique(codes[val_rows]).size),
                     "validation_rows": len(val_rows)}
        return train_rows, val_rows, codes, selection

    def _group_split(
        self, groups: Any, n: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(training rows, validation rows, group codes) of a split into whole groups.

        ``None`` when there are no groups, fewer than two groups of 3+ rows, or
        ``validation_fraction`` is 0. Groups are visited in a seeded random order and held
        out when that brings the held-out rows closer to ``validation_fraction * n``.
        """
        frac = float(self.validation_fraction)
        if groups is None or frac == 0:
            return None
        if not 0.0 < frac < 1.0:
            raise ConfigError(f"validation_fraction must be in [0, 1), got {frac}")
        codes, n_groups = group_codes(groups, n)
        sizes = np.bincount(codes, minlength=n_groups)
        scorable = np.flatnonzero(sizes >= MIN_GROUP_ROWS)
        if scorable.size < 2:
            return None
        target = frac * n
        held: list[int] = []
        total = 0
        for g in np.random.default_rng(self.random_state).permutation(scorable):
            size = int(sizes[g])
            if abs(total + size - target) < abs(total - target) and n - total - size >= 2:
                held.append(int(g))
                total += size
        if not held:  # every group is far larger than the target: the smallest one
            held = [int(scorable[np.argmin(sizes[scorable])])]
        val = np.isin(codes, held)
        if (~val).sum() < 2:
            raise GeneinferError(f"only {n} samples: too few to hold out a whole group")
        return np.flatnonzero(~val), np.flatnonzero(val), codes

    def _refit_all_rows(self, X: np.ndarray, Y: np.ndarray, codes: np.ndarray) -> None:
        """Train fresh networks on every row for the best epoch count of each."""
        early = self.history_
        rows = np.arange(X.shape[0])
        self._stats(X, Y, rows)
        train_src, _ = self._sources(X, Y, rows, None, None, None, codes)
        self._train_networks(train_src, None, epochs=[h["best_epoch"] for h in early],
                             prefix="refit")
        for hist, first in zip(self.history_, early):
            hist["early_stopping"] = {k: v for k, v in first.items() if k != "targets"}

    def _sources(self, X, Y, train_rows, val_rows, X_val, Y_val, codes=None):
        """BatchSources for training and validation (standardized on the fly if possible).

        ``codes`` (group code per row of ``X``) mark the validation rows' groups, which
        switches the validation score to the within-group one, and reach the ridge base of
        residual models.
        """
        xs_fit = (X[train_rows] - self.x_mean_) / self.x_scale_
        self._fit_input_order(xs_fit)
        if self._has_base:  # only residual models need a standardized copy of Y
            self._fit_base(xs_fit, (Y[train_rows] - self.y_mean_) / self.y_scale_,
                           None if codes is None else codes[train_rows])
        del xs_fit
        order = self.landmark_order_
        stats = {"x_mean": self.x_mean_[order], "x_scale": self.x_scale_[order],
                 "y_mean": self.y_mean_, "y_scale": self.y_scale_}
        val_groups = None
        if X_val is None and val_rows is not None:
            X_val, Y_val = X[val_rows], Y[val_rows]
            val_groups = None if codes is None else codes[val_rows]
        if not self._has_base:
            train = BatchSource(X, Y, rows=train_rows, x_cols=order, **stats)
            val = None if X_val is None else BatchSource(X_val, Y_val, x_cols=order,
                                                         groups=val_groups, **stats)
            return train, val
        # residual models: targets are standardized Y minus the base prediction
        def residual(Xa, Ya):
            xs = (Xa - self.x_mean_) / self.x_scale_
            base = self._base_predict(xs)
            r = (Ya - self.y_mean_) / self.y_scale_ - base
            return np.ascontiguousarray(xs[:, order], np.float32), r.astype(np.float32), base

        train = BatchSource(*residual(X[train_rows], Y[train_rows])[:2])
        if X_val is None:
            return train, None
        xs, r, base = residual(X_val, Y_val)
        # the within-group score needs whole predictions (base + residual network)
        return train, BatchSource(xs, r, groups=val_groups,
                                  offset=None if val_groups is None else base)

    def _chunks(self, n_out: int) -> list[tuple[int, int]]:
        size = self.target_chunk_size
        if size is None or int(size) >= n_out:
            return [(0, n_out)]
        if int(size) < 1:
            raise ConfigError(f"target_chunk_size must be >= 1, got {size}")
        return [(s, min(s + int(size), n_out)) for s in range(0, n_out, int(size))]

    def _train_networks(
        self, train: BatchSource, val: BatchSource | None, *, epochs: list[int] | None = None,
        prefix: str = "net",
    ) -> None:
        """One network per target chunk; ``epochs`` (per chunk) replaces ``max_epochs``.

        A chunk with 0 epochs keeps its initial network (what its early stopping chose).
        """
        self.modules_, self.module_specs_, self.history_ = [], [], []
        chunks = self._chunks(train.n_out)
        for i, (start, stop) in enumerate(chunks):
            cols = slice(start, stop) if len(chunks) > 1 else None
            tr = _with_cols(train, cols)
            va = _with_cols(val, cols) if val is not None else None
            kind, config = self._module_spec(tr.n_in, stop - start)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(self.random_state) + 1000 * i)
                module = build_module(kind, tr.n_in, stop - start, **config)
            spec = {"kind": kind, "config": config, "n_in": tr.n_in,
                    "n_out": stop - start, "start": start, "stop": stop}
            n_epochs = None if epochs is None else int(epochs[i])
            if n_epochs == 0:
                result = _untrained_result()
            else:
                trainer = Trainer(self._train_config(n_epochs))
                result = trainer.fit(module, tr, va, run_name=f"{prefix}{i}",
                                     module_config=spec).to_json()
            self.modules_.append(module.cpu().eval())
            self.module_specs_.append(spec)
            self.history_.append({"targets": [start, stop], **result})

    # ---- prediction -----------------------------------------------------------------
    def predict(self, X) -> np.ndarray:
        """Predicted targets (samples x targets, float32, original scale)."""
        check_is_fitted(self, "modules_")
        X = _check_2d("X", X, allow_nan=False)
        if X.shape[1] != self.n_features_in_:
            raise GeneinferError(
                f"X has {X.shape[1]} landmark genes; this model was fitted on {self.n_features_in_}"
            )
        out = np.empty((X.shape[0], self.n_targets_), dtype=np.float32)
        for start in range(0, X.shape[0], _PREDICT_ROWS):
            xs = (X[start:start + _PREDICT_ROWS] - self.x_mean_) / self.x_scale_
            out[start:start + len(xs)] = self._predict_std(xs.astype(np.float32))
        return out * self.y_scale_ + self.y_mean_

    @torch.no_grad()
    def _predict_std(self, xs: np.ndarray) -> np.ndarray:
        xin = torch.from_numpy(np.ascontiguousarray(xs[:, self.landmark_order_]))
        ys = np.empty((xs.shape[0], self.n_targets_), dtype=np.float32)
        for module, spec in zip(self.modules_, self.module_specs_):
            ys[:, spec["start"]:spec["stop"]] = module(xin).float().numpy()
        base = self._base_predict(xs)
        return ys + base if base is not None else ys

    # ---- out-of-core training --------------------------------------------------------
    def fit_stream(self, train: Any, val: BatchSource | None = None, *,
                   x_mean: np.ndarray, x_scale: np.ndarray, y_mean: np.ndarray,
                   y_scale: np.ndarray) -> _NeuralRegressor:
        """Train on a streamed source (data larger than memory, :mod:`geneinfer.train.outofcore`).

        ``train`` serves batches already standardized with ``x_mean``/``x_scale`` and
        ``y_mean``/``y_scale`` (what :meth:`fit` would compute from the training rows) and
        reads its own shuffled chunks; ``val`` is an in-memory :class:`BatchSource`. Models
        that need all rows at once (a landmark order or a base fitted on them, target
        chunks) refuse.
        """
        if self._has_base or type(self)._fit_input_order is not \
                _NeuralRegressor._fit_input_order:
            raise ConfigError(f"{type(self).__name__} needs all training rows in memory (it "
                              "fits a base model or a landmark order on them)")
        if self.target_chunk_size is not None and int(self.target_chunk_size) < train.n_out:
            raise ConfigError("target_chunk_size is not supported when training out of core")
        self.x_mean_, self.x_scale_ = (np.asarray(a, np.float32) for a in (x_mean, x_scale))
        self.y_mean_, self.y_scale_ = (np.asarray(a, np.float32) for a in (y_mean, y_scale))
        self.landmark_order_ = np.arange(train.n_in, dtype=np.int64)
        self.n_features_in_, self.n_targets_ = int(train.n_in), int(train.n_out)
        self._train_networks(train, val)
        return self

    # ---- pickle-free state ----------------------------------------------------------
    _ARRAYS = ("x_mean_", "x_scale_", "y_mean_", "y_scale_", "landmark_order_")

    def fitted_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        check_is_fitted(self, "modules_")
        arrays = {k: np.asarray(getattr(self, k)) for k in self._ARRAYS}
        for i, module in enumerate(self.modules_):
            for name, tensor in module.state_dict().items():
                arrays[f"net{i}.{name}"] = tensor.detach().cpu().float().numpy()
        meta = {"module_specs_": self.module_specs_, "history_": self.history_,
                "n_features_in_": int(self.n_features_in_), "n_targets_": int(self.n_targets_),
                "selection_": getattr(self, "selection_", None)}
        return arrays, meta

    def load_fitted_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        for k in self._ARRAYS:
            setattr(self, k, np.asarray(arrays[k]))
        self.module_specs_ = list(meta["module_specs_"])
        self.history_ = meta.get("history_", [])
        if meta.get("selection_") is not None:
            self.selection_ = meta["selection_"]
        self.n_features_in_, self.n_targets_ = int(meta["n_features_in_"]), int(meta["n_targets_"])
        self.modules_ = []
        for i, spec in enumerate(self.module_specs_):
            module = build_module(spec["kind"], spec["n_in"], spec["n_out"], **spec["config"])
            prefix = f"net{i}."
            weights = {k: torch.from_numpy(np.array(v, dtype=np.float32))
                       for k, v in arrays_under(arrays, prefix).items()}
            module.load_state_dict(weights)
            self.modules_.append(module.eval())


def _untrained_result() -> dict[str, Any]:
    """History of a network kept at its initial weights (best epoch 0: no refit steps)."""
    return {"history": [{"epoch": 0, "train_loss": None, "val_loss": None, "lr": 0.0,
                         "seconds": 0.0}], "best_epoch": 0, "best_val_loss": None,
            "stopped_early": False, "resumed_from": None, "device": None,
            "precision": None, "world_size": 1, "steps": 0, "seconds": 0.0}


def _with_cols(src: BatchSource, cols: slice | None) -> BatchSource:
    """``src`` restricted to target columns ``cols`` (statistics restricted alike)."""
    if cols is None:
        return src
    return BatchSource(
        src.X, src.Y, rows=src.rows, x_cols=src.x_cols, y_cols=cols,
        x_mean=src.x_mean, x_scale=src.x_scale,
        y_mean=None if src.y_mean is None else src.y_mean[cols],
        y_scale=None if src.y_scale is None else src.y_scale[cols], groups=src.groups,
        offset=None if src.offset is None else src.offset[:, cols],
    )


def _set_params(obj: Any, params: dict[str, Any]) -> None:
    for key, value in params.items():
        if key not in ("self", "__class__"):
            setattr(obj, key, value)


# ============================================================================ estimators
class DGEX(_NeuralRegressor):
    __doc__ = f"""D-GEX multi-layer perceptron: landmarks -> hidden tanh layers -> targets.

    Chen et al. (Bioinformatics 2016) used 1-3 hidden layers of 3,000/6,000/9,000 units, tanh,
    dropout 0/10/25 % and a linear output layer.

    Parameters
    ----------
    hidden : tuple of int
        Hidden layer widths, e.g. ``(3000,)``, ``(9000, 9000, 9000)``.
    activation : str
        ``"tanh"`` (D-GEX), ``"relu"`` or ``"gelu"``.
    dropout : float
        Dropout rate after each hidden layer.
    {_COMMON_DOC}"""

    name = "dgex"

    def __init__(
        self, *, hidden=(3000,), activation="tanh", dropout=0.1, recipe="modern", lr=None,
        batch_size=200, max_epochs=100, patience=10, weight_decay=None,
        validation_fraction=0.1, standardize=True, target_chunk_size=None, precision="auto",
        device="auto", random_state=0, checkpoint_dir=None, checkpoint_every_steps=500,
        progress=True,
    ) -> None:
        _set_params(self, locals())

    def _module_spec(self, n_in, n_out):
        return "mlp", {"hidden": [int(h) for h in self.hidden],
                       "activation": self.activation, "dropout": float(self.dropout)}


class BottleneckMLP(_NeuralRegressor):
    __doc__ = f"""Autoencoder-style network: encoder -> narrow code layer -> decoder -> targets.

    Parameters
    ----------
    encoder, decoder : tuple of int
        Hidden widths before and after the code layer.
    bottleneck : int
        Width of the linear code layer.
    activation : str
    dropout : float
    {_COMMON_DOC}"""

    name = "autoencoder"

    def __init__(
        self, *, encoder=(1000,), bottleneck=128, decoder=(1000,), activation="tanh",
        dropout=0.1, recipe="modern", lr=None, batch_size=200, max_epochs=100, patience=10,
        weight_decay=None, validation_fraction=0.1, standardize=True, target_chunk_size=None,
        precision="auto", device="auto", random_state=0, checkpoint_dir=None,
        checkpoint_every_steps=500, progress=True,
    ) -> None:
        _set_params(self, locals())

    def _module_spec(self, n_in, n_out):
        return "bottleneck", {
            "encoder": [int(h) for h in self.encoder], "bottleneck": int(self.bottleneck),
            "decoder": [int(h) for h in self.decoder], "activation": self.activation,
            "dropout": float(self.dropout),
        }


class LandmarkCNN(_NeuralRegressor):
    __doc__ = f"""1-D convolutional network over the landmark vector.

    Landmark order carries no meaning by itself, so by default (``order="cluster"``) the
    landmarks are reordered by hierarchical clustering of their training correlations: genes
    next to each other in the input are co-expressed, which is what a convolution can use.

    Parameters
    ----------
    channels : tuple of int
        Output channels of the (stride-2) convolution blocks.
    kernel_size : int
    hidden : int
        Width of the dense layer after the convolutions.
    order : {{"cluster", "given"}}
        Landmark ordering.
    activation : str
    dropout : float
    {_COMMON_DOC}"""

    name = "cnn"

    def __init__(
        self, *, channels=(16, 32), kernel_size=9, hidden=1000, order="cluster",
        activation="relu", dropout=0.1, recipe="modern", lr=None, batch_size=200,
        max_epochs=100, patience=10, weight_decay=None, validation_fraction=0.1,
        standardize=True, target_chunk_size=None, precision="auto", device="auto", random_state=0,
        checkpoint_dir=None, checkpoint_every_steps=500, progress=True,
    ) -> None:
        _set_params(self, locals())

    def _fit_input_order(self, Xs):
        if self.order == "given" or Xs.shape[1] < 3:
            return super()._fit_input_order(Xs)
        if self.order != "cluster":
            raise ConfigError(f"unknown landmark order {self.order!r}; use 'cluster' or 'given'")
        from scipy.cluster.hierarchy import leaves_list, linkage
        from scipy.spatial.distance import squareform

        corr = np.nan_to_num(np.corrcoef(Xs, rowvar=False), nan=0.0)
        dist = np.clip(1.0 - corr, 0.0, 2.0)
        np.fill_diagonal(dist, 0.0)
        tree = linkage(squareform(dist, checks=False), method="average")
        self.landmark_order_ = leaves_list(tree).astype(np.int64)

    def _module_spec(self, n_in, n_out):
        return "conv", {
            "channels": [int(c) for c in self.channels], "kernel_size": int(self.kernel_size),
            "hidden": int(self.hidden), "activation": self.activation,
            "dropout": float(self.dropout),
        }


class RidgeResidualMLP(_NeuralRegressor):
    __doc__ = f"""Ridge regression plus an MLP trained on the ridge residual.

    The MLP's output layer starts at zero, so before training the model *is* the ridge
    model; validation loss of that starting point is "epoch 0" of early stopping, so the
    network only moves away from ridge when that helps on held-out samples. Ridge is fitted
    on the training part only (not on the validation samples).

    Parameters
    ----------
    hidden : tuple of int
        Hidden widths of the residual MLP.
    alphas : tuple of float, optional
        Ridge penalties to choose from by GCV on standardized data (default: the grid of
        :class:`geneinfer.models.linear.Ridge`, relative to the data's scale).
    activation : str
    dropout : float
    {_COMMON_DOC}"""

    name = "ridge-mlp"
    _has_base = True

    def __init__(
        self, *, hidden=(1000,), alphas=None,
        activation="tanh", dropout=0.1, recipe="modern", lr=None, batch_size=200,
        max_epochs=100, patience=10, weight_decay=None, validation_fraction=0.1,
        standardize=True, target_chunk_size=None, precision="auto", device="auto", random_state=0,
        checkpoint_dir=None, checkpoint_every_steps=500, progress=True,
    ) -> None:
        _set_params(self, locals())

    _ARRAYS = (*_NeuralRegressor._ARRAYS, "ridge_coef_", "ridge_intercept_")

    def _fit_base(self, Xs, Ys, groups):
        coef, intercept, alpha = _fit_ridge(Xs, Ys, self.alphas, groups)
        self.ridge_coef_, self.ridge_intercept_, self.ridge_alpha_ = coef, intercept, alpha

    def _base_predict(self, Xs):
        return (Xs @ self.ridge_coef_.T + self.ridge_intercept_).astype(np.float32)

    def _module_spec(self, n_in, n_out):
        return "mlp", {"hidden": [int(h) for h in self.hidden], "activation": self.activation,
                       "dropout": float(self.dropout), "zero_init_output": True}

    def fitted_state(self):
        arrays, meta = super().fitted_state()
        meta["ridge_alpha_"] = float(self.ridge_alpha_)
        return arrays, meta

    def load_fitted_state(self, arrays, meta):
        super().load_fitted_state(arrays, meta)
        self.ridge_alpha_ = float(meta["ridge_alpha_"])


def _fit_ridge(
    Xs: np.ndarray, Ys: np.ndarray, alphas, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Ridge on standardized data (:class:`geneinfer.models.linear.Ridge`): penalty chosen
    over the studies in ``groups`` when there are two or more, else by GCV.

    ``alphas=None`` uses that class's default grid (relative to the data's scale).
    """
    if np.isnan(Ys).any():
        raise GeneinferError("RidgeResidualMLP needs complete targets (Y has NaN values)")
    from geneinfer.models.linear import Ridge

    grid = None if alphas is None else tuple(float(a) for a in np.atleast_1d(alphas))
    model = Ridge(alphas=grid).fit(Xs, Ys, groups=groups)
    coef = np.asarray(model.coef_, dtype=np.float32).reshape(Ys.shape[1], Xs.shape[1])
    intercept = np.asarray(model.intercept_, dtype=np.float32).reshape(Ys.shape[1])
    return coef, intercept, float(np.mean(model.alpha_))
