"""``densecam localise``: checks every input before any work, scores the run's maps (``analysis.localise``),
stores the scores beside the run, writes the tables and the weak labels into the output folder, and prints the
table of maps. Torch- and Ray-free."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from densecam_core import fileio
from densecam_core.analysis.localise import BASELINE, LocaliseRequest, LocaliseResult, chosen_maps, localise_run
from densecam_core.analysis.localise_inputs import check_boxes, read_box_file, read_image_ids, split_images
from densecam_core.export.run_export import is_dicom_run, output_folder, run_identifiers
from densecam_core.export.weak_labels import export_weak_labels
from densecam_core.store import layout
from densecam_core.store.analyses import write_analysis
from densecam_core.store.reader import open_store
from densecam_core.store.run import Run
from jobs.localise.config import LocaliseConfig

METRICS_CSV = "metrics.csv"
BY_SIZE_CSV = "metrics_by_size.csv"
SKIPPED_CSV = "skipped_boxes.csv"
SHOWN = ["method", "block", "target", "tau", "box_acc_50", "maxboxacc_v2", "pxap", "miou", "hit_rate", "oracle_gap"]


def run_localise(config: LocaliseConfig) -> int:
    run = open_store(config.store).run(config.run)
    ok = run.index[run.index["status"] == "ok"]
    boxes = read_box_file(config.boxes)
    kept, skipped = check_boxes(boxes, ok[["image_id", "orig_height", "orig_width"]])
    if kept.empty:
        raise ValueError(_nothing_in_common(config.boxes, boxes, run, ok, skipped))
    with_box = ok[ok["image_id"].isin(kept["image_id"])]
    calibrate = read_image_ids(config.calibrate) if isinstance(config.calibrate, str) else config.calibrate
    split = split_images(with_box, calibrate, seed=config.seed, min_images=config.min_split_images)
    request = LocaliseRequest(
        methods=config.methods,
        blocks=config.blocks,
        targets=config.target,
        box_rule=config.box_rule,
        mask_rule=config.mask_rule,
        min_probability=config.min_probability,
        steps=config.steps,
        grid_side=config.grid_side,
        bootstrap=config.bootstrap,
        seed=config.seed,
    )
    request.validate()
    chosen_maps(run, request)  # an unknown method, block or target is refused before any file is written
    dicom = is_dicom_run(ok)
    identifiers = run_identifiers(run, config.pseudonym_key) if dicom else None
    out = output_folder(Path(config.out), config.overwrite)
    result = localise_run(run, kept, split, request, masks_folder=config.masks, workers=config.workers)
    messages = [f"{len(skipped)} boxes skipped (reasons in {SKIPPED_CSV})"] if len(skipped) else []
    folder = write_analysis(
        run.url,
        layout.LOCALISE_KIND,
        settings=result.settings,
        tables={
            layout.LOCALISE_METRICS: result.metrics,
            layout.LOCALISE_BY_SIZE: result.by_size,
            layout.LOCALISE_IMAGES: result.images,
        },
        messages=messages,
    )
    for name, table in ((METRICS_CSV, result.metrics), (BY_SIZE_CSV, result.by_size), (SKIPPED_CSV, skipped)):
        _write_csv(out / name, table)
    summary = export_weak_labels(run, result, out, dicom=dicom, identifiers=identifiers)
    print(_render(run, result, len(skipped), folder, summary, out))
    return 0


def _nothing_in_common(path: str, boxes: pd.DataFrame, run: Run, ok: pd.DataFrame, skipped: pd.DataFrame) -> str:
    if len(skipped):
        return f"every box of {path} that names an image of run {run.run_id} is unusable, e.g. row {skipped.iloc[0].to_dict()}"
    example_box = boxes["image_id"].iloc[0] if len(boxes) else "(the file has no rows)"
    example_run = ok["image_id"].iloc[0] if len(ok) else "(the run has no ok images)"
    return (
        f"no image in common between the boxes of {path} ({len(boxes)} rows, e.g. {example_box!r}) and run "
        f"{run.run_id} ({len(ok)} explained images, e.g. {example_run!r}): the box file's image ids must be the "
        "run's (the manifest's relative paths)"
    )


def _write_csv(path: Path, table: pd.DataFrame) -> None:
    buffer = io.StringIO()
    table.to_csv(buffer, index=False)
    fileio.write_file_exclusive(path, lambda handle: handle.write(buffer.getvalue().encode()))


def _render(run: Run, result: LocaliseResult, skipped: int, folder: str, summary, out: Path) -> str:
    table = result.metrics[SHOWN].copy()
    table["block"] = [("-" if m == BASELINE else b) for m, b in zip(table["method"], table["block"])]
    lines = [
        f"run {run.run_id}: {int(result.metrics['n_images'].iloc[0])} images reported, "
        f"{int(result.metrics['n_calibration'].iloc[0])} calibrating ({result.split.how})",
        table.to_string(index=False, float_format=lambda v: f"{v:.3f}"),
    ]
    if skipped:
        lines.append(f"{skipped} boxes skipped (reasons in {out / SKIPPED_CSV})")
    lines.append(f"weak labels of {summary.images} images: {summary.annotations} regions in {out / 'coco.json'}")
    if summary.segmentations or summary.skipped:
        lines.append(f"{summary.segmentations} binary Segmentations, {len(summary.skipped)} skipped (seg-summary.csv)")
    lines.append(f"stored with the run as analysis/{folder}; tables in {out}")
    return "\n".join(lines)
