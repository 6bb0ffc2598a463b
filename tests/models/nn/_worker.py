"""Fit a small DGEX in a separate process (plain or under torchrun) and save its weights.

Used by the resume (SIGKILL) and distributed tests: ``python _worker.py OUT.npz [options]``.
Every rank saves ``OUT.rank<R>.npz`` so the tests can check that all ranks agree.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch


def make_data(n: int = 480, p: int = 40, q: int = 120, seed: int = 0):
    """Expression-like data: a few latent programs drive landmarks and targets non-linearly."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 6))
    X = z @ rng.normal(size=(6, p)) + 0.3 * rng.normal(size=(n, p))
    Y = np.tanh(z @ rng.normal(size=(6, q)) / 2) + 0.2 * rng.normal(size=(n, q))
    return X.astype(np.float32), Y.astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--checkpoint-dir")
    ap.add_argument("--every", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch", type=int, default=40)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--recipe", default="modern")
    # fp32 by default: bf16 sums differ between one process and DDP ranks beyond 2e-5
    ap.add_argument("--precision", default="fp32")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from geneinfer.models.neural import DGEX

    X, Y = make_data()
    model = DGEX(
        hidden=(args.hidden,), dropout=args.dropout, recipe=args.recipe, max_epochs=args.epochs,
        patience=100, batch_size=args.batch, checkpoint_dir=args.checkpoint_dir,
        checkpoint_every_steps=args.every, progress=False, device="cpu", random_state=3,
        precision=args.precision,
    ).fit(X, Y)
    arrays, meta = model.fitted_state()
    rank = int(os.environ.get("RANK", "0"))
    np.savez(f"{args.out}.rank{rank}.npz", **arrays)
    with open(f"{args.out}.rank{rank}.json", "w") as fh:
        json.dump(meta, fh)


if __name__ == "__main__":
    main()
