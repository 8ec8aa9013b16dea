"""Localisation against lesion boxes: the pointing game, relevance mass and Otsu IoU (docs/METRICS.md)."""

from __future__ import annotations

from densecam_core.evaluation.families import MetricFamily

FAMILY = MetricFamily(
    name="localisation",
    metrics=("pointing_game", "relevance_mass", "otsu_iou"),
    scorer="densecam_core.evaluation.localisation:score",
    needs=frozenset({"boxes"}),
)
