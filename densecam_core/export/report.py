"""``write_report``: a run as a static page a clinician can browse (``DIR/index.html`` and its thumbnails).

The page needs nothing but a browser: no server, no network request (its style and script are inline,
its pictures are files beside it). Everything that can be refused is refused before a file is written:
maps the run lacks, a comparison run of another input size, boxes no image has, an output folder that
holds other files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from densecam_core import fileio
from densecam_core.analysis.comparison import compare_runs
from densecam_core.analysis.comparison_summary import most_changed
from densecam_core.data.errors import ImageError
from densecam_core.data.geometry import Geometry
from densecam_core.export import report_content as content
from densecam_core.export.report_audit import audit_section
from densecam_core.export.report_localise import localise_section
from densecam_core.export.report_page import Card, PageContent, render_page
from densecam_core.export.report_thumbnails import (
    THUMB_DIR,
    blend_map,
    shrink,
    thumbnail_name,
    thumbnail_shape,
    write_jpeg,
)
from densecam_core.export.run_export import output_folder
from densecam_core.store.layout import StoreError
from densecam_core.store.run import Run
from densecam_core.store.targets import target_position, with_target_probability
from densecam_core.vocabulary import BLOCKS

PAGE = "index.html"


@dataclass(frozen=True)
class ReportRequest:
    """What the page shows: the maps beside the radiograph and CAM (``(method, block)`` pairs), the class
    explained, how many cards each gallery holds, the thumbnails' longest side, lesion boxes."""

    maps: Sequence[tuple[str, int]] = (("gradcam", 4),)
    target: int | str = 0
    per_gallery: int = 24
    thumb_size: int = 192
    boxes: str | os.PathLike | None = None
    overwrite: bool = False


@dataclass(frozen=True)
class Panel:
    """One picture of a card: ``caption`` under it, ``key`` in its file name, and the run, method and block
    of the map it shows (no run: the radiograph itself)."""

    caption: str
    key: str
    run: Run | None = None
    method: str | None = None
    block: int | None = None


@dataclass(frozen=True)
class ReportResult:
    page: str
    cards: int
    pictures: int


def write_report(run: Run, out: str | os.PathLike, request: ReportRequest, compare: Run | None = None) -> ReportResult:
    """Write ``run``'s report page into the folder ``out``; with ``compare``, a gallery of the images whose
    explanation changed most between the two runs (maps of both side by side)."""
    _check_request(run, request, compare)
    index = with_target_probability(run.index, run.record, request.target)
    quality = _quality(run)
    pointing = _pointing(run, request)
    changed = _changed(run, compare, index, request)
    folder = output_folder(Path(out), request.overwrite)
    galleries = content.galleries(index, request.per_gallery, changed)
    panels = _panels(run, request, compare)
    pictures = _write_pictures(folder, galleries, panels, request)
    page = PageContent(
        audit=audit_section(run, folder, request.thumb_size),
        localisation=localise_section(run),
        record=run.record,
        target_title=content.target_title(run.record, request.target),
        index=index,
        errors=content.error_reasons(index),
        body_parts=content.body_part_table(index),
        quality=quality,
        pointing=pointing,
        compare_id=None if compare is None else compare.run_id,
        galleries=[(g, _cards(g, panels, pictures)) for g in galleries],
    )
    fs, root = fileio.filesystem(str(folder))
    fileio.write_bytes_atomic(fs, fileio.join(root, PAGE), render_page(page).encode("utf-8"))
    cards = sum(len(g.rows) for g in galleries)
    return ReportResult(str(folder / PAGE), cards, sum(len(p) for p in pictures.values() if not isinstance(p, str)))


def parse_maps(text: str) -> list[tuple[str, int]]:
    """``gradcam:4,layercam:3`` -> [("gradcam", 4), ("layercam", 3)]; a method alone means block 4."""
    maps = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        method, _, block = item.partition(":")
        if block and not block.isdigit():
            raise ValueError(f"`maps` {item!r}: the block after ':' must be one of {BLOCKS}")
        maps.append((method, int(block) if block else 4))
    if not maps:
        raise ValueError("`maps` needs at least one method[:block], e.g. gradcam:4")
    return maps


def _check_request(run: Run, request: ReportRequest, compare: Run | None) -> None:
    for method, block in request.maps:
        if method not in run.methods:
            raise StoreError(f"run {run.run_id} has no {method!r} maps; it has cam, {', '.join(run.methods)}")
        if block not in BLOCKS:
            raise ValueError(f"block {block} of {method!r} is not a dense block; choose one of {BLOCKS}")
    if request.per_gallery < 1 or request.thumb_size < 16:
        raise ValueError("each gallery needs at least one card, and thumbnails at least 16 pixels")
    if compare is not None:
        method, block = request.maps[0]
        if method not in compare.methods:
            raise StoreError(
                f"run {compare.run_id} has no {method!r} maps to compare; it has {', '.join(compare.methods)}"
            )
        if compare.run_id == run.run_id:
            raise ValueError("`compare` names the same run: pick another run to compare with")


def _quality(run: Run) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The evaluation's grid (verdicts per map) and its table (intervals) when the run has been scored."""
    from densecam_core.evaluation.quality import metrics_table, summary_grid

    scores = run.metrics()
    if scores.empty or (scores["metric"] == "error").all():  # not evaluated, or no image could be scored
        return None
    table = metrics_table(scores, run.index)
    return summary_grid(table), table


def _pointing(run: Run, request: ReportRequest) -> pd.DataFrame | None:
    if request.boxes is None:
        return None
    from densecam_core.analysis.pointing import pointing_game

    return pointing_game(run, request.boxes, target=request.target)


def _changed(run: Run, compare: Run | None, index: pd.DataFrame, request: ReportRequest) -> pd.DataFrame | None:
    if compare is None:
        return None
    method, block = request.maps[0]
    per_image = compare_runs(run, compare, method, block, target=request.target)
    ranked = most_changed(per_image, request.per_gallery)[["image_id", "prob_b", "map_correlation"]]
    return ranked.merge(index, on="image_id", how="left")


def _panels(run: Run, request: ReportRequest, compare: Run | None) -> dict[str, list[Panel]]:
    """The pictures of a card, per gallery: the radiograph, CAM, the chosen maps; in the comparison's
    gallery the first chosen map of each run."""
    shown = [Panel("radiograph", "image"), Panel("CAM (block 4)", "cam", run, "cam", None)]
    shown += [Panel(f"{m} block {b}", f"{m}-{b}", run, m, b) for m, b in request.maps]
    panels = {"default": shown}
    if compare is not None:
        method, block = request.maps[0]
        panels["changed"] = [
            Panel("radiograph", "image"),
            Panel(f"{method} block {block}, this run", f"{method}-{block}", run, method, block),
            Panel(f"{method} block {block}, run {compare.run_id}", f"b-{method}-{block}", compare, method, block),
        ]
    return panels


def _write_pictures(
    folder: Path, galleries: list[content.Gallery], panels: dict[str, list[Panel]], request: ReportRequest
) -> dict[str, dict[str, tuple[str, str]] | str]:
    """Write every card's thumbnails once (an image in two galleries shares them); returns, per image id,
    panel key -> ``(caption, file)``, or why it has none. Maps are read in one request per array."""
    wanted: dict[str, dict[str, Panel]] = {}
    for gallery in galleries:
        for image_id, status in zip(gallery.rows["image_id"].astype(str), gallery.rows["status"]):
            if status == "ok":
                for panel in panels.get(gallery.key, panels["default"]):
                    wanted.setdefault(image_id, {}).setdefault(panel.key, panel)
    maps = _read_maps(wanted)
    fileio.real_subfolder(folder, THUMB_DIR)  # a link planted at thumbs/ is replaced, never written through
    pictures: dict[str, dict[str, tuple[str, str]] | str] = {}
    for image_id, chosen in wanted.items():
        try:
            pictures[image_id] = _card_pictures(
                folder, image_id, list(chosen.values()), maps, request.thumb_size, request.target
            )
        except (ImageError, OSError, ValueError) as exc:  # a source gone or unreadable now: the card says so
            pictures[image_id] = f"no pictures: the source could not be read now ({exc})"
    return pictures


def _cards(
    gallery: content.Gallery, panels: dict[str, list[Panel]], pictures: dict[str, dict[str, tuple[str, str]] | str]
) -> list[Card]:
    keys = [panel.key for panel in panels.get(gallery.key, panels["default"])]
    cards = []
    for _, row in gallery.rows.iterrows():
        have = pictures.get(str(row["image_id"]), {})
        if isinstance(have, str):
            cards.append(Card(row, [], problem=have))
        else:
            cards.append(Card(row, [have[key] for key in keys if key in have]))
    return cards


def _read_maps(wanted: dict[str, dict[str, Panel]]) -> dict[tuple[str, str], np.ndarray]:
    """(panel key, image id) -> raw maps of every target, one ``Run.maps`` call per (run, method, block)."""
    by_array: dict[str, tuple[Panel, list[str]]] = {}
    for image_id, chosen in wanted.items():
        for panel in chosen.values():
            if panel.run is not None:
                by_array.setdefault(panel.key, (panel, []))[1].append(image_id)
    out = {}
    for key, (panel, ids) in by_array.items():
        assert panel.run is not None  # only map panels are listed
        values = panel.run.maps(str(panel.method), panel.block, image_ids=ids)
        out.update({(key, image_id): value for image_id, value in zip(ids, values)})
    return out


def _card_pictures(
    folder: Path,
    image_id: str,
    chosen: list[Panel],
    maps: dict[tuple[str, str], np.ndarray],
    size: int,
    target: int | str,
) -> dict[str, tuple[str, str]]:
    """One image's thumbnails: the radiograph shrunk once, each map resampled onto the thumbnail's grid
    through the geometry of the run it comes from."""
    source = next(p.run for p in chosen if p.run is not None)
    first = source.geometry(image_id)
    shape = thumbnail_shape(first.orig_height, first.orig_width, size)
    radiograph = shrink(source.image(image_id), shape)
    out = {}
    for panel in chosen:
        name = thumbnail_name(image_id, panel.key)
        if panel.run is None:
            write_jpeg(folder, name, radiograph)
        else:
            geometry = panel.run.geometry(image_id)
            grid = Geometry(shape[0], shape[1], geometry.size, geometry.mode)
            raw = maps[(panel.key, image_id)][target_position(panel.run.record, target)]
            write_jpeg(folder, name, blend_map(radiograph, raw, grid))
        out[panel.key] = (panel.caption, name)
    return out
