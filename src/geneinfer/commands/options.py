"""Command-line options shared by several commands: probe annotations, ARCHS4 selections."""

from __future__ import annotations

import argparse
from typing import Any

from geneinfer.errors import ConfigError
from geneinfer.io import Archs4Selection
from geneinfer.io.archs4 import selection_from_options


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
