"""Scores for a batch of images and their maps: every metric of docs/METRICS.md, batched on one device.

``BatchScorer.score`` takes a batch's uint8 inputs and its stored maps and returns long-form rows
(``image_id, method, block, metric, stage, value``). It knows nothing of stores or Ray: the
evaluation worker reads the inputs and maps and writes the rows; tests call it directly.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from densecam_core.analysis.pointing import is_hit, peak
from densecam_core.analysis.regions import box_mask
from densecam_core.cam.explainer import Explainer, Explanation
from densecam_core.data.geometry import Geometry
from densecam_core.evaluation.faithfulness import deletion_insertion, endpoints
from densecam_core.evaluation.localisation import otsu_iou, relevance_mass
from densecam_core.evaluation.randomisation import RANDOMIZATION_STAGES, cascade
from densecam_core.evaluation.similarity import max_change, pearson, spearman, ssim
from densecam_core.model.conventions import normalise01
from densecam_core.model.fusion import fused_densenet
from densecam_core.vocabulary import CAM_KEY, METRICS, block_grid, validate_metrics

RANDOM_METHOD = "random"
NOISE_SAMPLES = 2
NOISE_AMPLITUDE = 0.5  # grey levels of 0..255: the smallest change an 8-bit image can hold

MapKey = tuple[str, int]  # (method, block); CAM is CAM_KEY


def image_seed(seed: int, image_id: str, purpose: str) -> int:
    """A seed per image and purpose, so a score never depends on the shard or batch the image fell in."""
    return zlib.crc32(f"{seed}:{purpose}:{image_id}".encode())


def random_maps(image_ids: Sequence[str], grid: tuple[int, int], seed: int, block: int) -> torch.Tensor:
    """The baseline: a uniform random map per image on the block's grid, seeded by image."""
    maps = [
        torch.rand(grid, generator=torch.Generator().manual_seed(image_seed(seed, i, f"random-b{block}")))
        for i in image_ids
    ]
    return torch.stack(maps)


@dataclass(frozen=True)
class ScoreSettings:
    metrics: tuple[str, ...]
    steps: int = 16
    seed: int = 0
    forward_batch: int | None = None  # perturbed inputs per no-grad forward; None: 16 on a CPU, 64 on a GPU
    random_baseline: bool = True  # also score a seeded random map per block (method "random")


class Rows:
    """Collects scores column-wise: one (method, block, metric, stage) and a value per image at a time."""

    def __init__(self, image_ids: Sequence[str]) -> None:
        self.image_ids = list(image_ids)
        self.parts: list[pd.DataFrame] = []

    def add(self, key: MapKey, metric: str, values: torch.Tensor | np.ndarray, stage: int | None = None) -> None:
        array = values.detach().double().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
        self.parts.append(
            pd.DataFrame(
                {
                    "image_id": self.image_ids,
                    "method": key[0],
                    "block": key[1],
                    "metric": metric,
                    "stage": stage,
                    "value": array.astype(np.float64),
                }
            )
        )

    def frame(self) -> pd.DataFrame:
        return pd.concat(self.parts, ignore_index=True) if self.parts else pd.DataFrame()


def explanation_maps(result: Explanation) -> dict[MapKey, torch.Tensor]:
    """Each map of the first explained target, (B, h, w), keyed by (method, block)."""
    maps: dict[MapKey, torch.Tensor] = {CAM_KEY: result.cam[:, 0]}
    for method, per_block in result.maps.items():
        for block, values in per_block.items():
            maps[(method, block)] = values[:, 0]
    return maps


class BatchScorer:
    """The model (for deletion/insertion), its Explainer and the randomised cascade, on one device.

    ``target`` is the class the scored maps explain (the run's first target unless asked), ``activation``
    how the run read its logits as probabilities; runs that explain each
    image's predicted class of a multi-class model are not supported here (the class would differ
    per image).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        settings: ScoreSettings,
        *,
        methods: Sequence[str],
        precision: str = "fp32",
        target: int = 0,
        activation: str | None = None,
    ) -> None:
        self.settings = settings
        self.device = next(model.parameters()).device
        # the perturbed inputs' forwards: a BatchNorm-folded, frozen copy in channels_last (faster on
        # CPU and GPU alike; benchmarks/evaluate.py); the caller's model is left as it was
        self.model = fused_densenet(model).to(memory_format=torch.channels_last)
        self.target, self.activation = target, activation
        explain = dict(methods=tuple(methods), targets=(target,) if _classes(model) > 1 else None, precision=precision)
        needs_maps = {"randomization", "stability"} & set(settings.metrics)
        self.explainer = Explainer(model, **explain) if needs_maps else None
        self.stages = (
            [Explainer(m, **explain) for m in cascade(model, seed=settings.seed)]
            if "randomization" in settings.metrics
            else []
        )

    def score(
        self,
        pixels: torch.Tensor,
        stored: Mapping[MapKey, torch.Tensor],
        image_ids: Sequence[str],
        *,
        geometries: Sequence[Geometry] | None = None,
        boxes: Mapping[str, np.ndarray] | None = None,
    ) -> pd.DataFrame:
        """Long-form scores of a batch: ``pixels`` (B, 3, S, S) uint8, ``stored`` the run's maps (B, h, w)."""
        rows = Rows(image_ids)
        size = pixels.shape[-1]
        pixels = pixels.to(self.device)
        baselines = {
            (RANDOM_METHOD, block): random_maps(image_ids, grid, self.settings.seed, block)
            for block, grid in block_grid(size).items()
            if self.settings.random_baseline
        }
        scored = {**stored, **baselines}
        metrics = self.settings.metrics
        if "deletion" in metrics or "insertion" in metrics:
            self._deletion_insertion(rows, pixels, scored)
        if "localization" in metrics:  # a batch without boxes still gets its rows: NaN, not missing
            self._localization(rows, scored, image_ids, geometries, boxes or {})
        if self.explainer is not None:
            original = explanation_maps(self.explainer(pixels))
            if "randomization" in metrics:
                self._randomization(rows, pixels, original)
            if "stability" in metrics:
                self._stability(rows, pixels, image_ids, original)
        return rows.frame()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.contiguous(memory_format=torch.channels_last))

    def _deletion_insertion(self, rows: Rows, pixels: torch.Tensor, maps: Mapping[MapKey, torch.Tensor]) -> None:
        targets = torch.full((pixels.shape[0],), self.target, dtype=torch.long, device=self.device)
        # CPU: small batches stay in cache (faster per image); GPU: large ones fill the device
        batch = self.settings.forward_batch or (64 if self.device.type == "cuda" else 16)
        ends = endpoints(self._forward, pixels.float() / 255.0, targets, batch, self.activation)  # every map's
        for key, values in maps.items():
            result = deletion_insertion(
                self._forward,
                pixels,
                values.to(self.device),
                targets,
                steps=self.settings.steps,
                batch_size=batch,
                ends=ends,
                activation=self.activation,
            )
            if "deletion" in self.settings.metrics:
                rows.add(key, "deletion_auc", result.deletion_auc)
            if "insertion" in self.settings.metrics:
                rows.add(key, "insertion_auc", result.insertion_auc)

    def _localization(
        self,
        rows: Rows,
        maps: Mapping[MapKey, torch.Tensor],
        image_ids: Sequence[str],
        geometries: Sequence[Geometry] | None,
        boxes: Mapping[str, np.ndarray],
    ) -> None:
        """Images without a box get NaN (they are not lesion images to localise)."""
        if geometries is None:
            raise ValueError("localization needs each image's geometry (its original size)")
        masks = [
            box_mask(boxes[i], g.orig_height, g.orig_width) if i in boxes else None
            for i, g in zip(image_ids, geometries)
        ]
        for key, values in maps.items():
            scores = np.full((3, len(image_ids)), np.nan)
            for n, (image_id, geometry, mask) in enumerate(zip(image_ids, geometries, masks)):
                if mask is None:
                    continue
                heatmap = geometry.to_original(values[n].detach().float().cpu().numpy())
                scores[0, n] = float(is_hit(peak(heatmap), boxes[image_id]))
                scores[1, n] = relevance_mass(heatmap, mask)
                scores[2, n] = otsu_iou(heatmap, mask)
            for name, column in zip(METRICS["localization"], scores):
                rows.add(key, name, column)

    def _randomization(self, rows: Rows, pixels: torch.Tensor, original: Mapping[MapKey, torch.Tensor]) -> None:
        """Per stage, how much the absolute maps of the randomised model resemble the trained model's."""
        size = tuple(pixels.shape[-2:])
        for stage, explainer in enumerate(self.stages, start=1):
            randomised = explanation_maps(explainer(pixels))
            for key, trained in original.items():
                a, b = trained.abs(), randomised[key].abs()
                # a randomised map left flat (no structure at all) shares nothing with a structured one
                rows.add(key, "randomization_spearman", spearman(a, b, flat_value=0.0), stage)
                rows.add(key, "randomization_ssim", ssim(a, b, size, flat_value=0.0), stage)

    def _stability(
        self, rows: Rows, pixels: torch.Tensor, image_ids: Sequence[str], original: Mapping[MapKey, torch.Tensor]
    ) -> None:
        """Maps of the image plus ±½ grey-level uniform noise (one value per pixel, all channels), seeded by image."""
        r_sum: dict[MapKey, torch.Tensor] = {}
        change: dict[MapKey, torch.Tensor] = {}
        _, _, height, width = pixels.shape
        for sample in range(NOISE_SAMPLES):
            noise = torch.stack(
                [
                    torch.rand(
                        (1, height, width),
                        generator=torch.Generator().manual_seed(image_seed(self.settings.seed, i, f"noise-{sample}")),
                    )
                    for i in image_ids
                ]
            ).to(self.device)
            noisy = pixels.float() + (noise * 2 - 1) * NOISE_AMPLITUDE
            perturbed = explanation_maps(self.explainer(normalise01(noisy / 255.0)))  # type: ignore[misc]
            for key, trained in original.items():
                r = pearson(trained, perturbed[key])
                c = max_change(trained, perturbed[key])
                r_sum[key] = r_sum.get(key, 0) + r
                change[key] = torch.maximum(change[key], c) if key in change else c
        for key in original:
            rows.add(key, "stability_r", r_sum[key] / NOISE_SAMPLES)
            rows.add(key, "stability_max_change", change[key])


def _classes(model: torch.nn.Module) -> int:
    return int(model.classifier.out_features)  # type: ignore[union-attr]


__all__ = [
    "METRICS",
    "NOISE_SAMPLES",
    "RANDOMIZATION_STAGES",
    "RANDOM_METHOD",
    "BatchScorer",
    "ScoreSettings",
    "image_seed",
    "random_maps",
    "validate_metrics",
]
