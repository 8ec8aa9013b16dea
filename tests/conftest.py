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


@pytest.fixture(scope="session")
def demo_result(tmp_path_factory) -> dict:
    """The demo pipeline at a tiny size (40 images of <= 96 px, 64 px input, 1 + 1 epochs, 4 images scored
    at K = 4: the scoring is half of the demo's time), run once."""
    from jobs.demo import DemoConfig, run_demo

    config = DemoConfig(
        images=40,
        size=64,
        epochs=1,
        batch_size=4,
        min_side=48,
        max_side=96,
        overlays=2,
        sheet_images=4,
        evaluate_images=4,
        evaluate_steps=4,
        progress=False,
    )
    return run_demo(tmp_path_factory.mktemp("demo"), config)
