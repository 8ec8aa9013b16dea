"""What a map looks like over its image: the one blend every picture of a map uses (the reader's overlay,
the exported Secondary Capture, the report's thumbnails)."""

from __future__ import annotations

import numpy as np

from densecam_core.data.decode import as_rgb


def blend(image: np.ndarray, heat01: np.ndarray, alpha: float = 0.45, colormap: str = "jet") -> np.ndarray:
    """A map normalised to [0, 1] on the image's grid, in ``colormap``, blended over the 8-bit image (grey or
    colour): (H, W, 3) uint8."""
    from matplotlib import colormaps

    colour = colormaps[colormap](heat01)[..., :3] * 255.0
    return np.clip((1 - alpha) * as_rgb(image).astype(np.float32) + alpha * colour, 0, 255).astype(np.uint8)
