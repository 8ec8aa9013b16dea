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
    """Pixels in [0, 1], shaped (N, 3, H, W), as a three-channel ImageNet-normalised model reads them."""
    return pixels_to_input(pixels01, 3, "imagenet", imagenet_statistics(pixels01.device))


def class_probability(logits: torch.Tensor, targets: torch.Tensor, activation: str | None = None) -> torch.Tensor:
    """The explained class's probability (one per image; ``targets`` holds each image's class id).

    ``activation``: ``sigmoid`` (each output on its own: one-output and multi-label models) or ``softmax``
    (exclusive classes); ``None``: sigmoid for one output, else softmax."""
    return target_probabilities(logits, targets[:, None], activation)[:, 0]


def target_probabilities(logits: torch.Tensor, targets: torch.Tensor, activation: str | None = None) -> torch.Tensor:
    """Each explained class's probability, ``(B, K)`` for ``targets`` of class ids ``(B, K)``."""
    activation = activation or ("sigmoid" if logits.shape[1] == 1 else "softmax")
    if activation == "sigmoid":
        return torch.sigmoid(logits.gather(1, targets))
    if activation == "softmax":
        return torch.softmax(logits, dim=1).gather(1, targets)
    raise ValueError(f"activation must be 'sigmoid' or 'softmax', got {activation!r}")


LUMA = (0.299, 0.587, 0.114)
"""ITU-R 601-2 luma, as PIL's ``convert("L")``: how RGB sources become the grey a 1-channel model reads."""


def default_input_norm(in_channels: int) -> str:
    """torchvision's models read 3 ImageNet-normalised channels; 1-channel DenseNets are torchxrayvision's."""
    return "xrv" if in_channels == 1 else "imagenet"


def luma_weights(device: torch.device | str) -> torch.Tensor:
    """``LUMA`` as a (1, 3, 1, 1) tensor on ``device`` (made once: a pass being recorded as a CUDA graph
    cannot copy from host memory)."""
    return torch.tensor(LUMA, device=device).reshape(1, 3, 1, 1)


def pixels_to_input(
    pixels01: torch.Tensor,
    in_channels: int,
    input_norm: str,
    statistics: tuple[torch.Tensor, torch.Tensor],
    luma: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pixels in [0, 1], (B, 1 or 3, H, W), as a model with ``in_channels`` inputs reads them.

    Grey pixels broadcast to three channels; RGB pixels become grey (luma) for a 1-channel model.
    ``xrv`` scales to [-1024, 1024]; ``imagenet`` subtracts ImageNet's mean and divides by its std
    (their channel averages for a 1-channel model)."""
    x = pixels01
    if in_channels == 1 and x.shape[1] == 3:
        weights = luma if luma is not None else luma_weights(x.device)
        x = (x * weights.to(x.dtype)).sum(dim=1, keepdim=True)
    if input_norm == "xrv":
        return x * 2048.0 - 1024.0
    mean, std = statistics
    if in_channels == 1:
        mean, std = mean.mean(dim=1, keepdim=True), std.mean(dim=1, keepdim=True)
    return (x - mean) / std
