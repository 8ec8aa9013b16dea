"""Stability of a map under noise a radiograph's own quantisation could hold: the image plus ±½ grey level of
uniform noise (one value per pixel, all channels, seeded by image), ``NOISE_SAMPLES`` times; per map the mean
Pearson r with the unperturbed map and the largest change (docs/METRICS.md)."""

from __future__ import annotations

import torch

from densecam_core.evaluation.batch import Batch, MapKey, Rows, explanation_maps, image_seed
from densecam_core.evaluation.similarity import max_change, pearson
from densecam_core.model.conventions import normalise01

NOISE_SAMPLES = 2
NOISE_AMPLITUDE = 0.5  # grey levels of 0..255: the smallest change an 8-bit image can hold


def score(batch: Batch, rows: Rows) -> None:
    pixels, original, seed = batch.pixels, batch.original, batch.scorer.settings.seed
    r_sum: dict[MapKey, torch.Tensor] = {}
    change: dict[MapKey, torch.Tensor] = {}
    _, _, height, width = pixels.shape
    for sample in range(NOISE_SAMPLES):
        noise = torch.stack(
            [
                torch.rand(
                    (1, height, width), generator=torch.Generator().manual_seed(image_seed(seed, i, f"noise-{sample}"))
                )
                for i in batch.image_ids
            ]
        ).to(pixels.device)
        noisy = pixels.float() + (noise * 2 - 1) * NOISE_AMPLITUDE
        perturbed = explanation_maps(batch.scorer.explainer(normalise01(noisy / 255.0)))
        for key, trained in original.items():
            r = pearson(trained, perturbed[key])
            c = max_change(trained, perturbed[key])
            r_sum[key] = r_sum.get(key, 0) + r
            change[key] = torch.maximum(change[key], c) if key in change else c
    for key in original:
        rows.add(key, "stability_r", r_sum[key] / NOISE_SAMPLES)
        rows.add(key, "stability_max_change", change[key])
