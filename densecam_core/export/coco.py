"""Weak-label files other tools read, written as a stream (memory holds one image's regions, not the dataset's):
COCO detection JSON (boxes, RLE masks, scores) and CheXlocalize's segmentation JSON. Each is built under a
temporary name and renamed into place when complete, so a killed export leaves no partial file visible."""

from __future__ import annotations

import json
from typing import IO, Any

import numpy as np


def rle(mask: np.ndarray) -> dict[str, Any]:
    """A mask ``(height, width)`` as COCO's compressed RLE (``size`` [h, w], ``counts`` text), by pycocotools."""
    from pycocotools import mask as coco_mask

    encoded = coco_mask.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


class CocoStream:
    """``coco.json``: ``info``, ``images`` and ``categories`` first, then each annotation as it is made."""

    def __init__(self, handle: IO[str], info: dict[str, Any], images: list[dict], categories: list[dict]) -> None:
        self.handle, self.count = handle, 0
        head = json.dumps({"info": info, "licenses": [], "images": images, "categories": categories})
        handle.write(head[:-1] + ', "annotations": [')

    def add(self, image_id: int, category_id: int, box: tuple[int, int, int, int], mask: np.ndarray, score: float,
            map_name: str) -> None:  # fmt: skip
        """One region: ``box`` (x0, y0, x1, y1; x1, y1 exclusive) becomes COCO's [x, y, width, height]."""
        x0, y0, x1, y1 = box
        self.count += 1
        annotation = {
            "id": self.count,
            "image_id": image_id,
            "category_id": category_id,
            "bbox": [int(x0), int(y0), int(x1 - x0), int(y1 - y0)],
            "area": int(np.count_nonzero(mask)),
            "segmentation": rle(mask),
            "score": round(float(score), 6),
            "iscrowd": 0,
            "map": map_name,
        }
        self.handle.write(("," if self.count > 1 else "") + json.dumps(annotation))

    def close(self) -> None:
        self.handle.write("]}")


class ChexlocalizeStream:
    """A map's masks in CheXlocalize's layout: ``{image id: {target: {"size": [h, w], "counts": RLE}}}``."""

    def __init__(self, handle: IO[str]) -> None:
        self.handle, self.count = handle, 0
        self.current: str | None = None
        handle.write("{")

    def add(self, image_id: str, target: str, mask: np.ndarray) -> None:
        """Masks of one image must come together (images in order, targets within)."""
        if image_id != self.current:
            if self.current is not None:
                self.handle.write("}")
            self.handle.write(("," if self.count else "") + json.dumps(image_id) + ": {")
            self.current, self.count, first = image_id, self.count + 1, True
        else:
            first = False
        self.handle.write(("" if first else ",") + json.dumps(target) + ": " + json.dumps(rle(mask)))

    def close(self) -> None:
        self.handle.write(("}" if self.current is not None else "") + "}")
