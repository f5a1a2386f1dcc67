import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data samples shipped beside the repository (``../shared/data``)."""
    p = SHARED / "data"
    if not p.is_dir():
        pytest.skip(f"real data samples not found at {p}")
    return p
