"""The one scale detector: every case geneinfer meets, on real data where there is one."""

from __future__ import annotations

import numpy as np
import pytest

from geneinfer.errors import GeneinferError
from geneinfer.io import read
from geneinfer.scales import (
    DETECTION_ROWS,
    detect_scale,
    resolve_scale,
    scale_from_text,
    stated_scale,
)


@pytest.fixture(scope="module")
def real(shared):
    """Probe-level values of the real sets, as geneinfer reads them."""
    return {
        "rma": read(shared / "gpl96" / "bladderbatch.gct.gz").values,
        "mas5": read(shared / "gpl96" / "nakayama.gct.gz").values,
        "counts": read(shared / "rnaseq" / "geuvadis85_counts.tsv.gz").values,
        "l1000": read(shared / "l1000" / "test_l1000.gct").values,
    }


def scale_cases(real) -> dict[str, tuple[np.ndarray, str]]:
    """Values of each scale case and the scale they must be detected as."""
    rng = np.random.default_rng(0)
    counts = real["counts"]
    lengths = rng.uniform(500, 5000, size=counts.shape[1])
    rate = counts / lengths
    tpm = rate / rate.sum(axis=1, keepdims=True) * 1e6
    rma = real["rma"]
    z = (rma - rma.mean(axis=0)) / rma.std(axis=0)
    return {
        "log2 integers": (np.round(rma), "log2"),  # whole numbers, max 15: not counts
        "MAS5 linear": (real["mas5"], "linear"),
        "RMA": (rma, "log2"),
        "counts": (counts, "counts"),
        "TPM": (tpm.astype(np.float32), "linear"),
        "z-scores": (z.astype(np.float32), "zscore"),
    }


def test_every_scale_case_is_detected(real):
    for name, (values, expected) in scale_cases(real).items():
        assert detect_scale(values) == expected, name


def test_other_real_and_edge_cases(real):
    rng = np.random.default_rng(1)
    assert detect_scale(real["l1000"]) == "log2"  # L1000 level 3
    assert detect_scale(rng.normal(0, 1.5, size=(20, 500))) == "zscore"  # log ratios
    small_counts = rng.poisson(3, size=(20, 500)).astype(float)
    small_counts[0, 0] = 45  # sparse, single-cell-like counts
    assert detect_scale(small_counts) == "counts"
    # log2 of TPM with a tiny pseudo-count: many negative values, but a spike at -10
    tpm = real["counts"] / real["counts"].sum(axis=1, keepdims=True) * 1e6
    assert detect_scale(np.log2(tpm + 0.001)) == "log2"
    with_nan = np.exp2(rng.normal(7, 2, size=(10, 300)))
    with_nan[:, :50] = np.nan
    assert detect_scale(with_nan) == "linear"
    with pytest.raises(GeneinferError, match=r"scale in x\.tsv: no finite values"):
        detect_scale(np.full((3, 3), np.nan), source="x.tsv")


def test_detection_reads_only_the_first_rows(real):
    rma = real["rma"]
    block = np.vstack([rma] * (DETECTION_ROWS // len(rma) + 1))[:DETECTION_ROWS]
    tail = np.exp2(block[:5]) * 100  # linear rows after the first DETECTION_ROWS
    assert detect_scale(np.vstack([block, tail])) == "log2"


def test_statements_in_files():
    assert scale_from_text("RMA log2") == "log2"
    assert scale_from_text("MAS5 linear") == "linear"
    assert scale_from_text("MAS 5.0 Statistical Algorithm (mean scaled to 500)") == "linear"
    assert scale_from_text("MAS5, log2 transformed") == "log2"
    assert scale_from_text("raw read counts") == "counts"
    assert scale_from_text("TPM") == "linear"
    assert scale_from_text("nothing") is None
    assert stated_scale(["RMA log2", "log2"]) == "log2"
    assert stated_scale(["RMA log2", "MAS5"]) == "unknown"  # samples disagree
    assert stated_scale([]) == "unknown"


def test_resolve_given_stated_detected(real):
    rma, mas5 = real["rma"][:20], real["mas5"][:20]
    assert resolve_scale(rma).describe() == "log2 (detected)"
    assert resolve_scale(mas5, stated="linear").describe() == "linear (stated)"
    assert resolve_scale(mas5, stated="linear", given="counts").how == "given"
    with pytest.raises(GeneinferError) as err:
        resolve_scale(mas5, stated="log2", source="nakayama.gct.gz")
    msg = str(err.value)
    assert "nakayama.gct.gz" in msg and "stated in the file" in msg and "--scale linear" in msg
    with pytest.raises(GeneinferError, match=r"given.*--scale log2"):
        resolve_scale(rma, given="linear")
