"""Decoding any radiograph file to 8-bit RGB, and preprocessing it for the model.

Every failure is an ``ImageError`` with a readable reason; the job records it as an error row.
No torch here: the store reader uses ``decode_image`` for overlays.
"""

from __future__ import annotations

import errno
import io
import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from densecam_core.geometry import Geometry, validate_resize_mode

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
DEFAULT_MAX_PIXELS = 64_000_000  # 8000 x 8000: far above any radiograph, far below a decompression bomb
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


class ImageError(Exception):
    """An image that cannot be used; ``reason`` is what the index's ``error`` column records."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def read_bytes(path: str) -> bytes:
    """Read a local path or an fsspec URL, turning OS errors into readable reasons."""
    try:
        if "://" in path and not path.startswith("file://"):
            import fsspec

            with fsspec.open(path, "rb") as handle:
                data = handle.read()
        else:
            with open(path.removeprefix("file://"), "rb") as handle:
                data = handle.read()
    except FileNotFoundError:
        raise ImageError(f"missing file: {path}") from None
    except PermissionError:
        raise ImageError(f"unreadable (permission denied): {path}") from None
    except IsADirectoryError:
        raise ImageError(f"not a file (a directory): {path}") from None
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise ImageError(f"missing file: {path}") from None
        raise ImageError(f"unreadable: {exc}") from None
    if not data:
        raise ImageError(f"empty file (0 bytes): {path}")
    return data


def decode_image(source: str | bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a PNG/JPEG of any mode to an (H, W, 3) uint8 array.

    16-bit and 32-bit grey images are scaled to 8 bits over the range of values they contain
    (a 12-bit radiograph in a 16-bit PNG would otherwise be nearly black, or clipped white).
    Transparent pixels are composited onto black.
    """
    data = read_bytes(source) if isinstance(source, str) else source
    if not data:
        raise ImageError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(f"image too large: {width}x{height} = {width * height} pixels > max_pixels={max_pixels}")
            image.load()
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image (format not recognised)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"image too large (decompression bomb guard): {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"truncated or corrupt image: {exc}") from None
    return to_rgb8(image)


def to_rgb8(image: Image.Image) -> np.ndarray:
    """Any PIL mode to (H, W, 3) uint8."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = np.zeros_like(values) if high <= low else (values - low) * (255.0 / (high - low))
        grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("LA", "RGBA", "PA"):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        rgb = rgba[:, :, :3] * (rgba[:, :, 3:4] / 255.0)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    if mode == "L" or mode == "1":
        grey = np.asarray(image.convert("L"))
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


@dataclass(frozen=True)
class Preprocessed:
    """A model-ready (3, size, size) float32 array and the geometry that maps back to the original."""

    array: np.ndarray
    geometry: Geometry


def preprocess(rgb: np.ndarray, size: int = 320, mode: str = "stretch") -> Preprocessed:
    """Resize to ``size`` x ``size`` by ``stretch`` or ``pad`` (reflect), then ImageNet-normalise."""
    validate_resize_mode(mode)
    height, width = rgb.shape[:2]
    geometry = Geometry(height, width, size, mode)
    if mode == "pad":
        top, bottom, left, right = geometry.padding
        pad_mode = "reflect" if min(height, width) > 1 else "edge"
        rgb = np.pad(rgb, ((top, bottom), (left, right), (0, 0)), mode=pad_mode)
    resized = Image.fromarray(rgb).resize((size, size), Image.BILINEAR)
    array = (np.asarray(resized, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return Preprocessed(np.ascontiguousarray(array.transpose(2, 0, 1)), geometry)


def load_for_model(path: str, size: int = 320, mode: str = "stretch", *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Preprocessed:
    """decode + preprocess; raises ImageError with the reason."""
    return preprocess(decode_image(path, max_pixels=max_pixels), size, mode)


def is_image_name(name: str) -> bool:
    """Files a folder walk picks up: image extensions, never hidden (``._image1.png``) files."""
    base = os.path.basename(name)
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)
