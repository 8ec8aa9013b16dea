"""Helpers for tests and benchmarks: networks whose maps are not degenerate without training."""

from __future__ import annotations

import torch


def randomise_batchnorm(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, as a trained network has.

    A fresh torchvision init has running mean 0 and variance 1 everywhere, which hides mistakes
    such as a BatchNorm that was skipped or folded wrongly.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
                module.weight.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
                module.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    return model
