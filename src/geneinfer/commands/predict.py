"""``geneinfer predict``: infer target genes for every profile of an input file.

Runs in blocks (bounded memory), resumes when rerun after an interruption, and shards across
``--workers N`` processes or ``torchrun --nproc-per-node N -m geneinfer predict ...`` ranks.
"""

from __future__ import annotations

import argparse

from geneinfer.predict.writers import MEMORY_FORMATS, STREAMING_FORMATS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="model directory written by 'geneinfer train'")
    parser.add_argument("--input", required=True, metavar="FILE",
                        help="landmark profiles, log2 (GCTX, h5ad, GCT, TSV/CSV genes in rows)")
    parser.add_argument("--output", required=True, metavar="FILE",
                        help="predictions: .gctx/.h5ad (streamed, resumable) or .gct/.tsv/.csv")
    parser.add_argument("--format", dest="output_format", default=None,
                        choices=STREAMING_FORMATS + MEMORY_FORMATS,
                        help="output format (default: from the output extension)")
    parser.add_argument("--block-size", type=int, default=10000, metavar="N",
                        help="samples per block, the unit of resuming and sharding "
                             "(default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=None, metavar="N",
                        help="samples predicted at once inside a block (default: 2048)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="processes on this machine (default: 1; under torchrun the "
                             "ranks share the work instead)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="BLAS/torch threads per process (default: cores / workers); "
                             "outputs are bit-identical for equal threads per process")
    parser.add_argument("--missing-landmarks", choices=("error", "impute"), default="error",
                        help="absent landmarks or NaN values: fail naming them, or fill them "
                             "with the model's training means (default: %(default)s)")
    parser.add_argument("--min-r", type=float, default=None, metavar="R",
                        help="keep only genes whose validation correlation is at least R "
                             "(LINCS-style 'best inferred genes')")
    parser.add_argument("--with-reliability", action="store_true",
                        help="add valid_r and valid_mae to the gene metadata")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bar or messages")


def run(args: argparse.Namespace) -> int:
    from geneinfer.errors import ConfigError
    from geneinfer.predict import predict_file

    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    result = predict_file(
        args.model,
        args.input,
        args.output,
        block_size=args.block_size,
        batch_size=args.batch_size,
        output_format=args.output_format,
        missing_landmarks=args.missing_landmarks,
        min_r=args.min_r,
        with_reliability=args.with_reliability,
        progress=args.progress,
        workers=args.workers,
        threads=args.threads,
    )
    if args.progress and result.n_samples:
        rate = result.n_samples / result.seconds if result.seconds else float("nan")
        print(f"geneinfer: wrote {result.n_samples} profiles x {result.n_genes} genes to "
              f"{result.output} in {result.seconds:.1f} s ({rate:,.0f} profiles/s)")
    return 0
