from __future__ import annotations

import pytest

from .helpers import fit_model


@pytest.fixture(scope="session")
def model(shared):
    """A real Ridge InferenceModel: 978 real L1000 landmarks -> 300 real target genes."""
    return fit_model(shared)


@pytest.fixture(scope="session")
def model_dir(model, tmp_path_factory):
    return model.save(tmp_path_factory.mktemp("model") / "ridge")
