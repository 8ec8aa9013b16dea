"""The legend a Secondary Capture shows: burned into the pixels of the overlay (method, block, run, "not for diagnosis"), since a Secondary Capture carries no overlay plane
every viewer draws."""

from __future__ import annotations

import numpy as np

from densecam_core.export.dicom_objects import NOT_FOR_DIAGNOSIS, MapLabel


def burned_overlay(overlay: np.ndarray, label: MapLabel) -> np.ndarray:
    """``overlay`` (``Run.overlay``: (H, W, 3) uint8) with the legend's lines written in its top-left corner on a dark band, at a
    size that reads on the source's own grid (a 2,000-pixel CR gets larger letters than a 256-pixel one)."""
    from PIL import Image, ImageDraw, ImageFont

    picture = Image.fromarray(overlay)
    lines = [f"densecam {label.what}", f"run {label.run_id}", NOT_FOR_DIAGNOSIS.split(" - ")[1].upper()]
    size = max(10, min(picture.size) // 40)
    font = ImageFont.load_default(size=size)
    draw = ImageDraw.Draw(picture)
    widths = [draw.textlength(line, font=font) for line in lines]
    height = int(len(lines) * size * 1.25) + size // 2
    draw.rectangle((0, 0, int(max(widths)) + size, height), fill=(0, 0, 0))
    for number, line in enumerate(lines):
        draw.text((size // 2, size // 4 + int(number * size * 1.25)), line, fill=(255, 255, 255), font=font)
    return np.asarray(picture)
