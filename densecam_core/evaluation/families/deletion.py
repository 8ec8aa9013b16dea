"""Deletion (Petsiuk et al. 2018): the explained class's probability as the map's top pixels are blacked out;
lower is better (docs/METRICS.md)."""

from __future__ import annotations

from densecam_core.evaluation.families import MetricFamily, Verdict, beats_random

FAMILY = MetricFamily(
    name="deletion",
    metrics=("deletion_auc",),
    scorer="densecam_core.evaluation.faithfulness:score_deletion",
    lower_is_better=frozenset({"deletion_auc"}),
    needs=frozenset({"model"}),
    settings=frozenset({"steps"}),
    verdicts=(
        Verdict(
            "deletion_beats_random",
            "D",
            "beats random on deletion",
            "does not beat random on deletion",
            "deletion_auc",
            lambda rows: beats_random(rows, "deletion_auc", lower=True),
        ),
    ),
    summary_columns=("deletion_auc", "deletion_auc_vs_random"),
)
