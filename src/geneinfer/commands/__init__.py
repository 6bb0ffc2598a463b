"""CLI sub-commands; each module has ``add_arguments(parser)`` and ``run(args)``."""

from __future__ import annotations

import argparse


def add_output_options(parser: argparse.ArgumentParser, *, nested: bool = False) -> None:
    """``--no-progress`` and ``-q/--quiet``, the same on every command.

    ``--no-progress`` hides progress bars and informational messages; ``--quiet`` also hides
    warnings and summaries (only errors are printed). ``nested`` parsers (``data fetch``)
    leave the value set before the sub-command in place.
    """
    default = argparse.SUPPRESS if nested else False
    parser.add_argument("--no-progress", action="store_true", default=default,
                        help="no progress bars or informational messages")
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="print errors only (no progress, warnings or summary)")
