"""Per-map localisation scores the evaluation job computes against lesion boxes: relevance mass and Otsu IoU
(docs/METRICS.md); the pointing game's peak and hit test are ``analysis.pointing``'s.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from densecam_core.analysis.otsu import otsu_mask
from densecam_core.evaluation.families.localisation import FAMILY


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


def score(batch: Any, rows: Any) -> None:
    """Pointing game, relevance mass and Otsu IoU of every map on each image's own grid; images without a box
    get NaN (they are not lesion images to localise), so a batch without boxes still has its rows."""
    from densecam_core.analysis.pointing import is_hit, peak
    from densecam_core.analysis.regions import box_mask

    if batch.geometries is None:
        raise ValueError("localisation needs each image's geometry (its original size)")
    boxes = batch.boxes
    masks = [
        box_mask(boxes[i], g.orig_height, g.orig_width) if i in boxes else None
        for i, g in zip(batch.image_ids, batch.geometries)
    ]
    for key, values in batch.maps.items():
        scores = np.full((3, len(batch.image_ids)), np.nan)
        for n, (image_id, geometry, mask) in enumerate(zip(batch.image_ids, batch.geometries, masks)):
            if mask is None:
                continue
            heatmap = geometry.to_original(values[n].detach().float().cpu().numpy())
            scores[0, n] = float(is_hit(peak(heatmap), boxes[image_id]))
            scores[1, n] = relevance_mass(heatmap, mask)
            scores[2, n] = otsu_iou(heatmap, mask)
        for name, column in zip(FAMILY.metrics, scores):
            rows.add(key, name, column)
