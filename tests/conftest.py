"""Shared fixtures: small float64 problems with known answers, and the shared data folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from influencekit.experiments import datasets

# tests/ is a package (so same-named test files in sub-folders do not clash); its shared
# helpers module is imported as a top-level ``helpers``.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def data_dir():
    """The shared data folder (../shared/data); tests that need it are skipped without it."""
    try:
        return datasets.data_dir()
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"shared data not available: {e}")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# One thread per test process: the suite runs under pytest-xdist on two cores, and torch's
# default (all cores per process) oversubscribes them and slows every test down.
torch.set_num_threads(1)
