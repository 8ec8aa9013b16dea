"""Exact geometry between an original radiograph and the square model input, both resize modes.

Pure numpy (no torch) so notebooks reading a store can map heatmaps back quickly.
Coordinates are continuous pixel coordinates with pixel centres at i + 0.5 (PIL's and
``align_corners=False``'s convention). ``stretch`` scales each axis to the input size;
``pad`` reflect-pads the short side to a square first (centred), then scales; mapping back crops
the padding away, so a heatmap lands on the pixels the model actually saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from densecam_core.vocabulary import RESIZE_MODES, validate_resize_mode

__all__ = ["RESIZE_MODES", "Geometry", "validate_resize_mode"]


def check_work_area(width: int, height: int, max_pixels: int, resize: str | None = None) -> str | None:
    """Why an image is too large to become a model input, or None: checked from its header, before any
    pixel is decoded. ``pad`` allocates the padded square (L x L, L = max(H, W)), not H x W: a 100000 x 1
    image would ask for 1e10 pixels."""
    side = max(width, height)
    area = side * side if resize == "pad" else width * height
    if area <= max_pixels:
        return None
    padded = f" padded to {side}x{side}" if resize == "pad" else ""
    return (
        f"image too large: {width}x{height}{padded} = {area} pixels > max_pixels={max_pixels} (refused before decoding)"
    )


@dataclass(frozen=True)
class Geometry:
    """How an ``orig_height`` x ``orig_width`` image became a ``size`` x ``size`` model input."""

    orig_height: int
    orig_width: int
    size: int
    mode: str = "stretch"

    def __post_init__(self) -> None:
        validate_resize_mode(self.mode)
        if min(self.orig_height, self.orig_width, self.size) < 1:
            raise ValueError(f"image and input sizes must be positive, got {self}")

    @property
    def padding(self) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) reflect padding in original pixels (zeros for stretch)."""
        if self.mode == "stretch":
            return (0, 0, 0, 0)
        side = max(self.orig_height, self.orig_width)
        top = (side - self.orig_height) // 2
        left = (side - self.orig_width) // 2
        return (top, side - self.orig_height - top, left, side - self.orig_width - left)

    @property
    def canvas(self) -> tuple[int, int]:
        """(height, width) of the image after padding, before scaling to ``size``."""
        top, bottom, left, right = self.padding
        return (self.orig_height + top + bottom, self.orig_width + left + right)

    def input_to_original(self, x: np.ndarray | float, y: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Map continuous model-input coordinates to continuous original-image coordinates."""
        top, _, left, _ = self.padding
        canvas_h, canvas_w = self.canvas
        ox = np.asarray(x, dtype=np.float64) * canvas_w / self.size - left
        oy = np.asarray(y, dtype=np.float64) * canvas_h / self.size - top
        return ox, oy

    def original_to_input(self, x: np.ndarray | float, y: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Map continuous original-image coordinates to continuous model-input coordinates."""
        top, _, left, _ = self.padding
        canvas_h, canvas_w = self.canvas
        ix = (np.asarray(x, dtype=np.float64) + left) * self.size / canvas_w
        iy = (np.asarray(y, dtype=np.float64) + top) * self.size / canvas_h
        return ix, iy

    def to_original(self, heatmap: np.ndarray) -> np.ndarray:
        """Resample a map covering the model input, (..., h, w), onto the original (..., H, W) grid.

        Bilinear, sampled at each original pixel centre; the padded border is never shown.
        """
        heatmap = np.asarray(heatmap, dtype=np.float32)
        h, w = heatmap.shape[-2:]
        centres_x = np.arange(self.orig_width) + 0.5
        centres_y = np.arange(self.orig_height) + 0.5
        ix, iy = self.original_to_input(centres_x, centres_y)
        rows = _interpolation_matrix(iy * h / self.size - 0.5, h)
        cols = _interpolation_matrix(ix * w / self.size - 0.5, w)
        return np.einsum("Yh,...hw,Xw->...YX", rows, heatmap, cols, optimize=True).astype(np.float32)


def _interpolation_matrix(positions: np.ndarray, length: int) -> np.ndarray:
    """Linear-interpolation weights (len(positions), length), edges clamped like align_corners=False."""
    positions = np.clip(positions, 0.0, length - 1)
    low = np.floor(positions).astype(np.int64)
    high = np.minimum(low + 1, length - 1)
    frac = (positions - low).astype(np.float32)
    matrix = np.zeros((positions.size, length), dtype=np.float32)
    index = np.arange(positions.size)
    np.add.at(matrix, (index, low), 1.0 - frac)
    np.add.at(matrix, (index, high), frac)
    return matrix
