"""How a classifier's inputs and outputs are read, in one place for the Explainer, the scorer and the worker.

Inputs: pixels in [0, 1] normalised with ImageNet's per-channel mean and std (torchvision's DenseNets).
Outputs: the explained class's probability, sigmoid for a one-output model, softmax over the outputs otherwise.
"""

from __future__ import annotations

import torch

from densecam_core.data.preprocess import IMAGENET_MEAN, IMAGENET_STD


def imagenet_statistics(device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet's mean and std as (1, 3, 1, 1) tensors on ``device`` (made once, broadcast over a batch)."""
    mean = torch.tensor(IMAGENET_MEAN, device=device).reshape(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).reshape(1, 3, 1, 1)
    return mean, std


def normalise01(pixels01: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1], shaped (N, 3, H, W), as the model's input."""
    mean, std = imagenet_statistics(pixels01.device)
    return (pixels01 - mean) / std


def class_probability(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The explained class's probability (one per image; ``targets`` holds each image's class id)."""
    if logits.shape[1] == 1:
        return torch.sigmoid(logits[:, 0])
    return torch.softmax(logits, dim=1).gather(1, targets[:, None])[:, 0]
