"""From one map's per-image tallies to its row of ``metrics.csv``: thresholds chosen on the calibration split,
scores on the reported images, the oracle's gap, intervals by resampling studies, and the same per lesion size."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from densecam_core.analysis.wsol import (
    DELTAS,
    best_level,
    box_accuracy,
    interval,
    mask_ious,
    pixel_average_precision,
    replicate_weights,
)

SIZE_BANDS = ((0.0, 0.02, "small (<2%)"), (0.02, 0.08, "medium (2-8%)"), (0.08, 1.01, "large (>=8%)"))
"""Lesion size bands: the share of the image the true region covers."""
INTERVAL_COLUMNS = ("maxboxacc_v2", "box_acc_50", "pxap", "miou", "hit_rate")


@dataclass
class MapScores:
    """Per image (rows of the scored table): best box IoU per threshold (every component, the largest), level
    histograms inside and outside the true region, whether the peak hit it, Otsu's IoU, the region's share of
    the image, and whether the true region came from a mask file (else the boxes)."""

    iou_all: np.ndarray
    iou_largest: np.ndarray
    inside: np.ndarray
    outside: np.ndarray
    hit: np.ndarray
    otsu_iou: np.ndarray
    box_fraction: np.ndarray
    from_mask: np.ndarray

    @classmethod
    def empty(cls, n: int, steps: int, *, largest: bool = True) -> MapScores:
        """Room for ``n`` images; the largest component's IoUs only when the box rule uses them (``(n, 0)``
        otherwise: the tallies are most of the memory a localisation of many images takes)."""
        return cls(
            np.zeros((n, steps), np.float32),
            np.zeros((n, steps if largest else 0), np.float32),
            np.zeros((n, steps + 1), np.int32),
            np.zeros((n, steps + 1), np.int32),
            np.zeros(n, bool),
            np.zeros(n, np.float64),
            np.zeros(n, np.float64),
            np.zeros(n, bool),
        )

    @classmethod
    def join(cls, parts: list[MapScores]) -> MapScores:
        """Parts of one map's images, in order, as one."""
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls)))


def _choose(scores: MapScores, calibrating: np.ndarray, request: Any) -> tuple[np.ndarray, int, int | None]:
    """The box rule's IoUs, and the box and mask levels chosen on the calibration images only."""
    rule = scores.iou_all if request.box_rule == "all" else scores.iou_largest
    level = best_level(box_accuracy(rule[calibrating], 0.5))
    mask_level = None
    if request.mask_rule == "tau":
        mask_level = best_level(mask_ious(scores.inside[calibrating], scores.outside[calibrating]).mean(axis=0))
    return rule, level, mask_level


def _image_mask_iou(scores: MapScores, mask_level: int | None) -> np.ndarray:
    if mask_level is None:
        return scores.otsu_iou
    return mask_ious(scores.inside, scores.outside)[:, mask_level]


def metrics_rows(
    key: Any, rows: pd.DataFrame, scores: MapScores, calibrating: np.ndarray, request: Any
) -> tuple[dict[str, Any], pd.DataFrame]:
    """The map's row of ``metrics.csv`` and its per-image table."""
    rule, level, mask_level = _choose(scores, calibrating, request)
    reported = ~calibrating
    steps = request.steps
    image_iou = _image_mask_iou(scores, mask_level)
    best = {d: box_accuracy(scores.iou_all[reported], d).max() for d in DELTAS}
    box50_curve = box_accuracy(rule[reported], 0.5)
    row: dict[str, Any] = {
        "method": key.method,
        "block": key.block,
        "target": key.target_name,
        "tau": level / steps,
        "tau_mask": float("nan") if mask_level is None else mask_level / steps,
        "box_acc_50": float(box50_curve[level]),
        **{f"maxboxacc_{round(d * 100)}": float(v) for d, v in best.items()},
        "maxboxacc_v2": float(np.mean(list(best.values()))),
        "pxap": float(pixel_average_precision(scores.inside[reported].sum(0), scores.outside[reported].sum(0))),
        "miou": float(image_iou[reported].mean()),
        "hit_rate": float(scores.hit[reported].mean()),
        "oracle_box_acc_50": float(box50_curve.max()),
        "oracle_gap": float(box50_curve.max() - box50_curve[level]),
        "n_images": int(reported.sum()),
        "n_calibration": int(calibrating.sum()),
        "truth": _truth_source(scores.from_mask),
        "level": level,
        "mask_level": -1 if mask_level is None else mask_level,
    }
    studies = rows.loc[reported, "study_id"].astype(str).to_numpy()
    picked = _Picked(scores, rule, image_iou, reported, level)
    row |= bootstrap_intervals(picked, studies, request.bootstrap, request.seed)
    per_image = pd.DataFrame(
        {
            "image_id": rows["image_id"].astype(str),
            "method": key.method,
            "block": key.block,
            "target": key.target_name,
            "split": np.where(calibrating, "calibration", "reported"),
            "box_fraction": scores.box_fraction,
            "size_band": size_bands(scores.box_fraction),
            "box_iou": rule[:, level],
            "mask_iou": image_iou,
            "hit": scores.hit,
        }
    )
    return row, per_image


def _truth_source(from_mask: np.ndarray) -> str:
    if from_mask.all():
        return "masks"
    return "boxes" if not from_mask.any() else "masks where given, else boxes"


@dataclass
class _Picked:
    """The reported images' tallies that the intervals resample."""

    scores: MapScores
    rule: np.ndarray
    image_iou: np.ndarray
    reported: np.ndarray
    level: int


def bootstrap_intervals(picked: _Picked, studies: np.ndarray, replicates: int, seed: int) -> dict[str, float]:
    """95 % percentile intervals of the reported scores over ``replicates`` resamplings of the studies."""
    if replicates == 0:
        return {f"{c}_{end}": float("nan") for c in INTERVAL_COLUMNS for end in ("low", "high")}
    codes, names = pd.factorize(studies)
    weights = replicate_weights(len(names), replicates, seed)
    r = picked.reported

    def per_study(values: np.ndarray) -> np.ndarray:
        out = np.zeros((len(names), *values.shape[1:]), dtype=np.float32)
        np.add.at(out, codes, values.astype(np.float32))
        return out

    count = weights @ per_study(np.ones(int(r.sum())))
    best = [(weights @ per_study(picked.scores.iou_all[r] >= d) / count[:, None]).max(axis=1) for d in DELTAS]
    samples = {
        "maxboxacc_v2": np.mean(best, axis=0),
        "box_acc_50": weights @ per_study(picked.rule[r, picked.level] >= 0.5) / count,
        "pxap": pixel_average_precision(
            weights @ per_study(picked.scores.inside[r]), weights @ per_study(picked.scores.outside[r])
        ),
        "miou": weights @ per_study(picked.image_iou[r]) / count,
        "hit_rate": weights @ per_study(picked.scores.hit[r]) / count,
    }
    out = {}
    for name, values in samples.items():
        out[f"{name}_low"], out[f"{name}_high"] = interval(values)
    return out


def size_bands(fractions: np.ndarray) -> np.ndarray:
    """Each image's lesion size band (``SIZE_BANDS``)."""
    bands = np.empty(len(fractions), dtype=object)
    for low, high, name in SIZE_BANDS:
        bands[(fractions >= low) & (fractions < high)] = name
    return bands


def size_band_rows(key: Any, per_image: pd.DataFrame) -> pd.DataFrame:
    """Box accuracy at IoU 0.5 (calibrated threshold), mIoU and hit rate of the reported images per size band."""
    reported = per_image[per_image["split"] == "reported"]
    table = (
        reported.groupby("size_band", sort=False)
        .agg(
            n_images=("hit", "size"),
            box_acc_50=("box_iou", lambda v: float((v >= 0.5).mean())),
            miou=("mask_iou", "mean"),
            hit_rate=("hit", "mean"),
        )
        .reset_index()
    )
    return table.assign(method=key.method, block=key.block, target=key.target_name)[
        ["method", "block", "target", "size_band", "n_images", "box_acc_50", "miou", "hit_rate"]
    ]
