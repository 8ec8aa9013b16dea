"""Atlases: per group (label × body part) and map, the mean normalised map and the 2-D histogram of peak
locations on the map's grid — what the model looks at, per group. Accumulated chunk by chunk. Torch-free."""

from __future__ import annotations

import numpy as np
import pandas as pd

from densecam_core.analysis.spatial import distributions


class AtlasAccumulator:
    """Sums of distributions and peak counts per group, over chunks of maps."""

    def __init__(self, groups: int, shape: tuple[int, ...]) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.sums = np.zeros((groups, *self.shape))
        self.peaks = np.zeros((groups, *self.shape))
        self.counts = np.zeros(groups, dtype=np.int64)

    def add(self, maps: np.ndarray, groups: np.ndarray) -> None:
        p = distributions(maps)
        valid = ~np.isnan(p[:, 0, 0])
        p, groups = p[valid], groups[valid]
        np.add.at(self.sums, groups, p)
        flat = p.reshape(len(p), -1).argmax(axis=1)
        np.add.at(self.peaks, (groups, flat // self.shape[1], flat % self.shape[1]), 1.0)
        np.add.at(self.counts, groups, 1)

    def means(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sums / self.counts[:, None, None]

    def table(self, names: list[str]) -> pd.DataFrame:
        return pd.DataFrame({"group": names, "images": self.counts})
