"""The pointing game over a run's stored maps (Zhang et al., 2016), and the box tables it and the evaluation read.

A map scores a hit when its peak, on the original image's pixel grid, falls inside the lesion box. Pixel (x, y)
covers [x, x+1) x [y, y+1), so a box ``(x0, y0, x1, y1)`` holds the peaks with ``x0 <= x < x1`` and
``y0 <= y < y1`` (x1, y1 exclusive, as ``lesion_boxes.csv`` of the synthetic tree writes them). A map with no
peak (constant, e.g. all zero after ReLU) is a miss. The random baseline is the mean fraction of the image a box
covers: the hit rate of a peak dropped uniformly at random. Torch-free.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from densecam_core.analysis.regions import box_mask
from densecam_core.data.geometry import Geometry
from densecam_core.store.targets import class_names, fixed_classes, target_position
from densecam_core.vocabulary import BLOCKS, map_keys

BOX_COLUMNS = ("image_id", "x0", "y0", "x1", "y1")
TARGET_COLUMN = "target"


def read_boxes(source: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    """Boxes as a frame ``image_id, x0, y0, x1, y1`` (pixels of the original image), validated.

    An image may have several boxes (rows); a hit on any of them counts. An optional ``target`` column
    says which class a box outlines (a class name or id; ``boxes_for_target`` keeps one class's boxes).
    """
    frame = source.copy() if isinstance(source, pd.DataFrame) else pd.read_csv(source)
    missing = [c for c in BOX_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"boxes need columns {list(BOX_COLUMNS)}; missing {missing}")
    coords = frame[list(BOX_COLUMNS[1:])]
    if coords.isna().any().any() or not all(pd.api.types.is_numeric_dtype(t) for t in coords.dtypes):
        raise ValueError("box coordinates x0, y0, x1, y1 must all be numbers")
    infinite = frame[~np.isfinite(coords.to_numpy(dtype=np.float64)).all(axis=1)]
    if not infinite.empty:
        raise ValueError(
            f"{len(infinite)} boxes have infinite coordinates, e.g. {infinite.iloc[0].to_dict()}: give pixel coordinates"
        )
    empty = frame[(frame["x1"] <= frame["x0"]) | (frame["y1"] <= frame["y0"])]
    if not empty.empty:
        raise ValueError(f"{len(empty)} boxes are empty (need x1 > x0 and y1 > y0), e.g. {empty.iloc[0].to_dict()}")
    kept = list(BOX_COLUMNS) + ([TARGET_COLUMN] if TARGET_COLUMN in frame.columns else [])
    frame = frame[kept].reset_index(drop=True)
    if TARGET_COLUMN in frame.columns:
        frame[TARGET_COLUMN] = frame[TARGET_COLUMN].astype(str).str.strip()
    return frame


def boxes_for_target(boxes: pd.DataFrame, class_id: int, names: list[str] | None = None) -> pd.DataFrame:
    """The boxes of one class: those whose ``target`` is its id or name (boxes without the column outline
    whatever the run explains, and are all kept)."""
    if TARGET_COLUMN not in boxes.columns:
        return boxes
    accepted = {str(class_id)} | ({names[class_id]} if names is not None and class_id < len(names) else set())
    return boxes[boxes[TARGET_COLUMN].isin(accepted)].reset_index(drop=True)


def boxes_by_image(boxes: pd.DataFrame) -> dict[str, np.ndarray]:
    """``image_id -> (n, 4)`` array of that image's boxes (x0, y0, x1, y1)."""
    return {image_id: group[list(BOX_COLUMNS[1:])].to_numpy() for image_id, group in boxes.groupby("image_id")}


def peak(heatmap: np.ndarray) -> tuple[int, int] | None:
    """(x, y) of the first maximum, or None for a constant map (no peak to point with)."""
    if heatmap.size == 0 or not np.isfinite(heatmap).any():
        return None
    values = np.where(np.isfinite(heatmap), heatmap, -np.inf)
    if float(values.max()) <= float(np.nanmin(heatmap)):
        return None
    y, x = np.unravel_index(int(np.argmax(values)), values.shape)
    return int(x), int(y)


def is_hit(point: tuple[int, int] | None, boxes: np.ndarray, tolerance: float = 0.0) -> bool:
    """Whether a peak lies in any box ``(n, 4)``; ``tolerance`` grows each box by that many pixels."""
    if point is None:
        return False
    x, y = point
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return bool(
        np.any(
            (b[:, 0] - tolerance <= x)
            & (x < b[:, 2] + tolerance)
            & (b[:, 1] - tolerance <= y)
            & (y < b[:, 3] + tolerance)
        )
    )


def box_area_fraction(boxes: np.ndarray, height: int, width: int) -> float:
    """Fraction of the image covered by the union of boxes (clipped to the image)."""
    return float(box_mask(boxes, height, width).mean())


def pointing_game(
    run,
    boxes: str | os.PathLike | pd.DataFrame,
    methods: Sequence[str] | None = None,
    blocks: Sequence[int] = BLOCKS,
    *,
    target: int | str = 0,
    tolerance: float = 0.0,
    per_image: bool = False,
) -> pd.DataFrame:
    """Hit rate per map (CAM and every method x block) over the run's images that have a box.

    Returns one row per map: ``method, block, hits, images, hit_rate, random_baseline, flat_maps``
    (CAM has ``block`` 4). With ``per_image=True`` it returns one row per image and map instead.
    Images without an ``ok`` status are left out (they have no maps). ``target``: a class name, or a
    position along the run's target axis; boxes with a ``target`` column count for their class only.
    """
    boxes = read_boxes(boxes)
    classes, position = fixed_classes(run.record), target_position(run.record, target)
    if classes is not None:
        boxes = boxes_for_target(boxes, classes[position], class_names(run.record))
    index = run.index[run.index["status"] == "ok"]
    scored = index[index["image_id"].isin(boxes["image_id"])]
    if scored.empty:
        raise ValueError(
            f"no successfully explained image of run {run.run_id} has a box "
            f"({len(boxes)} boxes, e.g. {boxes['image_id'].iloc[0] if len(boxes) else '-'})"
        )
    grouped = boxes_by_image(boxes)
    size = run.settings.size
    geometries = [
        Geometry(int(r.orig_height), int(r.orig_width), size, str(r.resize_mode)) for r in scored.itertuples()
    ]
    areas = [box_area_fraction(grouped[i], g.orig_height, g.orig_width) for i, g in zip(scored["image_id"], geometries)]
    rows = scored["row"].to_numpy()
    records = []
    for key in map_keys(methods or run.methods, blocks, target=position):
        raw = run.read_maps(key, rows=rows)
        for image_id, geometry, area, one in zip(scored["image_id"], geometries, areas, raw):
            point = peak(geometry.to_original(one))
            records.append(
                {
                    "image_id": image_id,
                    "method": key.method,
                    "block": key.block,
                    "hit": is_hit(point, grouped[image_id], tolerance),
                    "flat": point is None,
                    "box_fraction": area,
                }
            )
    detail = pd.DataFrame.from_records(records)
    if per_image:
        return detail
    table = detail.groupby(["method", "block"], sort=False).agg(
        hits=("hit", "sum"),
        images=("hit", "size"),
        hit_rate=("hit", "mean"),
        random_baseline=("box_fraction", "mean"),
        flat_maps=("flat", "sum"),
    )
    return table.reset_index()


def format_pointing_game(table: pd.DataFrame) -> str:
    """Hit rates as a method x block grid, CAM first, with the random baseline underneath."""
    grid = table.pivot(index="method", columns="block", values="hit_rate")
    order = ["cam"] + [m for m in grid.index if m != "cam"]
    grid = grid.loc[order]
    grid.columns = [f"block {b}" for b in grid.columns]
    images = int(table["images"].iloc[0])
    baseline = float(table["random_baseline"].iloc[0])
    text = grid.to_string(float_format=lambda v: f"{v:.3f}", na_rep="")
    return f"pointing game hit rate over {images} images with a lesion box\n{text}\nrandom baseline (mean box area fraction): {baseline:.3f}"
