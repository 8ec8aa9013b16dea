"""The metric-family door: a new family is one declaration registered with ``register_family`` and one function
that scores a batch; the scorer scores it, the quality table orders it, its verdict reaches the summary grid
and the report page, and ``densecam evaluate --metrics`` accepts it, with no other module touched."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from densecam_core.cam.explainer import Explainer
from densecam_core.evaluation.families import FAMILIES, MetricFamily, Verdict, register_family, validate_families
from densecam_core.evaluation.quality import metrics_table, summary_grid, verdicts
from densecam_core.evaluation.scorer import BatchScorer, ScoreSettings
from densecam_core.vocabulary import MapKey
from jobs.evaluate.config import EvaluateConfig


def score_peak_share(batch, rows) -> None:
    """The toy family's scorer: the share of each map's positive mass in its single largest cell."""
    for key, maps in batch.maps.items():
        positive = maps.clamp(min=0).flatten(1)
        total = positive.sum(1)
        rows.add(key, "peak_share", torch.where(total > 0, positive.max(1).values / total, torch.nan))


TOY = MetricFamily(
    name="peakiness",
    metrics=("peak_share",),
    scorer=f"{__name__}:score_peak_share",
    needs=frozenset(),
    verdicts=(Verdict("peaked", "P", "peaked", "diffuse", "peak_share", lambda rows: bool(rows["mean"].max() > 0.01)),),
    summary_columns=("peak_share",),
)


@pytest.fixture
def toy_family():
    register_family(TOY)
    yield TOY
    del FAMILIES[TOY.name]


def test_a_toy_family_is_scored_tabled_and_judged_end_to_end(model, toy_family):
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (3, 1, 64, 64), generator=g, dtype=torch.uint8).expand(-1, 3, -1, -1).clone()
    result = Explainer(model, methods=("gradcam",))(pixels)
    stored = {
        MapKey("cam"): result.cam[:, 0],
        **{MapKey("gradcam", b): v[:, 0] for b, v in result.maps["gradcam"].items()},
    }
    rows = BatchScorer(model, ScoreSettings(metrics=("peakiness",)), methods=("gradcam",)).score(
        pixels, stored, ["a", "b", "c"]
    )
    assert set(rows["metric"]) == {"peak_share"}
    for key, maps in stored.items():  # a plain reference, map by map
        plain = maps.clamp(min=0).flatten(1).double()
        want = [float(m.max() / m.sum()) if m.sum() > 0 else float("nan") for m in plain]
        got = rows[(rows["method"] == key.method) & (rows["block"] == key.block)].set_index("image_id")["value"]
        assert [got[i] for i in "abc"] == pytest.approx(want, rel=1e-5, nan_ok=True)
    assert rows["value"].notna().sum() >= 6, "most maps are not flat: the comparison compared numbers"
    index = pd.DataFrame({"image_id": list("abc"), "study_id": list("abc")})
    table = metrics_table(rows, index, resamples=50)
    assert "peaked" in verdicts(table) and "peaked" in summary_grid(table)
    assert "peak_share_vs_random" not in summary_grid(table)  # no paired column the family did not declare
    assert validate_families("deletion,peakiness") == ("deletion", "peakiness")
    config = EvaluateConfig(store="s", metrics="peakiness")
    config.validate()
    assert config.metrics == ("peakiness",)


def test_a_family_needing_what_no_scorer_gives_is_refused():
    with pytest.raises(ValueError, match="needs \\['gpu'\\]; a family may need"):
        register_family(MetricFamily("x", ("x",), "m:f", needs=frozenset({"gpu"})))
