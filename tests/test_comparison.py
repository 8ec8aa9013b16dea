"""Model-update summaries: per body part means, flips, and how flat maps rank."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from densecam_core.analysis.comparison_summary import most_changed, summarise_changes


def per_image() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": ["a", "b", "c", "d"],
            "body_part": ["WRIST", "WRIST", "HAND", "HAND"],
            "prob_a": [0.9, 0.2, 0.6, 0.1],
            "prob_b": [0.4, 0.3, 0.7, 0.1],
            "map_correlation": [0.5, np.nan, 0.9, np.nan],
            "top_iou": [0.2, 0.0, 0.8, 1.0],
            "flat_a": [False, False, False, True],
            "flat_b": [False, True, False, True],
        }
    ).assign(prob_change=lambda f: f["prob_b"] - f["prob_a"])


def test_summary_by_hand():
    table = summarise_changes(per_image()).set_index("body_part")
    assert table.loc["WRIST", "images"] == 2
    assert table.loc["WRIST", "mean_prob_change"] == pytest.approx((-0.5 + 0.1) / 2)
    assert table.loc["WRIST", "mean_abs_prob_change"] == pytest.approx(0.3)
    assert table.loc["WRIST", "flipped"] == 1, "0.9 -> 0.4 crosses 0.5"
    assert table.loc["WRIST", "map_correlation"] == pytest.approx(0.5), "b's map went flat: left out of the mean"
    assert table.loc["HAND", "top_iou"] == pytest.approx(0.8)
    assert table.loc["ALL", "flat_b"] == 2 and table.loc["ALL", "flat_a"] == 1
    assert table.loc["ALL", "flipped"] == 1


def test_a_map_that_went_flat_ranks_first_and_two_flat_maps_last():
    ranked = most_changed(per_image(), count=4)["image_id"].tolist()
    assert ranked == ["b", "a", "c", "d"]
