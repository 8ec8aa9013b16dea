"""Where the body is in each radiograph, from the image itself: the largest bright connected region.

The model input (uint8, the run's size and resize) is smoothed, thresholded at Otsu's level (the valley
between the dark detector background and the tissue), its largest connected component kept and its holes
filled. Kept at 64 x 64 per image, pooled onto each map's grid as a fraction of body per cell, so a map's mass
outside the body is one dot product. An image that cannot be read has no mask (its score is NaN). Torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MASK_SIDE = 64


def otsu_level(values: np.ndarray) -> float:
    """Otsu's threshold of uint8 ``values``: the level maximising the between-class variance."""
    counts = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    weight = np.cumsum(counts)
    mean = np.cumsum(counts * levels)
    total, total_mean = weight[-1], mean[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_mean * weight - mean * total) ** 2 / (weight * (total - weight))
    return float(np.nanargmax(np.where(np.isfinite(between), between, np.nan))) if np.isfinite(between).any() else 0.0


def body_mask(pixels: np.ndarray) -> np.ndarray:
    """(C, H, W) or (H, W) uint8 -> (64, 64) bool: the largest bright region, holes filled."""
    from PIL import Image
    from scipy import ndimage

    grey = pixels.mean(axis=0) if pixels.ndim == 3 else pixels
    small = np.asarray(Image.fromarray(grey.astype(np.uint8)).resize((MASK_SIDE, MASK_SIDE), Image.Resampling.BOX))
    smooth = ndimage.gaussian_filter(small.astype(np.float64), sigma=1.5)
    bright = smooth > otsu_level(np.clip(np.rint(smooth), 0, 255).astype(np.uint8))
    components, count = ndimage.label(bright)
    if count == 0:
        return np.zeros((MASK_SIDE, MASK_SIDE), dtype=bool)
    largest = np.argmax(np.bincount(components.ravel())[1:]) + 1
    return np.asarray(ndimage.binary_fill_holes(components == largest))


UNKNOWN = 255
"""The value every cell of a mask holds when its image could not be read."""


def body_on_grid(masks: np.ndarray, h: int, w: int) -> np.ndarray:
    """(n, 64, 64) uint8 masks -> (n, h, w): the fraction of each map cell that is body (cell areas shared
    exactly); NaN for an image without a mask."""
    rows = _share(MASK_SIDE, h)
    cols = _share(MASK_SIDE, w)
    known = masks[:, 0, 0] != UNKNOWN
    body = np.einsum("nij,hi,wj->nhw", np.where(masks == UNKNOWN, 0, masks).astype(np.float64), rows, cols)
    body[~known] = np.nan
    return body


def _share(fine: int, coarse: int) -> np.ndarray:
    """(coarse, fine): the share of each coarse cell that each fine cell covers (rows sum to 1)."""
    edges = np.linspace(0.0, fine, coarse + 1)
    starts, stops = np.arange(fine), np.arange(1, fine + 1)
    overlap = np.clip(
        np.minimum(stops[None, :], edges[1:, None]) - np.maximum(starts[None, :], edges[:-1, None]), 0, None
    )
    return overlap / overlap.sum(axis=1, keepdims=True)


def outside_body_mass(distributions: np.ndarray, body: np.ndarray) -> np.ndarray:
    """The share of each map's mass on cells outside the body (``body``: fraction of body per cell, NaN rows for
    images without a mask)."""
    return np.einsum("nhw,nhw->n", np.nan_to_num(distributions, nan=0.0), 1.0 - body) + np.where(
        np.isnan(body[:, 0, 0]) | np.isnan(distributions[:, 0, 0]), np.nan, 0.0
    )


def body_masks(run: object, paths: Sequence[str], threads: int = 4) -> np.ndarray:
    """(n, 64, 64) uint8 masks of the run's images (1 body, 0 not; ``UNKNOWN`` everywhere where an image cannot
    be read: 4 KB an image), from the input cache where it holds them, else decoded as the run decoded them."""
    from concurrent.futures import ThreadPoolExecutor

    from densecam_core.data.preprocess import load_or_reason
    from densecam_core.store.inputs.cache import InputCache
    from densecam_core.store.inputs.lookup import cached_model_inputs

    settings = run.settings  # type: ignore[attr-defined]
    size, resize, window = settings.size, settings.resize, settings.dicom_window
    cache = InputCache(run.store_url, size, resize, window)  # type: ignore[attr-defined]
    cached = cached_model_inputs(cache if cache.exists() else None, list(paths), threads=threads).inputs
    out = np.full((len(paths), MASK_SIDE, MASK_SIDE), UNKNOWN, dtype=np.uint8)

    def one(position: int) -> None:
        loaded = (
            cached[position]
            if position in cached
            else load_or_reason(paths[position], size, resize, dicom_window=window)
        )
        if not isinstance(loaded, str):
            out[position] = body_mask(loaded.pixels)

    with ThreadPoolExecutor(max(1, threads)) as pool:
        list(pool.map(one, range(len(paths))))
    return out
