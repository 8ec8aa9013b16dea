"""Cascading model randomisation (Adebayo et al. 2018): how much the maps of ever more randomised models resemble
the trained model's; lower is better, and a map passes when its Spearman r at the last stage is below
``PASS_BELOW`` (docs/METRICS.md)."""

from __future__ import annotations

import pandas as pd

from densecam_core.evaluation.families import MetricFamily, Verdict

PASS_BELOW = 0.5


def passes(rows: pd.DataFrame) -> bool | None:
    spearman = rows[rows["metric"] == "randomisation_spearman"]
    if spearman.empty:
        return None
    last = spearman.sort_values("stage").iloc[-1]
    return bool(last["mean"] < PASS_BELOW)


FAMILY = MetricFamily(
    name="randomisation",
    metrics=("randomisation_spearman", "randomisation_ssim"),
    scorer="densecam_core.evaluation.randomisation:score",
    lower_is_better=frozenset({"randomisation_spearman", "randomisation_ssim"}),
    needs=frozenset({"maps", "cascade"}),
    verdicts=(
        Verdict(
            "passes_randomisation", "R", "passes randomisation", "fails randomisation", "randomisation_spearman", passes
        ),
    ),
    summary_columns=("randomisation_spearman", "randomisation_ssim"),
)
