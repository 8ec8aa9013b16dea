"""Per-map localisation scores the evaluation job computes against lesion boxes: relevance mass and Otsu IoU
(docs/METRICS.md); the pointing game's peak and hit test are ``analysis.pointing``'s.
"""

from __future__ import annotations

import numpy as np

from densecam_core.analysis.otsu import otsu_mask


def relevance_mass(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """The share of the map's positive mass inside ``mask`` (Arras et al. 2022); NaN without positive mass."""
    positive = np.clip(np.nan_to_num(heatmap, nan=0.0), 0.0, None)
    total = float(positive.sum())
    return float(positive[mask].sum()) / total if total > 0 else float("nan")


def otsu_iou(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """IoU of the Otsu-segmented map (``analysis.otsu.otsu_mask``) with ``mask``; NaN for a map without positive
    structure."""
    values = np.clip(np.nan_to_num(heatmap.astype(np.float64), nan=0.0), 0.0, None)
    if float(values.max()) <= float(values.min()):
        return float("nan")
    segmented = otsu_mask(values)
    union = np.logical_or(segmented, mask).sum()
    return float(np.logical_and(segmented, mask).sum() / union) if union else float("nan")
