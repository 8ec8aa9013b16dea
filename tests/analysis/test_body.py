"""The body mask and the mass outside it, against plain references: Otsu's level as scikit-image computes it, a
drawn ellipse as the body, maps all inside or all outside it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from densecam_core.analysis.body import MASK_SIDE, UNKNOWN, body_mask, body_on_grid, otsu_level, outside_body_mass
from densecam_core.analysis.spatial import distributions


def radiograph(side: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """A dark noisy detector with a bright ellipse (the body) and a darker bone inside it; and the ellipse."""
    canvas = Image.new("L", (side, side), 20)
    draw = ImageDraw.Draw(canvas)
    box = (side * 0.25, side * 0.1, side * 0.75, side * 0.9)
    draw.ellipse(box, fill=120)
    draw.rectangle((side * 0.45, side * 0.2, side * 0.55, side * 0.8), fill=190)
    pixels = np.clip(np.asarray(canvas, np.float64) + np.random.default_rng(0).normal(0, 6, (side, side)), 0, 255)
    truth = Image.new("L", (side, side), 0)
    ImageDraw.Draw(truth).ellipse(box, fill=1)
    return pixels.astype(np.uint8), np.asarray(truth, bool)


def test_otsu_level_equals_scikit_images():
    from skimage.filters import threshold_otsu

    values = radiograph()[0]
    assert abs(otsu_level(values) - threshold_otsu(values)) <= 1.0  # integer levels against its bin centres


def test_the_mask_is_the_bright_region_holes_filled():
    pixels, truth = radiograph()
    mask = body_mask(pixels[None])
    expected = np.asarray(Image.fromarray(truth.astype(np.uint8) * 255).resize((MASK_SIDE, MASK_SIDE))) > 127
    assert (mask != expected).mean() < 0.03  # the ellipse's rim, a cell or two
    assert not body_mask(np.zeros((64, 64), np.uint8)).any(), "no bright region: no body"


def test_the_mass_outside_the_body():
    pixels, _ = radiograph()
    masks = body_mask(pixels)[None].astype(np.uint8)
    body = body_on_grid(masks, 8, 8)
    assert body.shape == (1, 8, 8) and np.allclose(body_on_grid(np.ones((1, 64, 64), np.uint8), 6, 10), 1.0)
    inside, outside = np.zeros((1, 8, 8)), np.zeros((1, 8, 8))
    inside[0, 4, 4], outside[0, 0, 0] = 1.0, 1.0
    assert outside_body_mass(distributions(inside), body)[0] == pytest.approx(0.0, abs=1e-9)
    assert outside_body_mass(distributions(outside), body)[0] == pytest.approx(1.0, abs=1e-9)
    unknown = np.full((1, 64, 64), UNKNOWN, np.uint8)
    assert np.isnan(outside_body_mass(distributions(inside), body_on_grid(unknown, 8, 8))[0])
