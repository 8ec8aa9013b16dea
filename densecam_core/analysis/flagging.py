"""Which clusters a map's audit flags, by a stated rule against the class's own spread (or a control run's).

A cluster is flagged when its images' mean corner mass lies above the median + k · MAD (scaled to σ, 1.4826)
of the per-image corner masses of the reference (the same label group of this run, or of the control run),
it holds at least ``min_images`` and ``min_fraction`` of its group, and the map's grid can tell a corner from
the image's body. Robust statistics: the flagged cluster itself barely moves the median and MAD it is judged
against, and no fixed threshold is tuned to one dataset. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class FlagRule:
    """The rule's parameters, recorded with every audit."""

    k: float = 3.0
    min_images: int = 5
    min_fraction: float = 0.02
    score: str = "corner_mass"

    def describe(self, reference: str) -> str:
        return (
            f"mean {self.score} above the median + {self.k:g}·MAD of {reference}, in a cluster of at least "
            f"{self.min_images} images and {self.min_fraction:.0%} of its group"
        )


def robust_threshold(values: np.ndarray, k: float) -> float:
    """median + k · 1.4826 · MAD of the finite ``values`` (NaN when there are none)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan")
    median = float(np.median(finite))
    mad = float(np.median(np.abs(finite - median))) * MAD_TO_SIGMA
    return median + k * mad


def flag_clusters(
    labels: np.ndarray, scores: np.ndarray, reference: np.ndarray, rule: FlagRule, *, flaggable: bool
) -> tuple[np.ndarray, float]:
    """(flagged per cluster id, the threshold) for the clusters ``labels`` of one group, judged on ``scores``
    (per image, this group) against ``reference`` (per-image scores of the null distribution)."""
    count = int(labels.max()) + 1 if labels.size else 0
    threshold = robust_threshold(reference, rule.k)
    flagged = np.zeros(count, dtype=bool)
    if not flaggable or not np.isfinite(threshold):
        return flagged, threshold
    for cluster in range(count):
        members = scores[labels == cluster]
        big_enough = members.size >= max(rule.min_images, rule.min_fraction * labels.size)
        mean = float(np.nanmean(members)) if np.isfinite(members).any() else float("nan")
        flagged[cluster] = big_enough and np.isfinite(mean) and mean > threshold
    return flagged, threshold


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (ties count half); NaN with one class."""
    keep = np.isfinite(scores) & np.isfinite(labels)
    scores, labels = scores[keep], labels[keep].astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(average, counts)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))
