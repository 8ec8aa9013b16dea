"""Where a map puts its mass, per image: corners, the border band, the peak, and the normalised vector that
clustering and ``similar`` compare. Plain numpy over (n, h, w) batches of raw maps. Torch-free.

A map is first made a distribution: its positive part divided by its sum (a map with no positive mass is
all NaN scores, never a made-up location). A shortcut in the acquisition frame (a text token, a marker)
shows as mass in a corner or the border, where a lesion rarely sits.
"""

from __future__ import annotations

import math

import numpy as np

CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")
SCORE_COLUMNS = (
    "border_mass", *(f"corner_{c}" for c in CORNERS), "corner_mass", "corner_excess", "peak_y", "peak_x"
)  # fmt: skip
"""Per-image columns: mass in the border band, in each corner, in the largest corner, and how much more that
corner holds than the mean of the other three (what a token in one corner raises, and a map spread evenly over
the frame does not); the peak as a fraction of the height and width (0 = top / left, 1 = bottom / right, cell
centres)."""
VECTOR_SIDE = 16
MIN_FLAG_SIDE = 6
"""A grid coarser than this (blocks 3 and 4 are 4x4 at 128 px) cannot tell a corner from the image's body: the audit
reports its scores but never flags there."""


def distributions(maps: np.ndarray) -> np.ndarray:
    """(n, h, w) raw maps -> their positive parts summing to 1 (float64); NaN where a map has no positive mass."""
    positive = np.clip(np.nan_to_num(maps.astype(np.float64), nan=0.0), 0.0, None)
    totals = positive.sum(axis=(1, 2), keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, positive / totals, np.nan)


def region_sides(h: int, w: int) -> tuple[int, int, int]:
    """(corner height, corner width, border band width) on an h x w grid: a quarter of each side, an eighth
    for the band, at least one cell."""
    return max(1, math.ceil(h / 4)), max(1, math.ceil(w / 4)), max(1, round(min(h, w) / 8))


def spatial_scores(maps: np.ndarray) -> dict[str, np.ndarray]:
    """Each score of ``SCORE_COLUMNS`` for every map of the (n, h, w) batch."""
    p = distributions(maps)
    n, h, w = p.shape
    ch, cw, band = region_sides(h, w)
    inner = p[:, band : h - band, band : w - band].sum(axis=(1, 2)) if h > 2 * band and w > 2 * band else 0.0
    scores: dict[str, np.ndarray] = {"border_mass": p.sum(axis=(1, 2)) - inner}
    corners = {
        "top_left": p[:, :ch, :cw],
        "top_right": p[:, :ch, w - cw :],
        "bottom_left": p[:, h - ch :, :cw],
        "bottom_right": p[:, h - ch :, w - cw :],
    }
    for name, part in corners.items():
        scores[f"corner_{name}"] = part.sum(axis=(1, 2))
    corners_mass = np.stack([scores[f"corner_{c}"] for c in CORNERS])
    scores["corner_mass"] = corners_mass.max(axis=0)
    scores["corner_excess"] = scores["corner_mass"] - (corners_mass.sum(axis=0) - scores["corner_mass"]) / 3
    flat = np.nan_to_num(p, nan=-1.0).reshape(n, -1).argmax(axis=1)
    valid = ~np.isnan(p[:, 0, 0])
    scores["peak_y"] = np.where(valid, (flat // w + 0.5) / h, np.nan)
    scores["peak_x"] = np.where(valid, (flat % w + 0.5) / w, np.nan)
    return scores


def pooled(p: np.ndarray, side: int = VECTOR_SIDE) -> np.ndarray:
    """(n, h, w) distributions -> (n, ≤side, ≤side) distributions: each input cell's mass added to the output
    cell its index falls in (whole blocks where the grid divides), so every map still sums to 1."""
    _, h, w = p.shape
    oh, ow = min(h, side), min(w, side)
    rows = np.eye(oh)[(np.arange(h) * oh) // h]  # (h, oh): which output row each input row adds to
    cols = np.eye(ow)[(np.arange(w) * ow) // w]
    return np.einsum("nhw,hi,wj->nij", p, rows, cols)


def frame_vectors(maps: np.ndarray, side: int = VECTOR_SIDE) -> np.ndarray:
    """(n, h, w) raw maps -> (n, d) float32: the mass each map puts in the cells of its frame (the outer quarter
    of each side of the grid pooled to at most side x side), where acquisition-frame shortcuts sit (tokens,
    markers, rulers). What the audit clusters: over whole maps, where the lesion lies varies from image to
    image and swamps a token holding a fifth of a map's mass; the frame alone shows it."""
    p = pooled(np.nan_to_num(distributions(maps), nan=0.0), side)
    _, h, w = p.shape
    band = max(1, round(min(h, w) / 4))
    frame = np.ones((h, w), dtype=bool)
    frame[band : h - band, band : w - band] = False
    return p[:, frame].astype(np.float32)


def map_vectors(maps: np.ndarray, side: int = VECTOR_SIDE) -> np.ndarray:
    """(n, h, w) raw maps -> (n, d) float32 vectors: distributions pooled to at most side x side, each summing
    to 1; zeros for a map without positive mass (it matches nothing)."""
    vectors = pooled(np.nan_to_num(distributions(maps), nan=0.0), side).reshape(len(maps), -1)
    return vectors.astype(np.float32)
