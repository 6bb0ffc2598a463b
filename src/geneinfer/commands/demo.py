"""``geneinfer demo``: the built-in study on the real data shipped with geneinfer, offline.

The LINCS baseline (OLS), ridge, KNN-GE and D-GEX, each trained on one embedded HG-U133A
study and tested on the other (``geneinfer study demo``; the configuration is
``studies/demo.toml``). Needs no network and no data outside the package.
"""

from __future__ import annotations

import argparse

from geneinfer.commands import study


def add_arguments(parser: argparse.ArgumentParser) -> None:
    study.add_run_options(parser)


def run(args: argparse.Namespace) -> int:
    args.config = "demo"
    rc = study.run(args)
    if not args.quiet:
        print("\nThe two studies are bladder and kidney tissue with 17-57 arrays each, so "
              "inference across them is hard; D-GEX trained on ~88,000 GEO profiles. Train on "
              "your own compendium with `geneinfer train`.")
    return rc
