"""Scores for a batch of images and their maps: every metric family of ``evaluation.families``, batched on one
device.

``BatchScorer.score`` takes a batch's uint8 inputs and its stored maps and returns long-form rows
(``image_id, method, block, metric, stage, value``), each family adding its own. It knows nothing of stores
or Ray: the evaluation worker reads the inputs and maps and writes the rows; tests call it directly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from densecam_core.cam.explainer import Explainer
from densecam_core.data.geometry import Geometry
from densecam_core.evaluation.batch import Batch, MapKey, Rows, explanation_maps, image_seed
from densecam_core.evaluation.families import FAMILIES, validate_families
from densecam_core.evaluation.randomisation import RANDOMISATION_STAGES, cascade
from densecam_core.evaluation.stability import NOISE_AMPLITUDE, NOISE_SAMPLES
from densecam_core.model.fusion import fused_densenet
from densecam_core.vocabulary import block_grid

RANDOM_METHOD = "random"


def random_maps(image_ids: Sequence[str], grid: tuple[int, int], seed: int, block: int) -> torch.Tensor:
    """The baseline: a uniform random map per image on the block's grid, seeded by image."""
    maps = [
        torch.rand(grid, generator=torch.Generator().manual_seed(image_seed(seed, i, f"random-b{block}")))
        for i in image_ids
    ]
    return torch.stack(maps)


@dataclass(frozen=True)
class ScoreSettings:
    metrics: tuple[str, ...]  # metric families (``evaluation.families.FAMILIES``)
    steps: int = 16
    seed: int = 0
    forward_batch: int | None = None  # perturbed inputs per no-grad forward; None: 16 on a CPU, 64 on a GPU
    random_baseline: bool = True  # also score a seeded random map per block (method "random")


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
        self.families = [FAMILIES[name] for name in validate_families(settings.metrics)]
        needs = set().union(*(family.needs for family in self.families))
        self.explainer = Explainer(model, **explain) if needs & {"maps", "cascade"} else None
        self.stages = (
            [Explainer(m, **explain) for m in cascade(model, seed=settings.seed)] if "cascade" in needs else []
        )

    def score(
        self, pixels: torch.Tensor, stored: Mapping[MapKey, torch.Tensor], image_ids: Sequence[str], **options: Any
    ) -> pd.DataFrame:
        """Every family's long-form scores of a batch in one frame (``options``: those of ``score_families``)."""
        frames = self.score_families(pixels, stored, image_ids, **options)
        parts = [f for f in frames.values() if not f.empty]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    def score_families(
        self,
        pixels: torch.Tensor,
        stored: Mapping[MapKey, torch.Tensor],
        image_ids: Sequence[str],
        *,
        geometries: Sequence[Geometry] | None = None,
        boxes: Mapping[str, np.ndarray] | None = None,
        families: Sequence[str] | None = None,
    ) -> dict[str, pd.DataFrame]:
        """Each family's long-form scores of a batch: ``pixels`` (B, 3, S, S) uint8, ``stored`` the run's maps
        (B, h, w); ``families`` a subset of the scorer's (default all). Each is stored on its own, so a family can
        be added to a scored run."""
        size = pixels.shape[-1]
        pixels = pixels.to(self.device)
        baselines = {
            MapKey(RANDOM_METHOD, block): random_maps(image_ids, grid, self.settings.seed, block)
            for block, grid in block_grid(size).items()
            if self.settings.random_baseline
        }
        batch = Batch(self, pixels, {**stored, **baselines}, image_ids, geometries, boxes or {})
        frames = {}
        for family in self.families:
            if families is None or family.name in families:
                rows = Rows(image_ids)
                family.score(batch, rows)
                frames[family.name] = rows.frame()
        return frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's no-grad forward of perturbed inputs (the families' faithfulness curves)."""
        return self.model(x.contiguous(memory_format=torch.channels_last))


def _classes(model: torch.nn.Module) -> int:
    return int(model.classifier.out_features)  # type: ignore[union-attr]


__all__ = [
    "NOISE_AMPLITUDE",
    "NOISE_SAMPLES",
    "RANDOMISATION_STAGES",
    "RANDOM_METHOD",
    "BatchScorer",
    "MapKey",
    "Rows",
    "ScoreSettings",
    "explanation_maps",
    "image_seed",
    "random_maps",
    "validate_families",
]
