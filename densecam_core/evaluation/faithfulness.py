"""Faithfulness of a map to its model: deletion and insertion (Petsiuk et al., 2018), batched on the device.

Definitions (docs/METRICS.md is the contract): the map, bilinearly upsampled to the input grid
(``align_corners=False``), ranks the input pixels, descending, ties in flat-index order (a stable
sort). With ``K`` steps, step ``k`` (0..K) has changed the top ``round(k/K * H*W)`` pixels, all
three channels of a pixel together. Deletion sets them to black (0 in [0, 1] pixel space, before
normalisation); insertion starts from a Gaussian-blurred copy (sigma = S/32 pixels, kernel size
2*ceil(3*sigma)+1) and restores the original pixels. The score after each step is the explained
class's probability (sigmoid for one output, softmax otherwise); the metric is the trapezoid area
``(1/K) * sum_{k<K} (p_k + p_{k+1}) / 2``. A flat map (max = min) scores NaN.

Why batched: reference implementations run one forward per step and image, with a host round trip
each; here every step of every image of a batch is built at once and goes through a few no-grad
forwards of the model's own batch size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from densecam_core.model.conventions import class_probability, normalise01


@dataclass(frozen=True)
class DeletionInsertion:
    """Per image: the areas under the deletion and insertion curves, and the curves (K+1 points)."""

    deletion_auc: torch.Tensor  # (B,)
    insertion_auc: torch.Tensor  # (B,)
    deletion_curve: torch.Tensor  # (B, K+1)
    insertion_curve: torch.Tensor  # (B, K+1)


def blur_sigma(size: int) -> float:
    return size / 32.0


def gaussian_blurred(pixels01: torch.Tensor) -> torch.Tensor:
    """The insertion baseline: a Gaussian blur in [0, 1] pixel space, sigma = S/32, kernel 2*ceil(3 sigma)+1."""
    from torchvision.transforms.v2.functional import gaussian_blur

    sigma = blur_sigma(pixels01.shape[-1])
    kernel = 2 * math.ceil(3 * sigma) + 1
    return gaussian_blur(pixels01, kernel_size=[kernel, kernel], sigma=[sigma, sigma])


def pixel_ranks(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H*W) rank of each input pixel (0 = most salient): descending map value, ties by flat index."""
    upsampled = F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)
    flat = upsampled.flatten(1)
    order = torch.argsort(-flat, dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks


def step_counts(steps: int, pixels: int) -> list[int]:
    """How many top pixels step k (0..K) has changed: round(k/K * H*W)."""
    return [round(k / steps * pixels) for k in range(steps + 1)]


def _probabilities(
    model: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    batch_size: int,
    activation: str | None = None,
) -> torch.Tensor:
    """The explained class's probability for each of ``inputs`` ([0, 1] pixels), no-grad, ``batch_size`` at a time."""
    probabilities = []
    with torch.no_grad():
        for start in range(0, inputs.shape[0], batch_size):
            logits = model(normalise01(inputs[start : start + batch_size])).float()
            probabilities.append(class_probability(logits, targets[start : start + batch_size], activation))
    return torch.cat(probabilities)


@dataclass(frozen=True)
class Endpoints:
    """The curves' ends, the same for every map of an image: the image, black, and the blurred image."""

    original: torch.Tensor  # (B,): deletion step 0 and insertion step K
    black: torch.Tensor  # (B,): deletion step K
    blurred: torch.Tensor  # (B,): insertion step 0


def endpoints(
    model: Callable[[torch.Tensor], torch.Tensor],
    x01: torch.Tensor,
    targets: torch.Tensor,
    batch_size: int = 32,
    activation: str | None = None,
) -> Endpoints:
    """Computed once per batch of images when many maps of the same images are scored."""
    inputs = torch.cat([x01, torch.zeros_like(x01), gaussian_blurred(x01)])
    p = _probabilities(model, inputs, targets.repeat(3), batch_size, activation).reshape(3, -1)
    return Endpoints(p[0], p[1], p[2])


def deletion_insertion(
    model: Callable[[torch.Tensor], torch.Tensor],
    pixels: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor | None = None,
    *,
    steps: int = 16,
    batch_size: int = 32,
    ends: Endpoints | None = None,
    activation: str | None = None,
) -> DeletionInsertion:
    """Deletion and insertion for a batch: ``pixels`` (B, 3, H, W) uint8 (or [0, 1] float), ``maps`` (B, h, w).

    ``model`` maps a normalised (N, 3, H, W) batch to logits (N, C); ``targets`` (B,) are the explained
    classes (class 0 by default). Every perturbed input goes through ``model`` under ``no_grad`` in
    chunks of ``batch_size``. ``ends`` (from ``endpoints``) saves the four forwards per image that
    every map shares (steps 0 and K of both curves). ``activation``: how logits become the class's
    probability (``conventions.class_probability``).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if pixels.ndim != 4 or pixels.shape[1] != 3 or maps.ndim != 3 or maps.shape[0] != pixels.shape[0]:
        raise ValueError(
            f"expected pixels (B, 3, H, W) and maps (B, h, w); got {tuple(pixels.shape)}, {tuple(maps.shape)}"
        )
    x = pixels.float() / 255.0 if pixels.dtype == torch.uint8 else pixels.float()
    count, _, height, width = x.shape
    targets = torch.zeros(count, dtype=torch.long, device=x.device) if targets is None else targets.to(x.device)
    ends = ends if ends is not None else endpoints(model, x, targets, batch_size, activation)
    ranks = pixel_ranks(maps.to(x.device), (height, width)).reshape(count, 1, height, width)
    inner = step_counts(steps, height * width)[1:-1]  # steps 1..K-1: the ends are shared
    curves = []
    for start_p, end_p, deleting in ((ends.original, ends.black, True), (ends.blurred, ends.original, False)):
        middle = torch.empty(count, 0, device=x.device)
        if inner:
            limits = torch.tensor(inner, device=x.device).reshape(-1, 1, 1, 1, 1)
            changed = ranks[None] < limits  # (K-1, B, 1, H, W): pixels changed by each inner step
            base = torch.zeros_like(x) if deleting else gaussian_blurred(x)
            perturbed = (
                torch.where(changed, base[None], x[None]) if deleting else torch.where(changed, x[None], base[None])
            )
            flat = perturbed.reshape(-1, 3, height, width)  # step-major: (K-1)*B inputs
            middle = _probabilities(model, flat, targets.repeat(len(inner)), batch_size, activation)
            middle = middle.reshape(len(inner), count).T
        curves.append(torch.cat([start_p[:, None], middle, end_p[:, None]], dim=1))  # (B, K+1)
    flat_maps = maps.flatten(1)
    is_flat = (flat_maps.max(dim=1).values <= flat_maps.min(dim=1).values).to(x.device)
    areas = [((c[:, :-1] + c[:, 1:]) / 2).sum(dim=1) / steps for c in curves]
    areas = [torch.where(is_flat, torch.full_like(a, float("nan")), a) for a in areas]
    return DeletionInsertion(areas[0], areas[1], curves[0], curves[1])


def _curves(batch: Any) -> dict[Any, DeletionInsertion]:
    """Deletion and insertion of every map of ``batch`` (``evaluation.batch.Batch``), computed once for both
    families."""
    if "deletion_insertion" in batch.cache:
        return batch.cache["deletion_insertion"]
    scorer, pixels = batch.scorer, batch.pixels
    targets = torch.full((pixels.shape[0],), scorer.target, dtype=torch.long, device=pixels.device)
    # CPU: small batches stay in cache (faster per image); GPU: large ones fill the device
    size = scorer.settings.forward_batch or (64 if pixels.device.type == "cuda" else 16)
    ends = endpoints(scorer.forward, pixels.float() / 255.0, targets, size, scorer.activation)  # every map's
    batch.cache["deletion_insertion"] = {
        key: deletion_insertion(
            scorer.forward,
            pixels,
            values.to(pixels.device),
            targets,
            steps=scorer.settings.steps,
            batch_size=size,
            ends=ends,
            activation=scorer.activation,
        )
        for key, values in batch.maps.items()
    }
    return batch.cache["deletion_insertion"]


def score_deletion(batch: Any, rows: Any) -> None:
    for key, result in _curves(batch).items():
        rows.add(key, "deletion_auc", result.deletion_auc)


def score_insertion(batch: Any, rows: Any) -> None:
    for key, result in _curves(batch).items():
        rows.add(key, "insertion_auc", result.insertion_auc)
