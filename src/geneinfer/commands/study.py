"""``geneinfer study CONFIG.toml``: run a whole benchmark study and write its report."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from geneinfer.public_data import embedded_path
from geneinfer.study import Study, load_config

#: Built-in study configurations, by name (``geneinfer study demo``).
BUILT_IN = {"demo": "demo.toml"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config",
        help=f"study configuration (TOML), e.g. studies/shared.toml, or a built-in one: "
        f"{', '.join(BUILT_IN)}",
    )
    add_run_options(parser)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``study`` and ``demo``."""
    parser.add_argument(
        "--out", default=None,
        help="results folder (default: results/<study name>[-quick] in the current directory)",
    )
    parser.add_argument(
        "--data-dir", default=None, metavar="DIR",
        help="data folder with the public files (default: $GENEINFER_DATA_DIR, else the "
        "config's data.data_dir, else the download cache)",
    )
    parser.add_argument(
        "--resume", action=argparse.BooleanOptionalAction, default=True,
        help="reuse finished (model x split) units from an earlier run (default: on)",
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="small settings for a smoke test: each model's quick_params and a target subset",
    )


def config_path(name: str) -> Path:
    """A config file, or the file of a built-in configuration."""
    return embedded_path(BUILT_IN[name]) if name in BUILT_IN else Path(name)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(config_path(args.config), data_dir=args.data_dir)
    out = Path(args.out) if args.out else Path("results") / (
        cfg.name + ("-quick" if args.quick else ""))
    study = Study(cfg, out_dir=out, quick=args.quick, resume=args.resume,
                  progress=args.progress)
    result = study.prepare().run()
    if args.quiet:
        return 0
    print(format_table(result["metrics"], baseline=cfg.evaluate["baseline"]))
    print(f"\nresults: {out}  (report: {result['report']}; {result['elapsed']:.1f} s, "
          f"{result['skipped']} units reused)")
    return 0


def format_table(metrics: pd.DataFrame, *, baseline: str) -> str:
    """Models x test sets, mean MAE over genes (lower is better) in each view: on the
    training scale (what a model predicts for a new study as is) and after z-scoring truth
    and prediction within each test study (what is left once study offsets are removed)."""
    blocks = []
    for view, title in (("training", "standardized on the training data"),
                        ("within-study", "z-scored within each test study")):
        rows = metrics[metrics["view"] == view]
        if rows.empty:
            continue
        table = rows.pivot_table(index="model", columns="test_set", values="mae",
                                 aggfunc="mean", sort=False)
        table["mean"] = table.mean(axis=1)
        better = f"better_than_{baseline}"
        if view == "training" and better in rows:
            share = rows.groupby("model", sort=False)[better].mean()
            table[f"genes better than {baseline}"] = share.where(share.index != baseline)
        text = table.sort_values("mean").to_string(float_format=lambda v: f"{v:.4f}",
                                                   na_rep="-")
        blocks.append(f"MAE per held-out test set, {title}:\n{text}")
    return "\n\n".join(blocks)
