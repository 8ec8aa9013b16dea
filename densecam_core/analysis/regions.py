"""Regions of a map: the thresholds a weak label is cut at, the connected components above each, their boxes.

A map is judged on an image's pixel grid after negative values (evidence against the class) are set to 0 and
the rest divided by the maximum, so a threshold ``tau`` keeps the pixels at or above ``tau`` x the maximum (the
CAM paper's rule). Thresholds are the ``steps`` levels ``k / steps``; a pixel's *level* is
``floor(steps * value)`` (at most ``steps - 1``), and the region at threshold ``k`` is every pixel whose level is
at least ``k``. A map without positive values has no region at any threshold (level ``NEVER``). Components are
8-connected; a box is ``(x0, y0, x1, y1)`` with x1, y1 exclusive, in pixels of the grid it was cut on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEVER = -1
"""The level of a pixel no threshold keeps: every pixel of a map without positive values, or of an image whose
probability is below the cutoff."""
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def levels(values: np.ndarray, steps: int) -> np.ndarray:
    """Each pixel's level (int16): ``floor(steps * value / max)`` of the map's positive part, ``NEVER`` for a map
    without positive values."""
    positive = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0), 0.0, None)
    top = float(positive.max()) if positive.size else 0.0
    if top <= 0.0:
        return np.full(positive.shape, NEVER, dtype=np.int16)
    return np.minimum(np.floor(positive / top * steps), steps - 1).astype(np.int16)


@dataclass(frozen=True)
class Components:
    """The connected components of one threshold's region: their boxes ``(n, 4)`` and pixel counts ``(n,)``."""

    boxes: np.ndarray
    sizes: np.ndarray

    @property
    def largest(self) -> np.ndarray:
        """The box of the largest component, ``(1, 4)``, or ``(0, 4)`` when there is none."""
        return self.boxes[np.argsort(-self.sizes, kind="stable")[:1]]


NO_COMPONENTS = Components(np.zeros((0, 4), dtype=np.int64), np.zeros(0, dtype=np.int64))


def components_at(level_map: np.ndarray, k: int) -> Components:
    """The 8-connected components of the pixels whose level is at least ``k``."""
    spans = region_spans(level_map)
    return _components(level_map, k, spans[:, k]) if int(level_map.max()) >= k else NO_COMPONENTS


def region_spans(level_map: np.ndarray) -> np.ndarray:
    """The bounding box of the region at every level 0..max, ``(4, levels)`` as y0, y1, x0, x1 (exclusive ends):
    the first and last row and column whose highest level reaches it, for all levels at once."""
    top = int(level_map.max())
    wanted = np.arange(top + 1)

    def first_last(highest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        first = np.searchsorted(np.maximum.accumulate(highest), wanted, side="left")
        last = len(highest) - np.searchsorted(np.maximum.accumulate(highest[::-1]), wanted, side="left")
        return first, last

    y0, y1 = first_last(level_map.max(axis=1))
    x0, x1 = first_last(level_map.max(axis=0))
    return np.stack([y0, y1, x0, x1])


def _components(level_map: np.ndarray, k: int, span: np.ndarray) -> Components:
    """``components_at`` on the region's bounding box ``span`` (y0, y1, x0, x1) only, which shrinks as ``k``
    grows."""
    from scipy import ndimage

    y0, y1, x0, x1 = (int(v) for v in span)
    labels, count = ndimage.label(level_map[y0:y1, x0:x1] >= k, structure=EIGHT_CONNECTED)
    if count == 1:
        return Components(np.array([[x0, y0, x1, y1]], dtype=np.int64), np.array([np.count_nonzero(labels)]))
    slices = ndimage.find_objects(labels)
    boxes = np.array([[s[1].start + x0, s[0].start + y0, s[1].stop + x0, s[0].stop + y0] for s in slices])
    return Components(boxes.reshape(-1, 4).astype(np.int64), np.bincount(labels.ravel(), minlength=count + 1)[1:])


def _bounding(level_map: np.ndarray, k: int, span: np.ndarray) -> Components:
    """The region at ``k`` as one component: its bounding box (size: the box's area, for ordering only)."""
    y0, y1, x0, x1 = (int(v) for v in span)
    return Components(np.array([[x0, y0, x1, y1]], dtype=np.int64), np.array([(y1 - y0) * (x1 - x0)]))


def box_mask(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """(height, width) bool mask of the union of boxes; pixel (x, y) is inside when x0 <= x < x1, y0 <= y < y1."""
    mask = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        mask[
            max(0, int(np.ceil(y0))) : max(0, int(np.ceil(y1))), max(0, int(np.ceil(x0))) : max(0, int(np.ceil(x1)))
        ] = True
    return mask


def box_iou(boxes: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """IoU of every box ``(n, 4)`` with every box ``(m, 4)``, as an ``(n, m)`` array (continuous coordinates)."""
    a = np.asarray(boxes, dtype=np.float64).reshape(-1, 1, 4)
    b = np.asarray(truth, dtype=np.float64).reshape(1, -1, 4)
    width = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    height = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = width * height
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def best_ious(
    level_map: np.ndarray, truth: np.ndarray, steps: int, *, unimodal: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """For every threshold ``k``: the best IoU of any component's box with any true box (MaxBoxAccV2's all
    components), and of the largest component's box (the CAM paper's rule); two ``(steps,)`` arrays, 0 where
    the region is empty. ``unimodal``: the caller knows every region is one component (a Gaussian's), whose box
    is then the region's bounding box, found without labelling."""
    every = np.zeros(steps, dtype=np.float32)
    largest = np.zeros(steps, dtype=np.float32)
    top = int(level_map.max()) if level_map.size else NEVER
    if top < 0:
        return every, largest
    spans = region_spans(level_map)
    cut = _bounding if unimodal else _components
    found = [cut(level_map, k, spans[:, k]) for k in range(top + 1)]
    counts = np.array([len(f.sizes) for f in found])
    boxes = np.concatenate([f.boxes for f in found])
    level_of = np.repeat(np.arange(top + 1), counts)
    ious = box_iou(boxes, truth).max(axis=1)
    np.maximum.at(every, level_of, ious.astype(np.float32))
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    biggest = first + np.array([int(np.argmax(f.sizes)) for f in found])
    largest[: top + 1] = ious[biggest]
    return every, largest


def level_histograms(level_map: np.ndarray, truth_mask: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel counts per level inside and outside the true mask, two ``(steps + 1,)`` arrays: index 0 counts the
    pixels no threshold keeps, index ``k + 1`` those of level ``k``."""
    shifted = level_map.astype(np.int64) + 1
    inside = np.bincount(shifted[truth_mask], minlength=steps + 1)
    outside = np.bincount(shifted[~truth_mask], minlength=steps + 1)
    return inside, outside


def peak_position(values: np.ndarray) -> tuple[int, int] | None:
    """(x, y) of the first maximum of a map with positive values, or None."""
    positive = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0), 0.0, None)
    if positive.size == 0 or float(positive.max()) <= 0.0:
        return None
    y, x = np.unravel_index(int(np.argmax(positive)), positive.shape)
    return int(x), int(y)


@dataclass(frozen=True)
class Region:
    """One component of a weak label: its box and mask on the image's grid and the share of the map's positive
    mass inside it."""

    box: tuple[int, int, int, int]
    mask: np.ndarray
    score: float


def regions(values: np.ndarray, k: int, steps: int, *, largest_only: bool) -> list[Region]:
    """The components at threshold ``k`` of a map on the image's own grid (every one, or the largest), each with
    its own mask (the component's pixels) and mass share."""
    from scipy import ndimage

    level_map = levels(values, steps)
    if int(level_map.max()) < k:
        return []
    labels, count = ndimage.label(level_map >= k, structure=EIGHT_CONNECTED)
    positive = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0), 0.0, None)
    total = float(positive.sum())
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    masses = np.bincount(labels.ravel(), weights=positive.ravel(), minlength=count + 1)[1:]
    order = np.argsort(-sizes, kind="stable")[: 1 if largest_only else count]
    slices = ndimage.find_objects(labels)
    found = []
    for index in order:
        s = slices[index]
        found.append(
            Region(
                (s[1].start, s[0].start, s[1].stop, s[0].stop),
                labels == index + 1,
                float(masses[index] / total) if total > 0 else 0.0,
            )
        )
    return found


def mask_at(values: np.ndarray, k: int | None, steps: int) -> np.ndarray:
    """The mask of a map on the image's grid: pixels at level ``k`` or above, or Otsu's split of the map's
    positive part when ``k`` is None."""
    if k is not None:
        return levels(values, steps) >= k
    from densecam_core.analysis.otsu import otsu_mask

    return otsu_mask(values)
