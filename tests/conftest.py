"""Fixtures shared by the tests; helper functions are in helpers.py."""

import os
from pathlib import Path

import pytest
import torch
from helpers import SHARED

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data samples shipped beside the repository (``../shared/data``)."""
    p = SHARED / "data"
    if not p.is_dir():
        pytest.skip(f"real data samples not found at {p}")
    return p


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A tiny procedural dataset (24 scenes, 32x48)."""
    from densemtl.data.synth import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("synth"), num=24, size=(32, 48), seed=0, workers=1, progress=False)
