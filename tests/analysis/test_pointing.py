"""Pointing game: exact on hand-made maps and boxes (hit, miss, box edges, flat maps, aggregation)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from densecam_core.analysis.pointing import box_area_fraction, is_hit, peak, pointing_game, read_boxes
from densecam_core.store.record import RunRecord, RunSettings
from densecam_core.vocabulary import MapKey


def one_hot(x: int, y: int, size: int = 4) -> np.ndarray:
    heat = np.zeros((size, size), dtype=np.float32)
    heat[y, x] = 1.0
    return heat


def test_peak_is_the_first_maximum_and_none_for_flat_maps():
    assert peak(one_hot(3, 1)) == (3, 1)
    assert peak(np.zeros((4, 4))) is None
    assert peak(np.full((4, 4), 7.0)) is None


def test_hit_miss_and_half_open_edges():
    box = np.array([[1, 1, 3, 3]])  # covers pixels x in {1, 2}, y in {1, 2}
    assert is_hit((2, 2), box)
    assert is_hit((1, 1), box), "x0 / y0 belong to the box"
    assert not is_hit((3, 2), box), "x1 is exclusive"
    assert not is_hit((2, 3), box), "y1 is exclusive"
    assert not is_hit((0, 0), box)
    assert not is_hit(None, box), "a flat map never hits"
    assert is_hit((3, 2), box, tolerance=1.0)
    assert is_hit((3, 3), np.array([[0, 0, 1, 1], [3, 3, 4, 4]])), "any of several boxes"


def test_box_area_fraction_clips_to_the_image():
    assert box_area_fraction(np.array([[1, 1, 3, 3]]), 4, 4) == pytest.approx(4 / 16)
    assert box_area_fraction(np.array([[2, 2, 10, 10]]), 4, 4) == pytest.approx(4 / 16)
    assert box_area_fraction(np.array([[0, 0, 2, 2], [1, 1, 3, 3]]), 4, 4) == pytest.approx(7 / 16), "union, not sum"


def test_read_boxes_rejects_bad_rows(tmp_path):
    with pytest.raises(ValueError, match="missing"):
        read_boxes(pd.DataFrame({"image_id": ["a"], "x0": [0]}))
    with pytest.raises(ValueError, match="empty"):
        read_boxes(pd.DataFrame({"image_id": ["a"], "x0": [2], "y0": [0], "x1": [2], "y1": [3]}))
    with pytest.raises(ValueError, match="numbers"):
        read_boxes(pd.DataFrame({"image_id": ["a"], "x0": ["left"], "y0": [0], "x1": [2], "y1": [3]}))
    with pytest.raises(ValueError, match="infinite coordinates"):  # once failed its shard on every retry
        read_boxes(pd.DataFrame({"image_id": ["a"], "x0": [0.0], "y0": [0], "x1": [np.inf], "y1": [3]}))


class FakeRun:
    """Just what pointing_game reads from a Run: index, settings, methods, maps by rows."""

    run_id = "run-fake"
    methods = ["gradcam"]
    record = RunRecord(run_id, "f" * 64, "now", 4, {}, RunSettings(("gradcam",), size=4))
    settings = record.settings

    def __init__(self, maps: dict[tuple[str, int | None], np.ndarray], status: list[str]) -> None:
        self._maps = maps
        n = len(status)
        self.index = pd.DataFrame(
            {
                "image_id": [f"img{i}" for i in range(n)],
                "row": range(n),
                "status": status,
                "orig_height": 4,
                "orig_width": 4,
                "resize_mode": "stretch",
            }
        )

    def read_maps(self, key: MapKey, rows: np.ndarray) -> np.ndarray:
        return self._maps[(key.method, key.block)][np.asarray(rows)]  # one target: (n, h, w)


def test_pointing_game_counts_hits_per_map_against_a_plain_count():
    # original 4x4 images explained at size 4 with 4x4 maps: the map is the heatmap, pixel for pixel
    cam = np.stack([one_hot(2, 2), one_hot(0, 3), one_hot(1, 0), np.zeros((4, 4)), one_hot(0, 0)])
    grad = np.stack([one_hot(3, 3), one_hot(1, 1), one_hot(1, 3), one_hot(2, 2), one_hot(0, 0)])
    maps = {("cam", 4): cam, **{("gradcam", b): grad for b in (1, 2, 3, 4)}}
    run = FakeRun(maps, ["ok", "ok", "ok", "ok", "error"])
    boxes = pd.DataFrame(
        {
            "image_id": ["img0", "img1", "img2", "img3", "img4", "elsewhere"],
            "x0": [1, 1, 1, 2, 0, 0],
            "y0": [1, 1, 0, 2, 0, 0],
            "x1": [3, 3, 2, 4, 4, 1],
            "y1": [3, 3, 4, 4, 4, 1],
        }
    )
    table = pointing_game(run, boxes).set_index(["method", "block"])
    # by hand: cam hits img0 (2,2) in [1,3), misses img1 (0,3), hits img2 (1,0) on the x0 edge,
    # img3's map is flat (miss); img4 is an error row and is left out
    assert table.loc[("cam", 4), "hits"] == 2 and table.loc[("cam", 4), "images"] == 4
    assert table.loc[("cam", 4), "flat_maps"] == 1
    # gradcam: img0 (3,3) misses (x1 exclusive), img1 (1,1) hits, img2 (1,3) hits, img3 (2,2) hits
    assert table.loc[("gradcam", 4), "hit_rate"] == pytest.approx(3 / 4)
    assert table.loc[("cam", 4), "random_baseline"] == pytest.approx(np.mean([4, 4, 4, 4]) / 16)
    assert len(table) == 1 + 4
    detail = pointing_game(run, boxes, per_image=True)
    assert set(detail["image_id"]) == {"img0", "img1", "img2", "img3"}


def test_pointing_game_without_any_boxed_image_says_so():
    run = FakeRun({("cam", 4): np.zeros((1, 4, 4))}, ["ok"])
    with pytest.raises(ValueError, match="has a box"):
        pointing_game(run, pd.DataFrame({"image_id": ["other"], "x0": [0], "y0": [0], "x1": [1], "y1": [1]}))
