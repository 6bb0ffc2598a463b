"""``geneinfer data list|fetch|path``: public data sets with a local folder and a cache."""

from __future__ import annotations

import argparse
from pathlib import Path

from geneinfer.commands import add_output_options
from geneinfer.public_data import (
    default_cache_dir,
    fetch,
    get_source,
    list_sources,
    locate,
    resolve_data_dir,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p_list = sub.add_parser("list", help="list the known data sources and whether they are local")
    p_fetch = sub.add_parser("fetch", help="download a data source into the cache (resumable)")
    p_path = sub.add_parser("path", help="print the local path of a data source")
    for p in (p_list, p_fetch, p_path):
        p.add_argument("--data-dir", type=Path, default=None,
                       help="folder laid out like shared/data, used instead of downloading "
                            "(default: $GENEINFER_DATA_DIR)")
        p.add_argument("--cache-dir", type=Path, default=None,
                       help="download cache (default: $GENEINFER_CACHE or ~/.cache/geneinfer)")
    for p in (p_fetch, p_path):
        p.add_argument("name", help="data source name (see `geneinfer data list`)")
        p.add_argument("--accession", default=None,
                       help="accession for parametrised sources, e.g. GSE781, GPL96, E-MTAB-3732")
    add_output_options(p_fetch, nested=True)


def _status(name: str, data_dir: Path | None, cache_dir: Path | None) -> str:
    src = get_source(name)
    if src.parametrised:
        return "by accession"
    path = locate(name, data_dir=data_dir, cache_dir=cache_dir)
    if path is not None:
        return "local"
    return "download" if src.url else "local only"


def run(args: argparse.Namespace) -> int:
    if args.data_command == "list":
        ddir = resolve_data_dir(args.data_dir)
        cdir = args.cache_dir if args.cache_dir is not None else default_cache_dir()
        print(f"# data folder: {ddir or '(none)'}; cache: {cdir}")
        for src in list_sources():
            status = _status(src.name, args.data_dir, args.cache_dir)
            print(f"{src.name:<20} {status:<12} {src.description}")
        return 0
    if args.data_command == "path":
        path = locate(args.name, accession=args.accession, data_dir=args.data_dir,
                      cache_dir=args.cache_dir)
        if path is None:
            # fetch() with downloads off explains what to get from where.
            path = fetch(args.name, accession=args.accession, data_dir=args.data_dir,
                         cache_dir=args.cache_dir, progress=False, offline=True)
        print(path)
        return 0
    path = fetch(args.name, accession=args.accession, data_dir=args.data_dir,
                 cache_dir=args.cache_dir, progress=args.progress)
    print(path)
    return 0
