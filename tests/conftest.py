"""Shared fixtures: small, non-degenerate DenseNets (random weights with BatchNorm statistics)."""

from __future__ import annotations

import copy

import pytest
import torch

from densecam_core import load_densenet169
from densecam_core.testing import randomise_batchnorm


@pytest.fixture(scope="session")
def base_model() -> torch.nn.Module:
    return randomise_batchnorm(load_densenet169(seed=1), seed=2)


@pytest.fixture()
def model(base_model: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(base_model)
