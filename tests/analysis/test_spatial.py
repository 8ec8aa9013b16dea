"""Per-image spatial scores against plain references written here: a map all in one corner, all in the
middle, uniform, and one without positive mass."""

from __future__ import annotations

import numpy as np
import pytest

from densecam_core.analysis.spatial import map_vectors, region_sides, spatial_scores


def one(grid: np.ndarray) -> dict[str, float]:
    return {k: float(v[0]) for k, v in spatial_scores(grid[None]).items()}


def test_a_map_all_in_the_top_left_corner():
    grid = np.zeros((8, 8), np.float32)
    grid[0, 0] = 5.0
    s = one(grid)
    assert s["corner_top_left"] == s["corner_mass"] == s["border_mass"] == 1.0
    assert s["corner_top_right"] == s["corner_bottom_left"] == s["corner_bottom_right"] == 0.0
    assert (s["peak_y"], s["peak_x"]) == (0.5 / 8, 0.5 / 8)


def test_a_map_all_in_the_middle_has_no_border_or_corner_mass():
    grid = np.zeros((8, 8), np.float32)
    grid[3:5, 3:5] = 1.0
    s = one(grid)
    assert s["border_mass"] == s["corner_mass"] == 0.0
    assert (s["peak_y"], s["peak_x"]) == (3.5 / 8, 3.5 / 8)


@pytest.mark.parametrize("side", [6, 8, 12, 16])
def test_a_uniform_map_puts_each_regions_area_share_there(side: int):
    s = one(np.ones((side, side), np.float32))
    ch, cw, band = region_sides(side, side)
    assert s["corner_bottom_right"] == pytest.approx(ch * cw / side**2)
    inner = (side - 2 * band) ** 2
    assert s["border_mass"] == pytest.approx(1 - inner / side**2)


def test_negative_values_are_left_out_and_a_map_without_positive_mass_scores_nan():
    grid = np.full((8, 8), -1.0, np.float32)
    grid[7, 7] = 2.0
    assert one(grid)["corner_bottom_right"] == 1.0
    empty = one(np.full((8, 8), -1.0, np.float32))
    assert all(np.isnan(v) for v in empty.values())


def test_vectors_are_distributions_pooled_to_at_most_sixteen_cells_a_side():
    maps = np.random.default_rng(0).random((3, 32, 24)).astype(np.float32)
    vectors = map_vectors(maps)
    assert vectors.shape == (3, 16 * 16)
    reference = np.zeros((16, 16))
    p = maps[0] / maps[0].sum()
    for i in range(32):
        for j in range(24):
            reference[i * 16 // 32, j * 16 // 24] += p[i, j]
    np.testing.assert_allclose(vectors[0].reshape(16, 16), reference, rtol=1e-5)
    np.testing.assert_allclose(vectors.sum(axis=1), 1.0, rtol=1e-5)
    small = map_vectors(np.ones((1, 6, 6), np.float32))
    assert small.shape == (1, 36) and np.allclose(small, 1 / 36)
