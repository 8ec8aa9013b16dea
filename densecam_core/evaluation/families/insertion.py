"""Insertion (Petsiuk et al. 2018): the explained class's probability as the map's top pixels are restored into
a blurred image; higher is better (docs/METRICS.md)."""

from __future__ import annotations

from densecam_core.evaluation.families import MetricFamily, Verdict, beats_random

FAMILY = MetricFamily(
    name="insertion",
    metrics=("insertion_auc",),
    scorer="densecam_core.evaluation.faithfulness:score_insertion",
    needs=frozenset({"model"}),
    settings=frozenset({"steps"}),
    verdicts=(
        Verdict(
            "insertion_beats_random",
            "I",
            "beats random on insertion",
            "does not beat random on insertion",
            "insertion_auc",
            lambda rows: beats_random(rows, "insertion_auc", lower=False),
        ),
    ),
    summary_columns=("insertion_auc", "insertion_auc_vs_random"),
)
