"""Otsu's split of a map: the threshold that maximises the between-class variance of its values."""

from __future__ import annotations

import numpy as np


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold (maximum between-class variance) over a ``bins``-bin histogram of ``values``.

    Returns the upper edge of the last bin of the lower class: values above it form the upper class.
    """
    hist, edges = np.histogram(values, bins=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(hist)[:-1].astype(np.float64)
    weight_high = np.cumsum(hist[::-1])[::-1][1:].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_low = np.cumsum(hist * centers)[:-1] / weight_low
        mean_high = (np.cumsum((hist * centers)[::-1]) / np.cumsum(hist[::-1]))[::-1][1:]
        between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(centers[int(np.nanargmax(between))])


def otsu_mask(heatmap: np.ndarray) -> np.ndarray:
    """The map's upper Otsu class: negative values set to 0, min-max scaled to [0, 1], split at Otsu's level
    (256 bins), as CheXlocalize does with its non-negative maps; all False for a map without structure."""
    values = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float64), nan=0.0), 0.0, None)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=bool)
    scaled = (values - low) / (high - low)
    return scaled > otsu_threshold(scaled)
