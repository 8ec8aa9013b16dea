"""The paste test's pieces against plain references: the region a mean map points at, the pairs, the paste
itself, the bootstrap interval, and the worker on a constructed model whose response to the pasted region is
known (its logit is the mean brightness of the top-left eighth of the image)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from densecam_core.analysis.paste import bootstrap_mean, paste, paste_pairs, region_of
from jobs.audit.paste_worker import PasteSettings, PasteWorker


def test_the_region_is_the_largest_part_above_half_the_peak():
    mean = np.zeros((8, 8))
    mean[0:2, 0:3] = 1.0  # the corner: the largest mass
    mean[6, 6] = 0.9  # a second, smaller part above half the peak
    assert region_of(mean) == (0.0, 2 / 8, 0.0, 3 / 8)
    with pytest.raises(ValueError, match="no positive mass"):
        region_of(np.zeros((4, 4)))


def test_paste_copies_the_region_at_the_same_place():
    recipient = np.zeros((3, 8, 8), np.uint8)
    source = np.full((1, 8, 8), 200, np.uint8)  # grey source into a colour recipient
    out = paste(recipient, source, (0.0, 0.25, 0.5, 1.0))
    assert (out[:, :2, 4:] == 200).all() and out[:, 2:, :].sum() == 0 and out[:, :, :4].sum() == 0


def test_pairs_draw_recipients_once_and_cycle_the_sources():
    sources = pd.DataFrame({"image_id": ["s0", "s1"], "path": ["/s0", "/s1"]})
    recipients = pd.DataFrame({"image_id": [f"r{i}" for i in range(5)], "path": [f"/r{i}" for i in range(5)]})
    pairs = paste_pairs(sources, recipients, (0, 0.5, 0, 0.5), count=4, seed=0)
    assert len(pairs) == 4 and pairs["recipient_id"].is_unique
    assert sorted(pairs["source_id"].value_counts().tolist()) == [2, 2]
    assert len(paste_pairs(sources, recipients, (0, 0.5, 0, 0.5), count=50, seed=0)) == 5
    with pytest.raises(ValueError, match="needs images of the cluster and of the other label"):
        paste_pairs(sources, recipients.iloc[:0], (0, 1, 0, 1), 4, 0)


def test_the_bootstrap_interval_against_a_plain_resampling():
    values = np.random.default_rng(0).normal(2.0, 1.0, 40)
    mean, low, high = bootstrap_mean(values, seed=3, resamples=2000)
    rng = np.random.default_rng(3)
    means = values[rng.integers(0, 40, size=(2000, 40))].mean(axis=1)
    assert mean == pytest.approx(values.mean())
    assert (low, high) == pytest.approx((np.percentile(means, 2.5), np.percentile(means, 97.5)))
    assert low < mean < high


class CornerModel(PasteWorker):
    """A model whose logit is the mean brightness of the top-left eighth: pasting a bright corner onto a dark
    image raises it by exactly the brightness difference there."""

    def __init__(self, settings: PasteSettings) -> None:  # no weights: the response is written here
        self.settings, self.device = settings, "cpu"

    def logits(self, inputs: list[np.ndarray]) -> np.ndarray:
        side = self.settings.size
        return np.array([[x[:, : side // 8, : side // 8].astype(np.float64).mean() / 255.0] for x in inputs])


def test_the_worker_measures_the_known_response_and_names_unreadable_images(tmp_path):
    size = 64
    bright, dark = np.full((size, size), 255, np.uint8), np.zeros((size, size), np.uint8)
    Image.fromarray(bright).save(tmp_path / "bright.png")
    Image.fromarray(dark).save(tmp_path / "dark.png")
    (tmp_path / "broken.png").write_text("not an image")
    pairs = pd.DataFrame(
        {
            "pair": [0, 1, 2],
            "source_id": ["bright", "bright", "dark"],
            "source_path": [str(tmp_path / "bright.png")] * 2 + [str(tmp_path / "dark.png")],
            "recipient_id": ["dark", "broken", "dark"],
            "recipient_path": [str(tmp_path / "dark.png"), str(tmp_path / "broken.png"), str(tmp_path / "dark.png")],
            "y0": 0.0,
            "y1": 0.25,
            "x0": 0.0,
            "x1": 0.25,
        }
    )
    measured = CornerModel(PasteSettings(size=size, resize="stretch")).measure(pairs)
    assert measured.loc[0, "logit_change"] == pytest.approx(1.0)  # the whole top-left eighth became white
    assert np.isnan(measured.loc[1, "logit_change"]) and "not an image" in measured.loc[1, "error"]
    assert measured.loc[2, "logit_change"] == pytest.approx(0.0)  # dark onto dark changes nothing
