"""The weakly supervised localisation metrics of Choe et al. (CVPR 2020) and CheXlocalize (Saporta et al. 2022),
from per-image tallies over thresholds (``analysis.regions``), with intervals by resampling studies.

* BoxAcc(k, delta): the share of images where some box cut at threshold k has IoU >= delta with a true box;
  MaxBoxAcc(delta) = max over k; MaxBoxAccV2 = the mean of MaxBoxAcc over delta in {0.3, 0.5, 0.7}, boxes of
  every component.
* PxAP: pixel precision and recall over every pixel of every image at each threshold, precision summed over the
  recall gained from the highest threshold down (recall 0 above it): sum_k P_k (R_k - R_{k+1}).
* mIoU: the mean over images of the IoU of the mask with the true mask; hit rate: the share of images whose
  map's peak lies in a true box.
"""

from __future__ import annotations

import numpy as np

DELTAS = (0.3, 0.5, 0.7)


def box_accuracy(ious: np.ndarray, delta: float) -> np.ndarray:
    """BoxAcc at every threshold, ``(steps,)``, from each image's best IoU per threshold ``(n, steps)``."""
    return (np.asarray(ious) >= delta).mean(axis=0)


def max_box_accuracy(ious: np.ndarray, deltas: tuple[float, ...] = DELTAS) -> dict[float, float]:
    """MaxBoxAcc at each delta."""
    return {delta: float(box_accuracy(ious, delta).max()) for delta in deltas}


def true_positives(inside: np.ndarray, outside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels kept at each threshold inside and outside the true mask, from level histograms ``(..., steps + 1)``
    (index 0: never kept): two ``(..., steps)`` arrays."""
    tp = np.cumsum(inside[..., :0:-1], axis=-1)[..., ::-1]
    fp = np.cumsum(outside[..., :0:-1], axis=-1)[..., ::-1]
    return tp, fp


def pixel_average_precision(inside: np.ndarray, outside: np.ndarray) -> np.ndarray:
    """PxAP from level histograms summed over images ``(..., steps + 1)``, one value per leading index; NaN
    without true pixels."""
    inside, outside = np.asarray(inside, dtype=np.float64), np.asarray(outside, dtype=np.float64)
    truth = inside.sum(axis=-1, keepdims=True)
    tp, fp = true_positives(inside, outside)
    kept = tp + fp
    precision = np.divide(tp, kept, out=np.ones_like(tp), where=kept > 0)
    recall = np.divide(tp, truth, out=np.zeros_like(tp), where=truth > 0)
    gained = recall - np.concatenate([recall[..., 1:], np.zeros_like(recall[..., :1])], axis=-1)
    return np.where(truth[..., 0] > 0, (precision * gained).sum(axis=-1), np.nan)


def mask_ious(inside: np.ndarray, outside: np.ndarray) -> np.ndarray:
    """Each image's IoU of the mask at every threshold with its true mask, ``(n, steps)``, from its level
    histograms ``(n, steps + 1)``: kept true pixels over (true pixels + kept other pixels)."""
    inside, outside = np.asarray(inside, dtype=np.float64), np.asarray(outside, dtype=np.float64)
    tp, fp = true_positives(inside, outside)
    union = inside.sum(axis=-1, keepdims=True) + fp
    return np.divide(tp, union, out=np.zeros_like(tp), where=union > 0)


def best_level(curve: np.ndarray) -> int:
    """The threshold at the middle of the first run of maxima of a score curve: a plateau's centre, not its
    edge, where a threshold chosen on other images is safest."""
    curve = np.asarray(curve, dtype=np.float64)
    top = np.flatnonzero(curve >= curve.max() - 1e-12)
    run_end = top[0]
    while run_end + 1 < len(curve) and run_end + 1 in top:
        run_end += 1
    return int((top[0] + run_end) // 2)


def replicate_weights(studies: int, replicates: int, seed: int) -> np.ndarray:
    """How often each study is drawn in each bootstrap replicate, ``(replicates, studies)`` float32 (studies
    drawn with replacement, as many as there are)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(studies, np.full(studies, 1.0 / studies), size=replicates).astype(np.float32)


def per_study(values: np.ndarray, study_codes: np.ndarray, studies: int) -> np.ndarray:
    """Sums of per-image values ``(n, ...)`` per study, ``(studies, ...)``."""
    values = np.asarray(values, dtype=np.float64)
    out = np.zeros((studies, *values.shape[1:]), dtype=np.float64)
    np.add.at(out, study_codes, values)
    return out


def interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of bootstrap samples (NaN samples left out)."""
    finite = np.asarray(samples, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)
