"""From decoded pixels to the model's input: resized to the input size (uint8, as cached), then normalised on the device's side."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from densecam_core.data.decode import DEFAULT_MAX_PIXELS, decode_pixels
from densecam_core.data.dicom import DEFAULT_DICOM_WINDOW
from densecam_core.data.errors import ImageError
from densecam_core.data.geometry import Geometry, validate_resize_mode

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)


IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


PREPROCESS_VERSION = 1
"""Bump when decoding or resizing changes what a model input holds: input caches of other versions are never used."""


@dataclass(frozen=True)
class ModelInput:
    """A resized uint8 model input, (C, size, size) with C = 1 (grey source) or 3, before normalisation.

    Why uint8: it is what the input cache stores and what travels to the device (a quarter of the
    float bytes); ``normalise`` (host) and the Explainer (device) turn it into the network's input.
    """

    pixels: np.ndarray
    geometry: Geometry


@dataclass(frozen=True)
class Preprocessed:
    """A model-ready (3, size, size) float32 array and the geometry that maps back to the original."""

    array: np.ndarray
    geometry: Geometry


def resize_pixels(pixels: np.ndarray, size: int = 320, mode: str = "stretch") -> ModelInput:
    """Resize (H, W) or (H, W, 3) uint8 to ``size`` x ``size`` by ``stretch`` or ``pad`` (reflect), PIL bilinear."""
    validate_resize_mode(mode)
    height, width = pixels.shape[:2]
    geometry = Geometry(height, width, size, mode)
    if mode == "pad":
        top, bottom, left, right = geometry.padding
        pad_mode = "reflect" if min(height, width) > 1 else "edge"
        widths = [(top, bottom), (left, right)] + ([(0, 0)] if pixels.ndim == 3 else [])
        pixels = np.pad(pixels, widths, mode=pad_mode)  # type: ignore[call-overload]
    resized = np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR))
    chw = resized[None] if resized.ndim == 2 else resized.transpose(2, 0, 1)
    return ModelInput(np.ascontiguousarray(chw), geometry)


def normalise(pixels: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8, C in {1, 3} -> (3, H, W) float32, ImageNet-normalised (the host path)."""
    rgb = np.broadcast_to(pixels, (3, *pixels.shape[1:])).astype(np.float32)
    return (rgb / 255.0 - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]


def preprocess(rgb: np.ndarray, size: int = 320, mode: str = "stretch") -> Preprocessed:
    """Resize to ``size`` x ``size`` by ``stretch`` or ``pad`` (reflect), then ImageNet-normalise."""
    model_input = resize_pixels(rgb, size, mode)
    return Preprocessed(np.ascontiguousarray(normalise(model_input.pixels)), model_input.geometry)


def load_model_input(
    path: str,
    size: int = 320,
    mode: str = "stretch",
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int | None = None,
    dicom_window: str = DEFAULT_DICOM_WINDOW,
    within: str | None = None,
) -> ModelInput:
    """decode + resize to a uint8 model input; raises ImageError with the reason."""
    pixels = decode_pixels(
        path, max_pixels=max_pixels, max_bytes=max_bytes, dicom_window=dicom_window, resize=mode, within=within
    )
    return resize_pixels(pixels, size, mode)


def load_or_reason(
    path: str,
    size: int,
    mode: str,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int | None = None,
    dicom_window: str = DEFAULT_DICOM_WINDOW,
    within: str | None = None,
) -> ModelInput | str:
    """``load_model_input``, or the reason the image cannot be used: the per-image boundary, where any
    decoder failure becomes an error row. Torch-free, so decode worker processes start light."""
    try:
        return load_model_input(
            path, size, mode, max_pixels=max_pixels, max_bytes=max_bytes, dicom_window=dicom_window, within=within
        )
    except ImageError as exc:
        return exc.reason
    except Exception as exc:  # any decoder bug becomes an error row, never a failed shard
        return f"unexpected {type(exc).__name__}: {exc}"


def load_for_model(
    path: str,
    size: int = 320,
    mode: str = "stretch",
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    dicom_window: str = DEFAULT_DICOM_WINDOW,
) -> Preprocessed:
    """decode + preprocess; raises ImageError with the reason."""
    pixels = decode_pixels(path, max_pixels=max_pixels, dicom_window=dicom_window, resize=mode)
    return preprocess(pixels, size, mode)
