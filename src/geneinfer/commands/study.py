"""``geneinfer study CONFIG.toml``: run a whole benchmark study and write its report."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="study configuration (TOML), e.g. studies/shared.toml")
    parser.add_argument(
        "--out", default=None,
        help="results folder (default: results/<study name>[-quick] in the current directory)",
    )
    parser.add_argument(
        "--resume", action=argparse.BooleanOptionalAction, default=True,
        help="reuse finished (model x split) units from an earlier run (default: on)",
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="small settings for a smoke test: each model's quick_params and a target subset",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    from geneinfer.evaluate.study import Study, load_config

    cfg = load_config(args.config)
    out = Path(args.out) if args.out else Path("results") / (
        cfg.name + ("-quick" if args.quick else ""))
    study = Study(cfg, out_dir=out, quick=args.quick, resume=args.resume,
                  progress=not args.no_progress)
    study.prepare()
    result = study.run()
    metrics = result["metrics"]
    view = metrics[metrics["view"] == "training"]
    cols = [c for c in ("model", "split", "test_set", "mae", "mean_r", "ccc",
                        f"better_than_{cfg.evaluate['baseline']}", "n_genes", "n_samples")
            if c in view]
    table = view[cols].groupby(["model", "split"], sort=False).agg(
        {c: "mean" for c in cols[3:]}
    )
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"\nresults: {out}  (report: {result['report']}; {result['elapsed']:.1f} s, "
          f"{result['skipped']} units reused)")
    return 0
