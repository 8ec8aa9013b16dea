"""The quality table: study bootstrap, paired comparison with the random map, verdicts, sampling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from densecam_core.evaluation.quality import bootstrap_means, metrics_table, verdicts
from densecam_core.evaluation.sampling import stratified_sample


def test_bootstrap_resamples_studies_not_images():
    # two studies of 50 images each, all 0 in one and all 1 in the other: an image bootstrap would give a
    # narrow interval around 0.5; resampling studies gives 0 (both draws A), 0.5 or 1 (both B)
    values = pd.DataFrame({"x": [0.0] * 50 + [1.0] * 50})
    studies = pd.Series(["A"] * 50 + ["B"] * 50)
    row = bootstrap_means(values, studies, resamples=2000, seed=1).loc["x"]
    assert row["mean"] == pytest.approx(0.5)
    assert row["ci_low"] == 0.0 and row["ci_high"] == 1.0


def test_bootstrap_interval_matches_the_normal_approximation():
    rng = np.random.default_rng(3)
    n = 400
    study_values = rng.normal(0.3, 0.2, size=n)
    values = pd.DataFrame({"x": study_values})  # one image per study
    row = bootstrap_means(values, pd.Series([f"s{i}" for i in range(n)]), resamples=4000, seed=0).loc["x"]
    half_width = 1.96 * study_values.std(ddof=0) / np.sqrt(n)
    assert row["mean"] == pytest.approx(study_values.mean())
    assert (row["ci_high"] - row["ci_low"]) / 2 == pytest.approx(half_width, rel=0.1)


def test_bootstrap_leaves_nan_out_of_the_mean():
    values = pd.DataFrame({"x": [1.0, np.nan, 3.0]})
    row = bootstrap_means(values, pd.Series(["a", "b", "c"]), resamples=50).loc["x"]
    assert row["mean"] == pytest.approx(2.0) and row["images"] == 2


def _scores(images: int = 40) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A constructed run: the map deletes faster than random (0.2 vs 0.5) on every image; its
    randomisation similarity at stage 5 is high (fails), its stability r is 0.95 (stable)."""
    rng = np.random.default_rng(0)
    ids = [f"img{i}" for i in range(images)]
    rows = []
    for i in ids:
        rows += [
            (i, "gradcam", 4, "deletion_auc", None, 0.2 + rng.normal(0, 0.02)),
            (i, "random", 4, "deletion_auc", None, 0.5 + rng.normal(0, 0.02)),
            (i, "gradcam", 4, "insertion_auc", None, 0.5 + rng.normal(0, 0.02)),
            (i, "random", 4, "insertion_auc", None, 0.5 + rng.normal(0, 0.02)),
            (i, "gradcam", 4, "randomisation_spearman", 1, 0.1),
            (i, "gradcam", 4, "randomisation_spearman", 5, 0.9),
            (i, "gradcam", 4, "stability_r", None, 0.95),
        ]
    scores = pd.DataFrame(rows, columns=["image_id", "method", "block", "metric", "stage", "value"])
    index = pd.DataFrame({"image_id": ids, "study_id": [f"s{n // 2}" for n in range(images)]})
    return scores, index


def test_table_means_random_baseline_and_verdicts():
    scores, index = _scores()
    table = metrics_table(scores, index, resamples=200)
    deletion = table[(table["metric"] == "deletion_auc") & (table["method"] == "gradcam")].iloc[0]
    expected = scores[(scores["metric"] == "deletion_auc") & (scores["method"] == "gradcam")]["value"].mean()
    assert deletion["mean"] == pytest.approx(expected)
    assert deletion["random"] == pytest.approx(
        scores[(scores["metric"] == "deletion_auc") & (scores["method"] == "random")]["value"].mean()
    )
    assert deletion["vs_random_high"] < 0
    assert deletion["ci_low"] <= deletion["mean"] <= deletion["ci_high"]
    stages = table[table["metric"] == "randomisation_spearman"]["stage"].tolist()
    assert stages == [1, 5]
    (verdict,) = [v for v in verdicts(table).to_dict("records") if (v["method"], v["block"]) == ("gradcam", 4)]
    assert verdict["deletion_beats_random"] is True
    assert verdict["insertion_beats_random"] is False  # equal to random within noise
    assert verdict["passes_randomisation"] is False  # 0.9 at the last stage
    assert verdict["stable"] is True


def test_table_of_no_scores_is_a_clear_error():
    scores, index = _scores(2)
    with pytest.raises(ValueError, match="no committed metrics"):
        metrics_table(scores.iloc[:0], index)


def test_stratified_sample_keeps_shares_and_is_seeded():
    index = pd.DataFrame(
        {
            "row": range(100),
            "image_id": [f"i{n}" for n in range(100)],
            "body_part": ["XR_HAND"] * 60 + ["XR_WRIST"] * 40,
            "label": ([0, 1] * 30) + ([0] * 30 + [1] * 10),
        }
    )
    sample = stratified_sample(index, count=20, seed=5)
    assert len(sample) == 20 and sample["row"].is_monotonic_increasing
    counts = sample.groupby(["body_part", "label"]).size().to_dict()
    assert counts == {("XR_HAND", 0): 6, ("XR_HAND", 1): 6, ("XR_WRIST", 0): 6, ("XR_WRIST", 1): 2}
    assert sample.equals(stratified_sample(index, count=20, seed=5))
    assert not sample.equals(stratified_sample(index, count=20, seed=6))
    assert len(stratified_sample(index, fraction=0.25)) == 25
    with pytest.raises(ValueError, match="larger than the run's 100"):
        stratified_sample(index, count=101)
