"""``geneinfer predict``: infer target genes for every profile of an input file.

Runs in blocks (bounded memory), resumes when rerun after an interruption, and shards across
``--workers N`` processes or ``torchrun --nproc-per-node N -m geneinfer predict ...`` ranks.
"""

from __future__ import annotations

import argparse

from geneinfer.calibration import CalibratedModel, centering_shift, fit_offset_calibrator
from geneinfer.commands.options import (
    add_nonfinite,
    add_platform_arguments,
    annotation_option,
    correlation,
    fraction,
    positive_int,
)
from geneinfer.errors import ConfigError
from geneinfer.io import WRITABLE, read
from geneinfer.models.bundle import InferenceModel
from geneinfer.predict import PlanOptions, predict_file
from geneinfer.preprocess import MAX_IMPUTE_FRACTION
from geneinfer.scales import CONVERTIBLE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="model directory written by 'geneinfer train'")
    parser.add_argument("--input", required=True, metavar="FILE",
                        help="profiles with the model's landmarks (GCTX, h5ad, GCT, TSV/CSV, "
                             "SOFT, series matrix; any scale and gene ids, read as in training)")
    parser.add_argument("--output", required=True, metavar="FILE",
                        help="predictions: .gctx/.h5ad (streamed, resumable) or .gct/.tsv/.csv")
    parser.add_argument("--format", dest="output_format", default=None,
                        choices=WRITABLE,
                        help="output format (default: from the output extension)")
    parser.add_argument("--block-size", type=positive_int, default=10000, metavar="N",
                        help="samples per block, the unit of resuming and sharding "
                             "(default: %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=None, metavar="N",
                        help="samples predicted at once inside a block (default: 2048)")
    parser.add_argument("--workers", type=positive_int, default=1, metavar="N",
                        help="processes on this machine (default: 1; under torchrun the "
                             "ranks share the work instead)")
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help="BLAS/torch threads per process (default: cores / workers); "
                             "outputs are bit-identical for equal threads per process")
    parser.add_argument("--missing-landmarks", choices=("error", "impute"), default="error",
                        help="absent landmarks or NaN values: fail naming them, or fill them "
                             "with the model's training means (default: %(default)s)")
    parser.add_argument("--max-impute", type=fraction, default=MAX_IMPUTE_FRACTION,
                        metavar="F",
                        help="with --missing-landmarks impute: the largest share of the "
                             "model's landmarks that may be absent and imputed (default: "
                             "%(default)s; 1 forces any number)")
    add_nonfinite(parser)
    parser.add_argument("--min-r", type=correlation, default=None, metavar="R",
                        help="keep only genes whose validation correlation is at least R "
                             "(LINCS-style 'best inferred genes')")
    parser.add_argument("--reliable-r", type=correlation, default=None, metavar="R",
                        help="pr_is_reliable marks genes whose validation r is at least R "
                             "(default: --min-r, else 0.3)")
    parser.add_argument("--with-reliability", action="store_true",
                        help="add valid_r and valid_mae to the gene metadata")
    parser.add_argument("--include-landmarks", action="store_true",
                        help="write the landmarks the model used (measured, log2) and the "
                             "inferred genes in one file, as CMap's full profiles (pr_is_lm "
                             "tells them apart)")
    parser.add_argument("--var-names", choices=("symbol", "id"), default="symbol",
                        help="h5ad output: gene symbols (unique, for scanpy) or gene ids as "
                             "var_names; the other is kept in var (default: %(default)s)")
    parser.add_argument("--center-landmarks", action="store_true",
                        help="per-study centering: move the input's mean model input (landmarks "
                             "after the saved normalisation) onto the training mean (the input "
                             "file is one study; outputs are then for comparing samples within "
                             "it; a linear model's within-study correlations are unchanged)")
    parser.add_argument("--calibrate", metavar="FILE", default=None,
                        help="full profiles (landmarks + targets) of a few samples of the new "
                             "study/platform: learn a per-gene offset from them, shrunk toward "
                             "no change")
    parser.add_argument("--calibrate-scale", action="store_true",
                        help="with --calibrate: also learn a per-gene slope (>= 5 samples)")
    parser.add_argument("--scale", choices=CONVERTIBLE, default=None,
                        help="scale of the input values when the file does not say it "
                             "(default: stated by the file, else detected)")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="data folder of public gene tables (Ensembl ids, symbols); "
                             "default: $GENEINFER_DATA_DIR")
    add_platform_arguments(parser, soft=False)


def run(args: argparse.Namespace) -> int:
    calibrating = args.center_landmarks or args.calibrate or args.calibrate_scale
    model = _calibrated_model(args) if calibrating else args.model
    options = PlanOptions(
        block_size=args.block_size, batch_size=args.batch_size,
        missing_landmarks=args.missing_landmarks, min_r=args.min_r,
        reliable_r=args.reliable_r, with_reliability=args.with_reliability,
        include_landmarks=args.include_landmarks, var_names=args.var_names,
        scale=args.scale, data_dir=args.data_dir, annotation=annotation_option(args),
        max_impute=args.max_impute, nonfinite=args.nonfinite,
    )
    result = predict_file(model, args.input, args.output, options=options,
                          output_format=args.output_format, progress=args.progress,
                          workers=args.workers, threads=args.threads)
    if not args.quiet and result.n_samples:
        resumed = (f", {result.n_samples - result.n_predicted} resumed"
                   if result.n_predicted < result.n_samples else "")
        print(f"geneinfer: wrote {result.n_samples} profiles x {result.n_genes} genes to "
              f"{result.output}: predicted {result.n_predicted} in "
              f"{result.predict_seconds:.1f} s ({result.rate:,.0f} profiles/s{resumed}); "
              f"{result.seconds:.1f} s in all")
    return 0


def _calibrated_model(args: argparse.Namespace) -> CalibratedModel:
    """The saved model wrapped with the calibration the options ask for."""
    if args.calibrate_scale and not args.calibrate:
        raise ConfigError("--calibrate-scale needs --calibrate FILE")
    model = InferenceModel.load(args.model, device="cpu")
    annotation = annotation_option(args)  # the input's platform, and the calibration file's
    shift = (centering_shift(model, args.input, data_dir=args.data_dir,
                             max_impute_fraction=args.max_impute, nonfinite=args.nonfinite,
                             scale=args.scale, annotation=annotation)
             if args.center_landmarks else None)
    calibrator = None
    if args.calibrate:
        profiles = read(args.calibrate, nonfinite=args.nonfinite)
        calibrator, n_genes = fit_offset_calibrator(
            model, profiles, scale=args.calibrate_scale, data_dir=args.data_dir,
            input_shift=shift, max_impute_fraction=args.max_impute, annotation=annotation,
        )
        if not args.quiet:
            print(f"geneinfer: calibration from {profiles.n_samples} profiles of "
                  f"{args.calibrate}: per-gene offset{'/scale' if args.calibrate_scale else ''} "
                  f"for {n_genes} of {len(model.target_ids)} target genes")
    return CalibratedModel(model, input_shift=shift, calibrator=calibrator)
