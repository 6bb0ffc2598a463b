"""Checked option types shared by the commands, so every numeric option is validated the same
way and a bad value is one line: ``geneinfer: error: argument --batch-size: must be at least
1, got -1``.

Each function is an ``argparse`` ``type=``; the library functions the commands call check
the same ranges again, for callers of the Python API.
"""

from __future__ import annotations

import argparse
import math

from geneinfer.io import NONFINITE_POLICIES


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
