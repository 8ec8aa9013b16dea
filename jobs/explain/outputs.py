"""What explaining a shard fills: the store's arrays for its rows (NaN where there is no value) and the per-image values of its index."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from densecam_core.cam.explainer import Explanation
from densecam_core.data.preprocess import ModelInput
from densecam_core.store import layout
from densecam_core.store.inputs.identity import SourceIdentity


def array_dtype(name: str) -> type:
    return np.int32 if name == layout.TARGETS_ARRAY else np.float32


def missing_value(name: str) -> np.generic:
    """The value of rows without one: NaN in maps and logits, class id -1 in ``targets``."""
    return array_dtype(name)(-1 if name == layout.TARGETS_ARRAY else np.nan)


def store_arrays(result: Explanation) -> dict[str, torch.Tensor]:
    """An Explanation's tensors under the names of the store's arrays."""
    named = {"logits": result.logits, "cam": result.cam, layout.TARGETS_ARRAY: result.targets}
    for method, per_block in result.maps.items():
        for block, values in per_block.items():
            named[layout.array_name(method, block)] = values
    return named


@dataclass
class Filled:
    """What explaining a shard's images produced besides the maps: per-image values, timings, new inputs."""

    count: int
    targets: int = 1  # classes explained per image: ``probs`` has one column each
    heights: np.ndarray = field(init=False)
    widths: np.ndarray = field(init=False)
    logit: np.ndarray = field(init=False)
    prob: np.ndarray = field(init=False)
    probs: np.ndarray = field(init=False)
    errors: list[str | None] = field(init=False)
    identities: list[SourceIdentity | None] = field(default_factory=list)  # each file's, before decoding
    decoded: list[tuple[SourceIdentity, ModelInput]] = field(default_factory=list)
    decoded_at: list[int] = field(default_factory=list)  # each decoded input's position in the shard
    compute: float = 0.0
    device_wait: float = 0.0
    from_cache: int = 0
    cache_damaged: int = 0

    def __post_init__(self) -> None:
        self.heights = np.zeros(self.count, dtype=np.int64)
        self.widths = np.zeros(self.count, dtype=np.int64)
        self.logit = np.full(self.count, np.nan, dtype=np.float32)
        self.prob = np.full(self.count, np.nan, dtype=np.float32)
        self.probs = np.full((self.count, self.targets), np.nan, dtype=np.float32)
        self.errors = [None] * self.count
