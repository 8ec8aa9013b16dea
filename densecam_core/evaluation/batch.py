"""What a metric family's scorer gets: one batch of images, the maps to score, and the scorer's model, Explainer
and cascade; and ``Rows``, where it adds its scores (long form: image, method, block, metric, stage, value)."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from densecam_core.cam.explainer import Explanation
from densecam_core.data.geometry import Geometry
from densecam_core.vocabulary import MapKey


def image_seed(seed: int, image_id: str, purpose: str) -> int:
    """A seed per image and purpose, so a score never depends on the shard or batch the image fell in."""
    return zlib.crc32(f"{seed}:{purpose}:{image_id}".encode())


def explanation_maps(result: Explanation) -> dict[MapKey, torch.Tensor]:
    """Each map of the first explained target, (B, h, w), keyed by its ``MapKey``."""
    maps: dict[MapKey, torch.Tensor] = {MapKey("cam"): result.cam[:, 0]}
    for method, per_block in result.maps.items():
        for block, values in per_block.items():
            maps[MapKey(method, block)] = values[:, 0]
    return maps


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
                    "method": key.method,
                    "block": key.block,
                    "metric": metric,
                    "stage": stage,
                    "value": array.astype(np.float64),
                }
            )
        )

    def frame(self) -> pd.DataFrame:
        return pd.concat(self.parts, ignore_index=True) if self.parts else pd.DataFrame()


@dataclass
class Batch:
    """One batch as every family sees it. ``scorer`` is the ``BatchScorer`` (its model's forward, device,
    settings, target, activation, Explainer and cascade); ``maps`` the maps to score (the run's and the random
    baselines); ``cache`` what families of one batch share (deletion and insertion share their curves)."""

    scorer: Any
    pixels: torch.Tensor  # (B, 3, S, S) uint8 on the scorer's device
    maps: Mapping[MapKey, torch.Tensor]
    image_ids: Sequence[str]
    geometries: Sequence[Geometry] | None
    boxes: Mapping[str, np.ndarray]
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def original(self) -> dict[MapKey, torch.Tensor]:
        """Fresh maps of the trained model for this batch (computed once)."""
        if "original" not in self.cache:
            self.cache["original"] = explanation_maps(self.scorer.explainer(self.pixels))
        return self.cache["original"]
