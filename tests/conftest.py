"""Shared test fixtures: the ../shared folder beside the checkout, and deterministic torch settings."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PROMPTIQA_SHARED", ROOT.parent / "shared"))

torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the checkout (read-only project material); tests needing it skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is not present")
    return SHARED


@pytest.fixture(scope="session")
def labels_dir(shared_dir: Path) -> Path:
    """The real published label files in ../shared/datasets/labels."""
    path = shared_dir / "datasets" / "labels"
    if not path.is_dir():
        pytest.skip(f"{path} is not present")
    return path
