"""What ``localise`` is given: true boxes (checked row by row against the images they outline), true masks, and
the calibration split that thresholds are chosen on, drawn by study so no study sits on both sides."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from densecam_core import fileio
from densecam_core.analysis.pointing import BOX_COLUMNS
from densecam_core.analysis.regions import box_mask

MAX_BOX_FILE_BYTES = 256 * 2**20
MAX_ID_FILE_BYTES = 64 * 2**20


def read_box_file(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The box table as written (``image_id,x0,y0,x1,y1[,target]``); a file that is missing, not a table or lacks
    a column is refused naming it."""
    try:
        data = fileio.read_regular_file(path, max_bytes=MAX_BOX_FILE_BYTES)
    except FileNotFoundError:
        raise FileNotFoundError(f"no box file at {path}: give the lesion boxes as image_id,x0,y0,x1,y1") from None
    import io

    try:
        frame = pd.read_csv(io.BytesIO(data), dtype={"image_id": str, "target": str})
    except (ValueError, pd.errors.ParserError) as exc:
        raise ValueError(f"the box file {path} is not a CSV table: {exc}") from None
    missing = [c for c in BOX_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"the box file {path} needs columns {', '.join(BOX_COLUMNS)}; it lacks {', '.join(missing)}")
    return frame


def check_boxes(boxes: pd.DataFrame, sizes: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split boxes into those usable and those skipped (with the row of the file and the reason): coordinates
    that are not numbers, negative, zero-sized, or outside their image (``sizes``: image_id, orig_height,
    orig_width of the run's ok images). Boxes of images the run does not have are neither: they are left out."""
    frame = boxes.reset_index(drop=True).assign(file_row=lambda f: f.index + 2)  # the header is row 1
    frame = frame[frame["image_id"].isin(sizes["image_id"])]
    coords = frame[list(BOX_COLUMNS[1:])].apply(pd.to_numeric, errors="coerce")
    frame = frame.assign(**{c: coords[c] for c in coords.columns}).merge(sizes, on="image_id", how="left")
    reason = pd.Series("", index=frame.index, dtype=object)
    checks = [
        (~np.isfinite(frame[list(BOX_COLUMNS[1:])].to_numpy(dtype=np.float64)).all(axis=1), "not a number"),
        ((frame[list(BOX_COLUMNS[1:])] < 0).any(axis=1), "negative coordinate"),
        ((frame["x1"] <= frame["x0"]) | (frame["y1"] <= frame["y0"]), "zero-sized or inverted (need x1 > x0, y1 > y0)"),
        ((frame["x1"] > frame["orig_width"]) | (frame["y1"] > frame["orig_height"]), "outside its image"),
    ]
    for bad, why in checks:
        reason = reason.where(~(bad & (reason == "")), why)
    skipped = frame.loc[reason != "", ["file_row", *BOX_COLUMNS]].assign(reason=reason[reason != ""])
    kept = frame.loc[reason == ""].drop(columns=["file_row", "orig_height", "orig_width"]).reset_index(drop=True)
    return kept, skipped.reset_index(drop=True)


def read_mask(folder: str, image_id: str, height: int, width: int) -> np.ndarray | None:
    """The true mask of an image: ``FOLDER/<image id>.png`` (non-zero = lesion), the image's size; None when the
    folder has none for it. A mask of another size, or a path leaving the folder, is refused."""
    from PIL import Image

    path = os.path.join(folder, image_id + ".png")
    fileio.refuse_outside(path, folder)
    if not os.path.exists(path):
        return None
    import io

    with Image.open(io.BytesIO(fileio.read_regular_file(path, max_bytes=MAX_BOX_FILE_BYTES, within=folder))) as img:
        if img.size != (width, height):
            raise ValueError(f"the mask {path} is {img.size[0]}x{img.size[1]}; its image is {width}x{height}")
        return np.asarray(img.convert("L")) > 0


def truth_on_grid(boxes: np.ndarray, height: int, width: int, mask: np.ndarray | None) -> np.ndarray:
    """The true mask on a ``height`` x ``width`` grid: the mask resampled (nearest), else the boxes' union."""
    if mask is None:
        return box_mask(boxes, height, width)
    rows = np.minimum((np.arange(height) + 0.5) * mask.shape[0] / height, mask.shape[0] - 1).astype(np.int64)
    cols = np.minimum((np.arange(width) + 0.5) * mask.shape[1] / width, mask.shape[1] - 1).astype(np.int64)
    return mask[np.ix_(rows, cols)]


@dataclass(frozen=True)
class Split:
    """Which images thresholds are chosen on (``calibration``) and which are reported, and how that was drawn."""

    calibration: frozenset[str]
    reported: frozenset[str]
    how: str


def split_images(images: pd.DataFrame, calibrate: float | list[str], *, seed: int, min_images: int) -> Split:
    """Draw the calibration split from ``images`` (image_id, study_id): a ``calibrate`` fraction of the studies
    (seeded), or the image ids listed. Refused when either side would hold fewer than ``min_images`` images."""
    ids = images["image_id"].astype(str)
    if isinstance(calibrate, list):
        chosen = set(calibrate)
        unknown = len(chosen - set(ids))
        how = f"the {len(chosen)} image ids listed ({unknown} of them without a box or not in the run)"
    else:
        if not 0.0 < calibrate < 1.0:
            raise ValueError(f"the calibration fraction must be between 0 and 1, got {calibrate}")
        studies = np.array(sorted(images["study_id"].astype(str).unique()))
        rng = np.random.default_rng(seed)
        take = max(1, round(calibrate * len(studies)))
        drawn = set(rng.choice(studies, size=min(take, len(studies)), replace=False))
        chosen = set(ids[images["study_id"].astype(str).isin(drawn)])
        how = f"{len(drawn)} of {len(studies)} studies ({calibrate:.0%}), seed {seed}"
    calibration = frozenset(i for i in ids if i in chosen)
    reported = frozenset(i for i in ids if i not in chosen)
    if len(calibration) < min_images or len(reported) < min_images:
        raise ValueError(
            f"the calibration split leaves {len(calibration)} images to choose thresholds on and {len(reported)} to "
            f"report on, of {len(ids)} with a box; each side needs at least {min_images} (change the fraction or "
            "the file, or lower the minimum)"
        )
    return Split(calibration, reported, how)


def read_image_ids(path: str | os.PathLike[str]) -> list[str]:
    """Image ids, one per line (a header ``image_id`` allowed), for ``--calibrate FILE``."""
    try:
        text = fileio.read_regular_file(path, max_bytes=MAX_ID_FILE_BYTES).decode("utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no calibration file at {path}: give a fraction between 0 and 1, or a file of image ids"
        ) from None
    ids = [line.split(",")[0].strip() for line in text.splitlines() if line.strip()]
    return [i for i in ids if i != "image_id"]
