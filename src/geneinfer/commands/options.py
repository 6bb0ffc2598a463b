"""Command-line options shared by several commands.

Checked option types, so every numeric option is validated the same way and a bad value is
one line (``geneinfer: error: argument --batch-size: must be at least 1, got -1``); each is
an ``argparse`` ``type=``, and the library functions the commands call check the same ranges
again for callers of the Python API. Also the option groups of probe annotations and ARCHS4
sample selections.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from geneinfer.errors import ConfigError
from geneinfer.io import NONFINITE_POLICIES, Archs4Selection
from geneinfer.io.archs4 import selection_from_options


def _number(text: str, kind: type) -> float:
    try:
        value = kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """A whole number of at least 1 (sizes, counts of workers or threads)."""
    value = int(_number(text, int))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def fraction(text: str) -> float:
    """A share between 0 and 1, both included."""
    value = _number(text, float)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value:g}")
    return value


def open_fraction(text: str) -> float:
    """A share strictly between 0 and 1 (e.g. of samples held out)."""
    value = _number(text, float)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {value:g}")
    return value


def correlation(text: str) -> float:
    """A correlation coefficient, between -1 and 1."""
    value = _number(text, float)
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between -1 and 1, got {value:g}")
    return value


def add_nonfinite(parser: argparse.ArgumentParser) -> None:
    """``--nonfinite {error,missing}``: what the readers do with infinite values."""
    parser.add_argument(
        "--nonfinite", choices=NONFINITE_POLICIES, default="error",
        help="infinite values and numbers beyond float32 (inf, 1e999) in the input: refuse "
        "the file naming the cell, or read them as missing values and count them "
        "(default: %(default)s)")


def add_platform_arguments(parser: argparse.ArgumentParser, *, soft: bool = True) -> None:
    """``--annotation`` / ``--platform``: how probe ids become genes (train, predict)."""
    parser.add_argument(
        "--annotation", metavar="FILE",
        help="probe annotation of the inputs' platform: a GEO platform table (SOFT or full "
        "table), an Affymetrix CSV annotation, a GSEA .chip file or two columns probe -> "
        "gene symbol or Entrez id",
    )
    parser.add_argument(
        "--platform", metavar="GPLxxx",
        help="GEO platform of the inputs: its annotation from the data folder or cache "
        "(geneinfer data fetch geo_platform --accession GPLxxx)"
        + ("; also picks the platform of a SOFT family file with several" if soft else ""),
    )


def add_archs4_arguments(group: Any) -> None:
    group.add_argument("--select-series", nargs="+", default=[], metavar="GSE",
                       help="samples of these GEO series")
    group.add_argument("--select-search", nargs="+", default=[], metavar="TEXT",
                       help="samples whose source, characteristics or title contain any TEXT "
                       "(ignoring case, spaces and _ - ' / .)")
    group.add_argument("--select-samples", metavar="FILE",
                       help="samples listed in FILE (GSM ids, one per line)")
    group.add_argument("--include-single-cell", action="store_true",
                       help="keep libraries ARCHS4 predicts to be single-cell")


def annotation_option(args: argparse.Namespace) -> str | None:
    """The annotation ``--annotation`` / ``--platform`` name (at most one of them)."""
    if args.annotation and args.platform:
        raise ConfigError("give --annotation FILE or --platform GPLxxx, not both")
    return args.annotation or args.platform


def archs4_selection(args: argparse.Namespace) -> Archs4Selection | None:
    """The ARCHS4 sample selection of the options, or None for the default (bulk only)."""
    if not (args.select_series or args.select_search or args.select_samples
            or args.include_single_cell):
        return None
    return selection_from_options(
        series=args.select_series, search=args.select_search,
        samples_file=args.select_samples, include_single_cell=args.include_single_cell)
