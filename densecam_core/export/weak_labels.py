"""Weak labels of every explained image, cut at the thresholds ``localise_run`` chose on its calibration split:
``coco.json`` (a box, an RLE mask and a score per region), ``chexlocalize/<map>.json`` (a mask per image and
target), and for runs explained from DICOM a binary Segmentation per image in ``seg/`` (a segment per map and
target) referencing its source. Regions are cut on each image's full pixel grid; a chunk of images at a time."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from densecam_core import fileio
from densecam_core.analysis.localise import LocaliseResult, ScoredMap
from densecam_core.analysis.regions import mask_at, regions
from densecam_core.data.geometry import Geometry
from densecam_core.export.coco import ChexlocalizeStream, CocoStream
from densecam_core.export.dicom_objects import MapLabel, SourceProblem, binary_segmentation
from densecam_core.export.run_export import file_stem, read_source
from densecam_core.store.run import Run
from densecam_core.store.targets import with_target_probability

CHUNK_IMAGES = 32
COCO_FILE = "coco.json"
CHEXLOCALIZE_DIR = "chexlocalize"
SEG_DIR = "seg"
SEG_SUMMARY = "seg-summary.csv"


@dataclass
class WeakLabelSummary:
    images: int = 0
    annotations: int = 0
    segmentations: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # image id -> why it has no Segmentation


def export_weak_labels(
    run: Run,
    result: LocaliseResult,
    out: str | os.PathLike[str],
    *,
    dicom: bool = False,
    identifiers: Callable[[str, object], str | None] | None = None,
) -> WeakLabelSummary:
    """Write the weak labels of ``run``'s ok images into the folder ``out`` (which exists)."""
    folder = Path(out)
    rows = run.index[run.index["status"] == "ok"].sort_values("row").reset_index(drop=True)
    keys = result.maps
    summary = WeakLabelSummary(images=len(rows))
    info = {
        "description": f"densecam weak labels of run {run.run_id}",
        "run_id": run.run_id,
        "calibration_images": sorted(result.split.calibration),
        "calibration": result.split.how,
        "thresholds": {k.name: _thresholds(result, k) for k in keys},
        "settings": fileio.strict_json(result.settings),
    }
    images = [
        {
            "id": i + 1,
            "file_name": str(r.path),
            "densecam_image_id": str(r.image_id),
            "width": int(r.orig_width),
            "height": int(r.orig_height),
        }
        for i, r in enumerate(rows.itertuples())
    ]
    categories = [{"id": j + 1, "name": k.name, "supercategory": k.target_name} for j, k in enumerate(keys)]
    chex_dir = fileio.real_subfolder(folder, CHEXLOCALIZE_DIR)
    seg_dir = fileio.real_subfolder(folder, SEG_DIR) if dicom else None
    with contextlib.ExitStack() as files:
        coco = CocoStream(files.enter_context(fileio.exclusive_file(folder / COCO_FILE, text=True)), info, images,
                          categories)  # fmt: skip
        chex = {}
        for key in keys:
            name = key.name.rsplit("/", 1)[0].replace("/", "_")
            if name not in chex:
                chex[name] = ChexlocalizeStream(
                    files.enter_context(fileio.exclusive_file(chex_dir / f"{name}.json", text=True))
                )
        for start in range(0, len(rows), CHUNK_IMAGES):
            part = rows.iloc[start : start + CHUNK_IMAGES]
            masks = _chunk(run, result, part, start, keys, coco, chex)
            if seg_dir is not None:
                _segmentations(run, result, part, masks, seg_dir, identifiers, summary)
        coco.close()
        for stream in chex.values():
            stream.close()
    summary.annotations = coco.count
    if seg_dir is not None:
        table = pd.DataFrame(sorted(summary.skipped.items()), columns=["image_id", "reason"])
        fileio.write_file_exclusive(folder / SEG_SUMMARY, lambda h: h.write(table.to_csv(index=False).encode()))
    return summary


def _thresholds(result: LocaliseResult, key: ScoredMap) -> dict[str, Any]:
    box, mask = result.levels[key.name]
    steps = result.settings["steps"]
    return {"tau": box / steps, "tau_mask": None if mask is None else mask / steps}


def map_file_name(key: ScoredMap) -> str:
    """The CheXlocalize file of a map (every target of it): ``cam_block4``."""
    return f"{key.method}_block{key.block}"


def _chunk(
    run: Run,
    result: LocaliseResult,
    part: pd.DataFrame,
    offset: int,
    keys: list[ScoredMap],
    coco: CocoStream,
    chex: dict[str, ChexlocalizeStream],
) -> dict[str, list[tuple[str, np.ndarray]]]:
    """One chunk's regions and masks of every map, written to the streams (per map: image by image, its targets
    together); each image's masks returned for its Segmentation."""
    per_image: dict[str, list[tuple[str, np.ndarray]]] = {str(i): [] for i in part["image_id"]}
    by_map: dict[str, list[tuple[int, ScoredMap]]] = {}
    for category, key in enumerate(keys, start=1):
        by_map.setdefault(map_file_name(key), []).append((category, key))
    for name, members in by_map.items():
        stored = members[0][1].stored  # every target of the map at once: (n, K, h, w)
        maps = run.maps(stored.method, stored.block, rows=part["row"].to_numpy())
        probs = {
            k.target: with_target_probability(part, run.record, k.target)["prob"].to_numpy(float) for _, k in members
        }
        for number, (record, raw) in enumerate(zip(part.itertuples(), maps)):
            geometry = Geometry(int(record.orig_height), int(record.orig_width), run.settings.size,
                                str(record.resize_mode))  # fmt: skip
            for category, key in members:
                values = geometry.to_original(raw[key.target])
                shown = result.settings.get("min_probability") is None or probs[key.target][number] >= float(
                    result.settings["min_probability"]
                )
                mask = _cut(
                    values if shown else np.zeros_like(values), result, key, coco, offset + number + 1, category
                )
                chex[name].add(str(record.image_id), key.target_name, mask)
                per_image[str(record.image_id)].append((key.name, mask))
    return per_image


def _cut(
    values: np.ndarray, result: LocaliseResult, key: ScoredMap, coco: CocoStream, image: int, category: int
) -> np.ndarray:
    """An image's regions of one map and target into ``coco``; returns its mask. A map below the probability
    cutoff comes as zeros: no region, an empty mask."""
    steps = int(result.settings["steps"])
    box_level, mask_level = result.levels[key.name]
    largest_only = result.settings["box_rule"] == "largest"
    for region in regions(values, box_level, steps, largest_only=largest_only):
        coco.add(image, category, region.box, region.mask, region.score, key.name)
    return mask_at(values, mask_level, steps)


def _segmentations(
    run: Run,
    result: LocaliseResult,
    part: pd.DataFrame,
    masks: dict[str, list[tuple[str, np.ndarray]]],
    folder: Path,
    identifiers: Callable[[str, object], str | None] | None,
    summary: WeakLabelSummary,
) -> None:
    label = MapLabel(run.run_id, run.fingerprint, "weak labels", None, "", run.record.architecture)
    content = repr(sorted((name, result.levels[name]) for name in result.levels)) + repr(
        sorted(fileio.strict_json(result.settings).items())
    )
    for _, row in part.iterrows():
        image_id = str(row["image_id"])
        try:
            source = read_source(run, row, identifiers)
            seg = binary_segmentation(source, masks[image_id], label, content)
            path = folder / f"{file_stem(image_id)}.seg.dcm"
            _save(seg, path)
            summary.segmentations += 1
        except (SourceProblem, OSError, ValueError) as exc:
            summary.skipped[image_id] = str(exc)


def _save(dataset: Any, path: Path) -> None:
    fileio.write_file_exclusive(path, lambda handle: dataset.save_as(handle, enforce_file_format=True))
