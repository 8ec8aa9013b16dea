"""A synthetic MURA v1.1 tree with known lesion boxes, for tests, benchmarks and the demo.

No dataset can be downloaded where densecam is built, so this writes exactly MURA's layout and CSV
formats: both splits, seven body parts, patients with 1-4 studies of 1-5 views, grey and RGB PNGs
of varied size. Images look like radiographs (bright bones and soft tissue on a dark, noisy
background); in abnormal studies most views carry a lesion (a bright metal plate with screws, or
a fracture line with a sclerotic rim) whose box goes to ``lesion_boxes.csv``.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from densecam_core.data.manifest import BODY_PARTS, MURA_DIR
from densecam_core.data.shortcuts import Shortcut

VALID_FIRST_PATIENT = 11185  # MURA's valid patients are numbered after its train patients


@dataclass(frozen=True)
class PlannedImage:
    image_id: str
    split: str
    abnormal: bool
    lesion: bool
    seed: int


@dataclass(frozen=True)
class SynthSummary:
    root: Path
    images: int
    studies: int
    patients: int
    lesions: int
    shortcuts: int = 0


def _plan(
    images: int, rng: np.random.Generator, valid_fraction: float, lesion_rate: float
) -> tuple[list[PlannedImage], list[tuple[str, int]]]:
    planned: list[PlannedImage] = []
    studies: list[tuple[str, int]] = []
    counters = {"train": 0, "valid": VALID_FIRST_PATIENT - 1}
    part_cycle = 0
    while len(planned) < images:
        # keep both splits populated even for tiny trees: every 3rd patient of the first ones is valid
        split = "valid" if (rng.random() < valid_fraction or (len(studies) < 6 and len(studies) % 3 == 2)) else "train"
        counters[split] += 1
        patient = f"patient{counters[split]:05d}"
        study_numbers: dict[str, int] = {}
        for _ in range(int(rng.integers(1, 5))):
            body_part = (
                BODY_PARTS[part_cycle % len(BODY_PARTS)] if rng.random() < 0.7 else BODY_PARTS[int(rng.integers(7))]
            )
            part_cycle += 1
            number = study_numbers.get(body_part, 0) + 1
            study_numbers[body_part] = number
            abnormal = bool(rng.random() < 0.45)
            folder = (
                f"{MURA_DIR}/{split}/XR_{body_part}/{patient}/study{number}_{'positive' if abnormal else 'negative'}"
            )
            views = int(rng.integers(1, 6))
            lesion_view = int(rng.integers(views))
            for view in range(views):
                if len(planned) >= images:
                    break
                lesion = abnormal and (view == lesion_view or rng.random() < lesion_rate)
                planned.append(
                    PlannedImage(f"{folder}/image{view + 1}.png", split, abnormal, lesion, int(rng.integers(2**31)))
                )
            studies.append((folder + "/", int(abnormal)))
            if len(planned) >= images:
                break
    return planned, studies


def _rotated_rect(cx: float, cy: float, length: float, width: float, angle: float) -> list[tuple[float, float]]:
    ca, sa = math.cos(angle), math.sin(angle)
    corners = [(-length / 2, -width / 2), (length / 2, -width / 2), (length / 2, width / 2), (-length / 2, width / 2)]
    return [(cx + x * ca - y * sa, cy + x * sa + y * ca) for x, y in corners]


def render(
    image: PlannedImage,
    min_side: int,
    max_side: int,
    rgb_fraction: float,
    lesion_scale: float = 1.0,
    shortcut: Shortcut | None = None,
) -> tuple[Image.Image, tuple[int, int, int, int] | None, tuple[int, int, int, int] | None, list | None]:
    """Draw one radiograph-like image; returns it, its lesion box (x0, y0, x1, y1) or None, the box of the
    planted shortcut or None, and the lesion's outline (the polygon drawn) or None."""
    rng = np.random.default_rng(image.seed)
    long_side = int(rng.integers(min_side, max_side + 1))
    short_side = int(long_side * rng.uniform(0.6, 1.0))
    height, width = (long_side, short_side) if rng.random() < 0.7 else (short_side, long_side)
    canvas = Image.new("L", (width, height), int(rng.integers(10, 35)))
    draw = ImageDraw.Draw(canvas)
    vertical = height >= width
    axis_angle = (math.pi / 2 if vertical else 0.0) + rng.uniform(-0.25, 0.25)
    cx, cy = width / 2 + rng.uniform(-0.08, 0.08) * width, height / 2 + rng.uniform(-0.08, 0.08) * height
    draw.ellipse(
        [cx - 0.38 * width, cy - 0.47 * height, cx + 0.38 * width, cy + 0.47 * height], fill=int(rng.integers(55, 80))
    )
    bones = []
    for b in range(int(rng.integers(1, 3))):
        offset = (b - 0.5) * 0.22 * min(width, height) if b else rng.uniform(-0.05, 0.05) * min(width, height)
        bx, by = cx - offset * math.sin(axis_angle), cy + offset * math.cos(axis_angle)
        length, thick = 0.8 * max(width, height), rng.uniform(0.09, 0.14) * min(width, height)
        draw.polygon(_rotated_rect(bx, by, length, thick, axis_angle), fill=int(rng.integers(170, 205)))
        draw.polygon(_rotated_rect(bx, by, length, thick * 0.45, axis_angle), fill=int(rng.integers(120, 150)))
        bones.append((bx, by, thick))
    box, points = None, None
    if image.lesion:
        bx, by, thick = bones[int(rng.integers(len(bones)))]
        shift = rng.uniform(-0.25, 0.25) * max(width, height)
        lx, ly = bx + shift * math.cos(axis_angle), by + shift * math.sin(axis_angle)
        if rng.random() < 0.65:  # metal plate with screws
            # above scale 1 a plate may outgrow the bone's width (a plate seen face-on, or a cast)
            plate_length = min(lesion_scale * rng.uniform(0.18, 0.28), 0.6) * max(width, height)
            plate = _rotated_rect(lx, ly, plate_length, lesion_scale * thick * 0.5, axis_angle)
            draw.polygon(plate, fill=255)
            for t in (-0.3, 0.0, 0.3):
                reach = t * 0.2 * lesion_scale * max(width, height)
                sx, sy = lx + reach * math.cos(axis_angle), ly + reach * math.sin(axis_angle)
                r = max(1.5, thick * 0.12)
                draw.ellipse([sx - r, sy - r, sx + r, sy + r], fill=90)
            points = plate
        else:  # fracture line across the bone, with a bright sclerotic rim
            across = axis_angle + math.pi / 2 + rng.uniform(-0.4, 0.4)
            rim = _rotated_rect(lx, ly, lesion_scale * thick * 1.5, lesion_scale * thick * 0.5, across)
            draw.polygon(rim, fill=240)
            draw.line(
                _rotated_rect(lx, ly, lesion_scale * thick * 1.4, 0, across)[:2],
                fill=15,
                width=max(2, int(thick * 0.12)),
            )
            points = rim
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        box = (
            max(0, math.floor(min(xs))),
            max(0, math.floor(min(ys))),
            min(width, math.ceil(max(xs))),
            min(height, math.ceil(max(ys))),
        )
    planted = shortcut.draw(canvas, image.seed) if shortcut and shortcut.chosen(image.seed, image.abnormal) else None
    blurred = canvas.filter(ImageFilter.GaussianBlur(radius=1.2))
    pixels = np.asarray(blurred, dtype=np.float32) + rng.normal(0, 6, size=(height, width)).astype(np.float32)
    grey = np.clip(pixels, 0, 255).astype(np.uint8)
    if rng.random() < rgb_fraction:
        return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2), "RGB"), box, planted, points
    return Image.fromarray(grey, "L"), box, planted, points


def _write_split_tables(mura: Path, planned: list[PlannedImage], studies: list[tuple[str, int]]) -> None:
    """MURA's own CSVs: each split's image paths and labelled studies."""
    for split in ("train", "valid"):
        with open(mura / f"{split}_image_paths.csv", "w", newline="") as handle:
            handle.writelines(f"{p.image_id}\n" for p in planned if p.split == split)
        with open(mura / f"{split}_labeled_studies.csv", "w", newline="") as handle:
            handle.writelines(f"{folder},{label}\n" for folder, label in studies if f"/{split}/" in folder)


def _write_mask(path: Path, size: tuple[int, int], outline: list) -> None:
    """A lesion's outline filled (255) on an image-sized black mask."""
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).polygon(outline, fill=255)
    path.parent.mkdir(parents=True, exist_ok=True)
    mask.save(path)


def generate_mura(
    out: str | os.PathLike,
    images: int = 1000,
    seed: int = 0,
    *,
    min_side: int = 160,
    max_side: int = 512,
    valid_fraction: float = 0.15,
    lesion_rate: float = 0.8,
    rgb_fraction: float = 0.2,
    lesion_scale: float = 1.0,
    threads: int = 2,
    dicom: bool = False,
    shortcut: Shortcut | None = None,
    lesion_masks: bool = False,
) -> SynthSummary:
    """Write a MURA-v1.1-shaped tree of ``images`` PNGs under ``out``; deterministic for ``seed``.

    ``dicom``: DICOM files (``image1.dcm``; 12-bit CR, MONOCHROME1 and MONOCHROME2, windowed,
    uncompressed, RLE or JPEG 2000 lossless: ``data.synth_dicom``) instead of PNGs, the same pictures.

    ``lesion_scale`` enlarges plates (length capped at 0.6 of the long side) and fractures. The demo
    uses 3: a lesion is then at least about one block-4 cell wide (1/6 of the side at its 192 px
    input), the resolution a CAM peak has.

    ``shortcut``: a text token planted in a share of the abnormal images (``data.shortcuts``), named with its
    box in ``shortcuts.csv``: ground truth for ``densecam audit``.

    ``lesion_masks``: each lesion's outline as a mask too, ``lesion_masks/<image id>.png`` (255 = lesion, the
    image's size): true masks for ``densecam localise --masks``.
    """
    if images < 1:
        raise ValueError("images must be >= 1")
    if not 16 <= min_side <= max_side <= 512:
        raise ValueError(f"need 16 <= min_side <= max_side <= 512, got {min_side}, {max_side}")
    if not 0.25 <= lesion_scale <= 4:
        raise ValueError(f"lesion_scale must be in 0.25..4, got {lesion_scale}")
    root = Path(out)
    rng = np.random.default_rng(seed)
    planned, studies = _plan(images, rng, valid_fraction, lesion_rate)
    if dicom:
        planned = [dataclasses.replace(p, image_id=p.image_id.removesuffix(".png") + ".dcm") for p in planned]

    def write(item: PlannedImage) -> tuple[tuple[int, int, int, int] | None, tuple[int, int, int, int] | None]:
        picture, box, planted, outline = render(item, min_side, max_side, rgb_fraction, lesion_scale, shortcut)
        if lesion_masks and outline is not None:
            _write_mask(root / "lesion_masks" / (item.image_id + ".png"), picture.size, outline)
        path = root / item.image_id
        path.parent.mkdir(parents=True, exist_ok=True)
        if dicom:
            from densecam_core.data.synth_dicom import write_dicom_radiograph

            body_part = item.image_id.split("/")[2].removeprefix("XR_")
            write_dicom_radiograph(
                path, np.asarray(picture), image_id=item.image_id, body_part=body_part, seed=item.seed
            )
        else:
            picture.save(path, compress_level=1)
        return box, planted

    with ThreadPoolExecutor(max(1, threads)) as pool:
        drawn = list(pool.map(write, planned))
    boxes = [box for box, _ in drawn]
    if shortcut is not None:
        with open(root / "shortcuts.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image_id", "artefact", "x0", "y0", "x1", "y1"])
            writer.writerows([p.image_id, shortcut.name, *s] for p, (_, s) in zip(planned, drawn) if s is not None)
    _write_split_tables(root / MURA_DIR, planned, studies)
    with open(root / "lesion_boxes.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "x0", "y0", "x1", "y1"])
        writer.writerows([p.image_id, *box] for p, box in zip(planned, boxes) if box is not None)
    patients = {p.image_id.split("/")[3] + p.split for p in planned}
    planted = sum(s is not None for _, s in drawn)
    return SynthSummary(root, len(planned), len(studies), len(patients), sum(b is not None for b in boxes), planted)
