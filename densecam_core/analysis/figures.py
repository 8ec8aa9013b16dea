"""Figures for people: a per-image panel (radiograph | CAM | Grad-CAM blocks 1-4) and a contact sheet.

Built on ``Run.overlay`` so the maps are placed exactly as the store's geometry says.
Matplotlib runs headless (Agg); each function writes a PNG and returns its path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import IO

import numpy as np
import pandas as pd

from densecam_core.data.decode import as_rgb
from densecam_core.vocabulary import BLOCKS, MapKey


def headless_pyplot():
    """pyplot on the Agg backend, unless a notebook's inline backend is active (then keep it)."""
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw_boxes(axis, boxes: np.ndarray | None) -> None:
    from matplotlib.patches import Rectangle

    for x0, y0, x1, y1 in [] if boxes is None else np.asarray(boxes).reshape(-1, 4):
        axis.add_patch(
            Rectangle(
                (x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="white", linewidth=1.2, linestyle="--"
            )
        )


def image_panel(
    run,
    image_id: str,
    path: str | os.PathLike | IO[bytes],
    *,
    method: str = "gradcam",
    boxes: np.ndarray | None = None,
    title: str | None = None,
) -> str:
    """One row: the radiograph, CAM, then ``method`` at blocks 1-4; lesion boxes dashed if given."""
    plt = headless_pyplot()
    record = run.index.set_index("image_id").loc[image_id]
    panels = [("radiograph", as_rgb(run.image(image_id)))]
    panels.append(("CAM (block 4)", run.overlay(image_id, "cam")))
    panels += [(f"{method} block {b}", run.overlay(image_id, method, b)) for b in BLOCKS]
    figure, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.0))
    for axis, (name, picture) in zip(axes, panels):
        axis.imshow(picture, cmap="gray" if picture.ndim == 2 else None)
        _draw_boxes(axis, boxes)
        axis.set_title(name, fontsize=9)
        axis.axis("off")
    label = "unlabelled" if pd.isna(record["label"]) else ("abnormal" if int(record["label"]) == 1 else "normal")
    figure.suptitle(title or f"{image_id}\n{label}, P(abnormal) = {float(record['prob']):.2f}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100, format=None if isinstance(path, (str, os.PathLike)) else "png")
    plt.close(figure)
    return os.fspath(path) if isinstance(path, (str, os.PathLike)) else str(getattr(path, "name", ""))


def contact_sheet(
    run,
    image_ids: Sequence[str],
    path: str | os.PathLike,
    *,
    method: str = "cam",
    block: int | None = 4,
    boxes: dict[str, np.ndarray] | None = None,
    columns: int = 6,
) -> str:
    """A grid of overlays of one map for many images, boxes dashed, probability in each title."""
    plt = headless_pyplot()
    if not image_ids:
        raise ValueError("contact_sheet needs at least one image id")
    rows = -(-len(image_ids) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.4 * rows), squeeze=False)
    index = run.index.set_index("image_id")
    for axis in axes.ravel():
        axis.axis("off")
    for axis, image_id in zip(axes.ravel(), image_ids):
        axis.imshow(run.overlay(image_id, method, block))
        _draw_boxes(axis, None if boxes is None else boxes.get(image_id))
        study = image_id.rsplit("/", 2)
        axis.set_title(f"{'/'.join(study[-2:])[-28:]}\nP={float(index.loc[image_id, 'prob']):.2f}", fontsize=7)
    what = MapKey.of(method, block).label
    figure.suptitle(f"{what} - run {run.run_id[:12]}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return os.fspath(path)
