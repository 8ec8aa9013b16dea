"""Which clusters a map's audit flags, by a stated rule against the class's own spread (or a control run's).

A cluster is flagged when its images' median corner excess (the largest corner's mass less the mean of the
other three: one corner singled out, as a token is, not a map spread over the whole frame) lies above the median + k · MAD (scaled to σ, 1.4826)
of the per-image corner excesses of its reference — the rest of its group (its class, and body part where grouped
so), or the control run's images of that stratum — holds at least ``min_images`` and ``min_fraction`` of its
group, lies at least ``min_shift`` (a tenth of a map's mass) above the reference's median, and the map's grid can
tell a corner from the image's body. The cluster is left out of its own
reference, so a shortcut that most of one class carries is still judged against the images without it; robust
statistics on both sides (a cluster's mean would exceed the threshold for any large enough sample of a
skewed reference: most maps put almost nothing in a corner, a few a lot), and no fixed threshold tuned to one
dataset. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class FlagRule:
    """The rule's parameters, recorded with every audit."""

    k: float = 3.0
    min_images: int = 5
    min_fraction: float = 0.02
    min_shift: float = 0.1
    """...and at least this much above the reference's median: a tenth of a map's mass moved into a corner. The
    statistical bound alone flags a benign cluster against a tight reference (maps of a class falling into two
    shapes whose corner masses differ by a few hundredths)."""
    score: str = "corner_excess"

    def describe(self, reference: str) -> str:
        return (
            f"median {self.score} above the median + {self.k:g}·MAD of {reference}, and at least {self.min_shift:g} "
            f"above its median, in a cluster of at least {self.min_images} images and {self.min_fraction:.0%} of its group"
        )


def robust_threshold(values: np.ndarray, k: float) -> float:
    """median + k · 1.4826 · MAD of the finite ``values`` (NaN when there are none)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan")
    median = float(np.median(finite))
    mad = float(np.median(np.abs(finite - median))) * MAD_TO_SIGMA
    return median + k * mad


def flag_cluster(
    members: np.ndarray, reference: np.ndarray, group_size: int, rule: FlagRule, *, flaggable: bool
) -> tuple[bool, float]:
    """(flagged, the threshold) for one cluster whose images score ``members``, judged against ``reference``
    (per-image scores of what the cluster is compared with) in a group of ``group_size`` images."""
    threshold = robust_threshold(reference, rule.k)
    if not flaggable or not np.isfinite(threshold):
        return False, threshold
    big_enough = members.size >= max(rule.min_images, rule.min_fraction * group_size)
    typical = finite_median(members)
    shifted = typical >= finite_median(reference) + rule.min_shift
    return bool(big_enough and np.isfinite(typical) and typical > threshold and shifted), threshold


def flag_within_group(
    labels: np.ndarray, scores: np.ndarray, rule: FlagRule, *, flaggable: bool
) -> list[tuple[bool, float]]:
    """(flagged, threshold) per cluster of one group, each judged against the rest of the group: the cluster left
    out (so a shortcut most of the class carries is judged against the images without it) and every cluster
    already flagged (so a shortcut split over two clusters does not hide the second behind the first); repeated
    until no verdict changes. A group of one cluster has no rest and flags nothing."""
    count = int(labels.max()) + 1 if labels.size else 0
    flagged = np.zeros(count, dtype=bool)
    verdicts = [(False, float("nan"))] * count
    changed = True
    while changed:
        changed = False
        for cluster in range(count):
            if flagged[cluster]:
                continue
            rest = (labels != cluster) & ~flagged[labels]
            verdict = flag_cluster(scores[labels == cluster], scores[rest], labels.size, rule, flaggable=flaggable)
            verdicts[cluster] = verdict
            if verdict[0]:
                flagged[cluster] = changed = True
    return verdicts


def finite_median(values: np.ndarray) -> float:
    """The median of the finite values; NaN when there are none."""
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else float("nan")


def finite_mean(values: np.ndarray) -> float:
    """The mean of the finite values; NaN when there are none (maps without positive mass score NaN)."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve as the Mann-Whitney statistic (ties count half) of ``scores`` for binary
    ``labels``, over the pairs where both are finite; NaN without both classes. The audit's cluster table and the
    report page's body-part table both use it."""
    labels, scores = np.asarray(labels, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    keep = np.isfinite(scores) & np.isfinite(labels)
    positive = labels[keep] == 1
    positives, negatives = int(positive.sum()), int((~positive).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = pd.Series(scores[keep]).rank(method="average").to_numpy()
    return float((ranks[positive].sum() - positives * (positives + 1) / 2) / (positives * negatives))
