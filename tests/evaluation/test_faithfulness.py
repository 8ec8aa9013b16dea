"""Deletion and insertion (densecam_core.evaluation.faithfulness) against a plain reference: one forward per step and image."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from densecam_core.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from densecam_core.evaluation.faithfulness import deletion_insertion, gaussian_blurred, pixel_ranks

MEAN = torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1)


def small_model(outputs: int) -> torch.nn.Module:
    torch.manual_seed(outputs)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, outputs),
    ).eval()


def reference(model, image01: torch.Tensor, saliency: torch.Tensor, target: int, steps: int) -> tuple[float, float]:
    """Written as a user would: loop over steps, one image at a time, one forward each."""
    height, width = image01.shape[1:]
    up = F.interpolate(saliency[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    order = sorted(range(height * width), key=lambda i: (-float(up.flatten()[i]), i))
    blurred = gaussian_blurred(image01[None])[0]
    areas = []
    for start_from_blur in (False, True):
        probs = []
        for k in range(steps + 1):
            n = round(k / steps * height * width)
            image = (blurred if start_from_blur else image01).clone()
            for i in order[:n]:
                y, x = divmod(i, width)
                image[:, y, x] = image01[:, y, x] if start_from_blur else 0.0
            with torch.no_grad():
                logits = model((image[None] - MEAN) / STD)
            p = torch.sigmoid(logits[0, 0]) if logits.shape[1] == 1 else torch.softmax(logits, 1)[0, target]
            probs.append(float(p))
        areas.append(sum((probs[k] + probs[k + 1]) / 2 for k in range(steps)) / steps)
    return areas[0], areas[1]


@pytest.mark.parametrize("outputs", [1, 3])
def test_batched_deletion_and_insertion_equal_a_plain_loop(outputs):
    torch.manual_seed(0)
    model = small_model(outputs)
    pixels = torch.randint(0, 256, (3, 3, 24, 20), dtype=torch.uint8)
    maps = torch.rand(3, 6, 5)
    maps[1, 2:4, 1:3] = maps[1].max()  # ties: broken by flat index
    targets = torch.tensor([0, 2, 1]) if outputs == 3 else None
    result = deletion_insertion(model, pixels, maps, targets, steps=8, batch_size=5)
    for b in range(3):
        want = reference(model, pixels[b].float() / 255, maps[b], int(targets[b]) if targets is not None else 0, 8)
        assert float(result.deletion_auc[b]) == pytest.approx(want[0], abs=1e-5)
        assert float(result.insertion_auc[b]) == pytest.approx(want[1], abs=1e-5)


class MeanBrightness(torch.nn.Module):
    """logit = 8 * (mean pixel value in [0, 1] - 0.25): a known function of the input."""

    def forward(self, normalised: torch.Tensor) -> torch.Tensor:
        pixels = normalised * STD + MEAN
        return 8 * (pixels.mean(dim=(1, 2, 3))[:, None] - 0.25)


def test_deletion_of_any_map_on_a_uniform_image_follows_the_known_curve():
    pixels = torch.full((2, 3, 16, 16), 0.5)
    maps = torch.rand(2, 4, 4)  # a random map: on a uniform image every order deletes the same amount
    steps = 16
    result = deletion_insertion(MeanBrightness(), pixels, maps, steps=steps)
    curve = [1 / (1 + math.exp(-8 * (0.5 * (1 - round(k / steps * 256) / 256) - 0.25))) for k in range(steps + 1)]
    expected = sum((curve[k] + curve[k + 1]) / 2 for k in range(steps)) / steps
    assert result.deletion_auc.tolist() == pytest.approx([expected, expected], abs=1e-6)
    assert result.deletion_curve[0, 0] == pytest.approx(curve[0]) and result.deletion_curve[0, -1] == pytest.approx(
        curve[-1]
    )


def test_flat_maps_score_nan_and_ranks_break_ties_by_index():
    flat = deletion_insertion(MeanBrightness(), torch.full((1, 3, 8, 8), 0.5), torch.ones(1, 2, 2))
    assert math.isnan(float(flat.deletion_auc[0])) and math.isnan(float(flat.insertion_auc[0]))
    ranks = pixel_ranks(torch.tensor([[[1.0, 1.0], [0.0, 0.0]]]), (2, 2))
    assert ranks.tolist() == [[0, 1, 2, 3]]
    with pytest.raises(ValueError, match="steps must be >= 1"):
        deletion_insertion(MeanBrightness(), torch.zeros(1, 3, 8, 8), torch.rand(1, 2, 2), steps=0)


class BrightSpotDetector(torch.nn.Module):
    """A lesion detector with known weights: logit = 20 * (brightest 2x2 patch's mean in [0, 1] - 0.7)."""

    def forward(self, normalised: torch.Tensor) -> torch.Tensor:
        pixels = (normalised * STD + MEAN).mean(dim=1, keepdim=True)
        return 20 * (F.avg_pool2d(pixels, 2, stride=1).amax(dim=(1, 2, 3))[:, None] - 0.7)


def test_an_oracle_map_beats_the_random_map_on_deletion_and_insertion():
    from densecam_core.evaluation.scorer import random_maps

    generator = torch.Generator().manual_seed(0)
    pixels = (torch.rand(6, 1, 64, 64, generator=generator) * 80).to(torch.uint8).expand(-1, 3, -1, -1).clone()
    oracle = torch.zeros(6, 8, 8)
    for n in range(6):  # a bright 4x4 "lesion" somewhere in each image; the oracle map is its mask
        y, x = (int(v) for v in torch.randint(0, 60, (2,), generator=generator))
        pixels[n, :, y : y + 4, x : x + 4] = 230
        oracle[n, y // 8 : (y + 3) // 8 + 1, x // 8 : (x + 3) // 8 + 1] = 1.0
    random = random_maps([f"image{n}" for n in range(6)], (8, 8), seed=0, block=4)
    model = BrightSpotDetector()
    good = deletion_insertion(model, pixels, oracle, steps=8)
    chance = deletion_insertion(model, pixels, random, steps=8)
    # per image at least as good (a random map may by chance rank the lesion first), on average far better
    assert (good.deletion_auc <= chance.deletion_auc + 1e-6).all() and (
        good.insertion_auc >= chance.insertion_auc - 1e-6
    ).all()
    assert good.deletion_auc.mean() < chance.deletion_auc.mean() - 0.3
    assert good.insertion_auc.mean() > chance.insertion_auc.mean() + 0.3
