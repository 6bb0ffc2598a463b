"""Command-line interface: a thin layer over the Python API.

Each sub-command lives in ``geneinfer.commands.<name>`` and provides ``add_arguments(parser)``
and ``run(args) -> int``. Modules are imported only when their command runs, so
``geneinfer --help`` stays fast and a missing optional dependency affects only its command.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys
import warnings
from collections.abc import Iterator

from geneinfer import __version__
from geneinfer.commands import add_output_options
from geneinfer.errors import ConfigError, GeneinferError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("geneinfer.commands.demo", "train and compare models on the embedded real data"),
    "convert": ("geneinfer.commands.convert", "convert between GCT, GCTX, SOFT, TSV/CSV and h5ad"),
    "data": ("geneinfer.commands.data", "list, fetch or locate public data sets (cached)"),
    "train": ("geneinfer.commands.train", "train an inference model on expression files"),
    "predict": ("geneinfer.commands.predict", "infer target genes from landmark profiles"),
    "study": ("geneinfer.commands.study", "run a whole benchmark study from a TOML config"),
}


class _Parser(argparse.ArgumentParser):
    """Option mistakes are user mistakes: one line and exit code 2, like every other error
    (argparse would print the whole usage first)."""

    def error(self, message: str):  # type: ignore[override]
        raise ConfigError(f"{message} (see '{self.prog} --help')")


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = _Parser(
        prog="geneinfer",
        description="Infer whole-transcriptome expression from a panel of landmark genes.",
    )
    parser.add_argument("--version", action="version", version=f"geneinfer {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Import only the module of the command being run (the first non-option word).
    chosen = next((a for a in argv if not a.startswith("-")), None)
    modules: dict[str, object] = {}
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_output_options(p)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(p)  # type: ignore[attr-defined]
            modules[name] = module
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser, modules = build_parser(argv)
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return 2
        quiet = bool(getattr(args, "quiet", False))
        # one switch for every command: args.progress is what commands read
        args.progress = not (quiet or getattr(args, "no_progress", False))
        with _messages(quiet=quiet, verbose=args.verbose):
            return int(modules[args.command].run(args) or 0)  # type: ignore[attr-defined]
    except GeneinferError as exc:
        print(f"geneinfer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("geneinfer: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


@contextlib.contextmanager
def _messages(*, quiet: bool, verbose: bool) -> Iterator[None]:
    """geneinfer's log level (errors only with ``--quiet``) and Python warnings for one
    command, restored afterwards (main() may run inside a larger program or a test)."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logger = logging.getLogger("geneinfer")
    before = logger.level
    logger.setLevel(logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING)
    try:
        with warnings.catch_warnings():
            if quiet:
                warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(before)
