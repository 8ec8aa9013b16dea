"""Stability: how much a map changes when the image gets ±½ grey level of noise; stable when its mean Pearson r
is at least ``STABLE_FROM`` (docs/METRICS.md)."""

from __future__ import annotations

import pandas as pd

from densecam_core.evaluation.families import MetricFamily, Verdict

STABLE_FROM = 0.9


def stable(rows: pd.DataFrame) -> bool | None:
    r = rows[rows["metric"] == "stability_r"]
    return None if r.empty else bool(r["mean"].iloc[0] >= STABLE_FROM)


FAMILY = MetricFamily(
    name="stability",
    metrics=("stability_r", "stability_max_change"),
    scorer="densecam_core.evaluation.stability:score",
    lower_is_better=frozenset({"stability_max_change"}),
    needs=frozenset({"maps"}),
    verdicts=(Verdict("stable", "S", "stable", "not stable", "stability_r", stable),),
    summary_columns=("stability_r", "stability_max_change"),
)
