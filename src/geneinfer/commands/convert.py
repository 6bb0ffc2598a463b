"""``geneinfer convert IN OUT``: convert between GCT, GCTX, SOFT, series matrix, TSV/CSV, h5ad."""

from __future__ import annotations

import argparse
from pathlib import Path

from geneinfer import io
from geneinfer.commands.options import add_nonfinite
from geneinfer.errors import ConfigError, GeneinferError
from geneinfer.expression import ExpressionData
from geneinfer.genes import annotate_genes
from geneinfer.preprocess import harmonize
from geneinfer.scales import CONVERTIBLE, resolve_scale
from geneinfer.utils.files import output_errors
from geneinfer.utils.locks import exclusive_lock


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="IN", help="expression file to read")
    parser.add_argument("output", metavar="OUT", help="file to write (format from its name)")
    parser.add_argument(
        "--from",
        dest="from_format",
        choices=io.FORMATS,
        help="input format (default: from the name, else the content)",
    )
    parser.add_argument(
        "--to",
        dest="to_format",
        choices=io.WRITABLE,
        help="output format (default: from the output name)",
    )
    parser.add_argument(
        "--platform",
        metavar="GPLxxx",
        help="platform to take from a GEO SOFT file with several platforms",
    )
    parser.add_argument(
        "--annotation",
        metavar="FILE|GPLxxx",
        help="probe annotation (GEO platform table, Affymetrix CSV, GSEA .chip, two "
        "columns probe -> symbol/Entrez, or a platform cached by `geneinfer data fetch "
        "geo_platform`): the output carries each probe's Entrez id and symbol "
        "(pr_gene_id, pr_gene_symbol)",
    )
    parser.add_argument(
        "--to-genes",
        action="store_true",
        help="write what training reads: log2 values with one column per Entrez gene "
        "(probes of a gene averaged, counts as log2 CPM)",
    )
    parser.add_argument(
        "--scale", choices=CONVERTIBLE, default=None,
        help="with --to-genes: scale of the input values when the file does not say it",
    )
    parser.add_argument(
        "--data-dir", metavar="DIR",
        help="data folder of public gene tables (for --to-genes and --annotation)",
    )
    parser.add_argument(
        "--orientation",
        choices=("genes-in-rows", "samples-in-rows"),
        help="layout of a TSV/CSV input (detected when unambiguous); "
        "also used for a TSV/CSV output (default genes-in-rows)",
    )
    add_nonfinite(parser)


def summary(data: ExpressionData, out: str, *, n_nonfinite: int = 0) -> str:
    """One line: shape, scale (stated by the file, else detected), id kind and the number of
    missing values (of which ``n_nonfinite`` were infinite values read as missing). The
    values are written as read, whatever their scale."""
    n_missing = data.n_missing()
    miss = f", {n_missing} missing values (kept as NaN)" if n_missing else ""
    if n_nonfinite:
        miss += f", {n_nonfinite} of them non-finite in the input (--nonfinite missing)"
    try:
        scale = resolve_scale(data.values, stated=data.scale, source=data.source).describe()
    except GeneinferError:  # converting copies the values; say what is off, do not refuse
        scale = f"{data.scale} (stated; the values disagree)"
    return (
        f"wrote {out}: {data.n_samples} samples x {data.n_genes} genes, "
        f"scale {scale}, gene ids {data.gene_id_kind}{miss}"
    )


def _genes_view(data: ExpressionData, args: argparse.Namespace) -> ExpressionData:
    """With --to-genes, what training reads (log2, Entrez genes); with --annotation, the
    probes annotated with their genes; else the data as read."""
    if args.to_genes:
        data, report = harmonize(data, scale=args.scale, annotation=args.annotation,
                                 data_dir=args.data_dir)
        if not args.quiet:
            print(f"geneinfer: {report.summary()}")
    elif args.annotation:
        data, genes = annotate_genes(data, annotation=args.annotation, data_dir=args.data_dir)
        if not args.quiet:
            print(f"geneinfer: {genes.summary()}")
    return data


def run(args: argparse.Namespace) -> int:
    in_fmt = io.detect_format(args.input, format=args.from_format)
    out_fmt = io.output_format(args.output, format=args.to_format)
    read_opts: dict[str, object] = {}
    if args.platform:
        read_opts["platform"] = args.platform
    if args.orientation and in_fmt in ("tsv", "csv"):
        read_opts["orientation"] = args.orientation
    if args.scale and not args.to_genes:
        raise ConfigError("--scale applies with --to-genes only (the values are otherwise "
                          "written as read)")
    write_opts: dict[str, object] = {}
    if args.orientation and out_fmt in ("tsv", "csv"):
        write_opts["orientation"] = args.orientation
    out = Path(args.output)
    with output_errors(out.parent, what="create the folder"):
        out.parent.mkdir(parents=True, exist_ok=True)  # where the lock file goes
    # one run per output at a time: a second one stops at once naming this one's pid
    with exclusive_lock(out, what="converting into"):
        nonfinite = io.NonFinite(args.nonfinite)
        data = io.read(args.input, format=in_fmt, nonfinite=nonfinite, **read_opts)
        data = _genes_view(data, args)
        io.write(data, out, format=out_fmt, **write_opts)
    if not args.quiet:
        print(summary(data, args.output, n_nonfinite=nonfinite.count))
    return 0
