"""Fixtures for the io tests: real files from ../shared/data and small generated files."""

from __future__ import annotations

from pathlib import Path

import pytest

from geneinfer.expression import ExpressionData


@pytest.fixture(scope="session")
def l1000_gct(shared: Path) -> Path:
    return shared / "l1000" / "test_l1000.gct"


@pytest.fixture(scope="session")
def l1000_gctx(shared: Path) -> Path:
    return shared / "l1000" / "test_l1000_highprecision.gctx"


@pytest.fixture(scope="session")
def gse781_soft(shared: Path) -> Path:
    return shared / "geo" / "GSE781_family.soft.gz"


@pytest.fixture(scope="session")
def gse781_gpl96(gse781_soft: Path) -> ExpressionData:
    """The 17 GPL96 samples of GSE781 (read once per session: the SOFT file is 800k lines)."""
    from geneinfer.io import read_soft

    return read_soft(gse781_soft, platforms=["GPL96"])["GPL96"]


@pytest.fixture
def write_text(tmp_path: Path):
    """Write a text file (gzip when the name ends in .gz) and return its path."""
    import gzip

    def _write(name: str, text: str) -> Path:
        p = tmp_path / name
        if name.endswith(".gz"):
            with gzip.open(p, "wt", encoding="utf-8", newline="") as fh:
                fh.write(text)
        else:
            p.write_text(text, encoding="utf-8", newline="")
        return p

    return _write
