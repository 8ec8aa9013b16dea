"""What changed after a model update: per image, probability change and map agreement."""

from __future__ import annotations

import numpy as np
import pandas as pd

from densecam_core.store.run import Run
from densecam_core.store.targets import with_target_probability


def top_fraction_mask(maps: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Boolean mask of each map's top ``fraction`` of pixels, maps shaped (n, ...)."""
    flat = maps.reshape(maps.shape[0], -1)
    keep = max(1, round(fraction * flat.shape[1]))
    order = np.argsort(-flat, axis=1, kind="stable")[:, :keep]
    mask = np.zeros_like(flat, dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask


def pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r per row; NaN where a map is constant."""
    a = a.reshape(a.shape[0], -1).astype(np.float64)
    b = b.reshape(b.shape[0], -1).astype(np.float64)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (a * b).sum(axis=1) / denom, np.nan)


def compare_runs(
    run_a: Run,
    run_b: Run,
    method: str = "gradcam",
    block: int | None = 4,
    *,
    target: int | str = 0,
    top_fraction: float = 0.1,
) -> pd.DataFrame:
    """Per image ok in both runs: prob_a, prob_b, prob_change, map correlation and top-10 % IoU.

    ``target``: a class name, or a position along the runs' target axes (the probabilities are that
    target's, from the index's ``probs`` where a run explains several classes).

    ``flat_a`` / ``flat_b`` mark constant maps (typically all zero after ReLU: no positive
    evidence); their correlation is undefined (NaN).
    """
    if run_a.settings.size != run_b.settings.size:
        raise ValueError("runs explained at different input sizes cannot be compared map to map")
    a = _ok_with_target_prob(run_a, target)
    b = _ok_with_target_prob(run_b, target)[["image_id", "row", "prob"]]
    both = a.merge(b, on="image_id", suffixes=("_a", "_b"))
    if both.empty:
        raise ValueError(f"runs {run_a.run_id} and {run_b.run_id} share no successfully explained image")
    maps_a = run_a.maps(method, block, rows=both["row_a"].to_numpy(), target=target)
    maps_b = run_b.maps(method, block, rows=both["row_b"].to_numpy(), target=target)
    mask_a, mask_b = top_fraction_mask(maps_a, top_fraction), top_fraction_mask(maps_b, top_fraction)
    iou = (mask_a & mask_b).sum(axis=1) / np.maximum((mask_a | mask_b).sum(axis=1), 1)
    keep = [c for c in ("image_id", "split", "body_part", "study_id", "label") if c in both]
    out = both[keep].copy()
    out["prob_a"], out["prob_b"] = both["prob_a"].to_numpy(), both["prob_b"].to_numpy()
    out["prob_change"] = out["prob_b"] - out["prob_a"]
    out["map_correlation"] = pearson_rows(maps_a, maps_b)
    out["top_iou"] = iou
    out["flat_a"] = np.ptp(maps_a.reshape(len(maps_a), -1), axis=1) == 0
    out["flat_b"] = np.ptp(maps_b.reshape(len(maps_b), -1), axis=1) == 0
    return out.reset_index(drop=True)


def _ok_with_target_prob(run: Run, target: int | str) -> pd.DataFrame:
    """The run's ok rows, ``prob`` that of ``target``."""
    return with_target_probability(run.index[run.index["status"] == "ok"], run.record, target)
