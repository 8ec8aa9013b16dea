"""The report's pictures: per card, the radiograph and each chosen map blended over it, as small JPEGs.

Sized for a screen, not for reading: the longest side is ``size`` pixels, so a page of thousands of
cards stays light. Each map is resampled straight onto the thumbnail's grid through the run's geometry
(the model input to an image of the thumbnail's size, resize mode undone), which equals resampling onto
the full radiograph and shrinking it, up to the thumbnail's rounding of the aspect ratio; the full-size
map is never built. File names are digests of the image id, so no id (nor any character in one) reaches
a file name.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image

from densecam_core import fileio
from densecam_core.data.geometry import Geometry
from densecam_core.data.overlay import blend

THUMB_DIR = "thumbs"
JPEG_QUALITY = 85


def thumbnail_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """The (height, width) of a thumbnail whose longest side is ``size`` (never enlarged)."""
    scale = min(1.0, size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def image_digest(image_id: str) -> str:
    return hashlib.sha256(image_id.encode()).hexdigest()[:20]


def thumbnail_name(image_id: str, key: str) -> str:
    return f"{THUMB_DIR}/{image_digest(image_id)}-{key}.jpg"


def shrink(pixels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A uint8 (H, W) or (H, W, 3) image resized to ``shape`` with an area filter (no aliasing)."""
    if pixels.shape[:2] == shape:
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((shape[1], shape[0]), Image.Resampling.BOX))


def blend_map(radiograph: np.ndarray, raw_map: np.ndarray, geometry: Geometry) -> np.ndarray:
    """The map resampled onto ``geometry``'s original grid (here the thumbnail's), normalised to [0, 1]
    over the image and blended over the radiograph as the reader's overlay is: (H, W, 3) uint8."""
    heat = geometry.to_original(raw_map)
    low, high = float(np.nanmin(heat)), float(np.nanmax(heat))
    return blend(radiograph, (heat - low) / (high - low) if high > low else np.zeros_like(heat))


def write_jpeg(folder: Path, name: str, pixels: np.ndarray) -> None:
    buffer = io.BytesIO()
    # no chroma subsampling: a map's colours change over a few pixels of a thumbnail
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    fileio.write_file_exclusive(folder / name, lambda handle: handle.write(buffer.getvalue()))
