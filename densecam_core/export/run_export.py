"""Export a run's maps, image by image: DICOM objects for a viewer (``to="dicom"``) or PNG panels (``to="png"``).

Everything that can be refused is refused before the first file is written (a method or block the run
lacks, unknown image ids, an output folder holding other files, a run whose sources are not DICOM, a
pseudonym key other than the run's). Then each image is read from its source at export time and checked
against the run (the same SOP instance, under the run's pseudonyms, with the same rows and columns); an
image that fails is skipped with its reason in ``export-summary.csv``, the rest are exported. Files are
written under a temporary name and renamed, so a killed export leaves no partial file visible; memory
holds one image's map and overlay at a time.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from densecam_core import fileio
from densecam_core.data.decode import DEFAULT_MAX_BYTES
from densecam_core.data.dicom import parse_dataset
from densecam_core.data.errors import ImageError
from densecam_core.data.overlay import blend
from densecam_core.data.sources.dicomweb.pacs_cache import in_pacs_cache
from densecam_core.export.dicom_objects import (
    MapLabel,
    SourceProblem,
    binary_segmentation,
    secondary_capture,
    segmentation,
)
from densecam_core.export.legend import burned_overlay
from densecam_core.export.refetch import refetch_missing_sources
from densecam_core.store.layout import StoreError
from densecam_core.store.run import Run

SUMMARY = "export-summary.csv"
DEFAULT_ALPHA = 0.45
FORMATS = ("dicom", "png")


@dataclass(frozen=True)
class ExportRequest:
    """What to export and where; the filters are the reader's."""

    method: str = "gradcam"
    block: int | None = 4
    to: str = "dicom"
    target: int | str = 0
    body_parts: Sequence[str] | None = None
    statuses: Sequence[str] = ("ok",)
    images: Sequence[str] | None = None
    limit: int | None = None
    overwrite: bool = False
    alpha: float = DEFAULT_ALPHA
    seg: str = "fractional"  # the map's values (Weasis, Slicer), or "binary:T": the map >= T of its range (OHIF)

    @property
    def binary_threshold(self) -> float | None:
        """The binary Segmentation's threshold, or None for the fractional one; bad values are refused."""
        if self.seg == "fractional":
            return None
        kind, _, value = self.seg.partition(":")
        try:
            threshold = float(value)
        except ValueError:
            threshold = float("nan")
        if kind != "binary" or not 0.0 < threshold < 1.0:
            raise ValueError(f"the segmentation must be 'fractional' or 'binary:T' with 0 < T < 1, got {self.seg!r}")
        return threshold


@dataclass
class ExportSummary:
    exported: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # image id -> reason
    files: list[str] = field(default_factory=list)
    objects: list[tuple[str, str]] = field(default_factory=list)  # (image id, file name) of every file written

    def render(self, out: str) -> str:
        return f"exported {self.exported} images, skipped {len(self.skipped)} (reasons in {os.path.join(out, SUMMARY)})"


def export_run(
    run: Run,
    out: str | os.PathLike,
    request: ExportRequest,
    *,
    identifiers: Callable[[str, object], str | None] | None = None,
    progress: bool = False,
    workers: int = 1,
) -> ExportSummary:
    """Export ``run``'s maps into the folder ``out``; ``identifiers`` pseudonymises a source's SOP Instance
    UID as the run did (``load_identifiers``), so the export knows the file is the instance explained.
    ``workers`` > 1 exports chunks of images in that many spawned processes (the same files)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    rows = _selected(run, request)
    folder = output_folder(Path(out), request.overwrite)
    if request.to == "dicom":
        _check_dicom_run(run, rows)
        refetch_missing_sources(run, rows, identifiers)
    ids = rows["image_id"].astype(str).tolist()
    if workers == 1:
        records = [_record(run, row, folder, request, identifiers) for _, row in _progress(rows, progress)]
    else:
        records = _in_processes(run, ids, folder, request, identifiers, workers, progress)
    table = pd.DataFrame(records, columns=["image_id", "status", "reason", "files"])
    fs, root = fileio.filesystem(str(folder))
    fileio.write_bytes_atomic(fs, fileio.join(root, SUMMARY), table.to_csv(index=False).encode())
    summary = ExportSummary(exported=int((table["status"] == "exported").sum()))
    summary.skipped = dict(
        zip(table.loc[table["status"] == "skipped", "image_id"], table.loc[table["status"] == "skipped", "reason"])
    )
    summary.objects = [
        (str(image_id), name)
        for image_id, names in zip(table["image_id"], table["files"])
        if names
        for name in names.split(";")
    ]
    summary.files = [name for _, name in summary.objects]
    return summary


def _record(
    run: Run,
    row: pd.Series,
    folder: Path,
    request: ExportRequest,
    identifiers: Callable[[str, object], str | None] | None,
) -> dict[str, str]:
    """One image exported, or skipped with its reason, as a row of the summary."""
    try:
        written = _export_one(run, row, folder, request, identifiers)
    except (SourceProblem, OSError, ValueError) as exc:
        return {"image_id": str(row["image_id"]), "status": "skipped", "reason": str(exc), "files": ""}
    return {"image_id": str(row["image_id"]), "status": "exported", "reason": "", "files": ";".join(written)}


CHUNK_IMAGES = 32
"""Images a worker process exports per task: each task opens the run once (its index is read again)."""


def _in_processes(
    run: Run,
    ids: list[str],
    folder: Path,
    request: ExportRequest,
    identifiers: Callable[[str, object], str | None] | None,
    workers: int,
    progress: bool,
) -> list[dict[str, str]]:
    from concurrent.futures import ProcessPoolExecutor

    from densecam_core.parallel.spawned import spawn_context

    chunks = [ids[start : start + CHUNK_IMAGES] for start in range(0, len(ids), CHUNK_IMAGES)]
    with ProcessPoolExecutor(workers, mp_context=spawn_context()) as pool:
        futures = [
            pool.submit(export_chunk, run.store_url, run.run_id, chunk, str(folder), request, identifiers)
            for chunk in chunks
        ]
        records: list[dict[str, str]] = []
        for future in _progress_of(futures, len(ids), progress):
            records += future.result()
    return records


def export_chunk(
    store_url: str,
    run_id: str,
    ids: list[str],
    folder: str,
    request: ExportRequest,
    identifiers: Callable[[str, object], str | None] | None,
) -> list[dict[str, str]]:
    """A worker process's task: open the run and export ``ids`` (importable by name: spawned children run it)."""
    from densecam_core.store.reader import open_store

    run = open_store(store_url).run(run_id)
    rows = run.index.set_index("image_id").loc[ids].reset_index()
    return [_record(run, row, Path(folder), request, identifiers) for _, row in rows.iterrows()]


def _selected(run: Run, request: ExportRequest) -> pd.DataFrame:
    """The index rows to export, refusing what the run cannot give."""
    if request.to not in FORMATS:
        raise ValueError(f"`to` must be one of {FORMATS}, got {request.to!r}")
    _ = request.binary_threshold  # a bad --seg is refused here, before any file
    if request.method != "cam" and request.method not in run.methods:
        raise StoreError(f"run {run.run_id} has no {request.method!r} maps; it has cam, {', '.join(run.methods)}")
    index = run.index
    if request.images is not None:
        unknown = sorted(set(request.images) - set(index["image_id"]))
        if unknown:
            raise KeyError(f"{len(unknown)} image ids are not in run {run.run_id}, e.g. {unknown[:3]}")
        index = index[index["image_id"].isin(set(request.images))]
    if request.body_parts is not None:
        index = index[index["body_part"].isin(set(request.body_parts))]
    index = index[index["status"].isin(set(request.statuses))].sort_values("row")
    return index.head(request.limit) if request.limit is not None else index


def output_folder(out: Path, overwrite: bool) -> Path:
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and holds other files: pick a new folder, or pass `overwrite`")
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_identifiers(run: Run, key_path: str | None) -> Any:
    """The run's pseudonymisation, to know a source as the instance explained: None where the run keeps
    identifiers in clear, else the key whose id the run recorded (refused when ``key_path`` is another)."""
    from densecam_core.data.pseudonyms import load_identifiers

    recorded = run.record.identifiers
    if recorded.get("identifiers") != "pseudonymised":
        return None
    identifiers = load_identifiers(key_path)
    if identifiers.key_id != recorded.get("pseudonym_key_id"):
        raise ValueError(
            f"run {run.run_id} was pseudonymised with key {recorded.get('pseudonym_key_id')}, not with "
            f"{identifiers.key_path} ({identifiers.key_id}): pass that pseudonym key"
        )
    return identifiers


def is_dicom_run(rows: pd.DataFrame) -> bool:
    """Whether the run's images were read from DICOM files (they have SOP instance ids)."""
    return "instance_id" in rows.columns and not rows["instance_id"].isna().all()


def _check_dicom_run(run: Run, rows: pd.DataFrame) -> None:
    if not is_dicom_run(rows):
        raise StoreError(
            f"run {run.run_id} was not explained from DICOM files: export it with `to` png (overlay panels)"
        )


def _export_one(
    run: Run,
    row: pd.Series,
    folder: Path,
    request: ExportRequest,
    identifiers: Callable[[str, object], str | None] | None,
) -> list[str]:
    image_id = str(row["image_id"])
    if row["status"] != "ok":
        raise ValueError(f"the run has no maps for it: {row['error']}")
    stem = file_stem(image_id)
    if request.to == "png":
        return [_png_panel(run, image_id, folder / f"{stem}.png", request)]
    source = read_source(run, row, identifiers)
    raw = run.heatmap(image_id, request.method, request.block, target=request.target, normalise=False)
    low, high = float(np.nanmin(raw)), float(np.nanmax(raw))
    heat01 = (raw - low) / (high - low) if high > low else np.zeros_like(raw)
    label = MapLabel(
        run.run_id,
        run.fingerprint,
        request.method,
        request.block,
        _target_name(run, request.target),
        run.record.architecture,
    )
    overlay = burned_overlay(blend(run.image(image_id), heat01, request.alpha), label)  # the map read once
    variant = "" if request.alpha == DEFAULT_ALPHA else f"alpha={request.alpha}"
    threshold = request.binary_threshold
    if threshold is None:
        seg = segmentation(source, heat01, label, (low, high))
    else:
        content = f"{label.what} binary {threshold}"
        seg = binary_segmentation(source, [(label.what, heat01 >= threshold)], label, content, f"densecam {content}")
    written = []
    for kind, dataset in (("sc", secondary_capture(source, overlay, label, variant)), ("seg", seg)):
        path = folder / f"{stem}.{kind}.dcm"
        _save_dataset(dataset, path)
        written.append(path.name)
    return written


def read_source(run: Run, row: pd.Series, identifiers: Callable[[str, object], str | None] | None) -> Any:
    """The source dataset, read now (a regular file of bounded size: a FIFO never blocks the export), or the
    reason it is not the image the run explained."""
    path = run.source_path(str(row["image_id"]))
    if not os.path.exists(path):
        raise SourceProblem(f"the source file {path} is gone since the run")
    _check_identity(path, row)
    try:
        data = fileio.read_regular_file(path, max_bytes=DEFAULT_MAX_BYTES)
    except OSError as exc:
        raise SourceProblem(f"the source file {path} cannot be read now: {exc}") from None
    try:
        source = parse_dataset(data, name=path)
    except ImageError as exc:
        raise SourceProblem(f"the source file {path} is no longer a readable DICOM file: {exc.reason}") from None
    instance = identifiers("instance", source.get("SOPInstanceUID")) if identifiers else source.get("SOPInstanceUID")
    if instance != row["instance_id"]:
        raise SourceProblem(f"the source file {path} holds another SOP instance than the run explained")
    if (int(source.get("Rows", 0)), int(source.get("Columns", 0))) != (int(row["orig_height"]), int(row["orig_width"])):
        raise SourceProblem(
            f"the source file {path} changed since the run: it is no longer {row['orig_height']}x{row['orig_width']}"
        )
    return source


def _check_identity(path: str, row: pd.Series) -> None:
    """The file is the one the run explained, by the input cache's identity (size, then modification time
    or content digest) where the run recorded it; runs without it are checked by SOP instance only."""
    from densecam_core.store.inputs.identity import CONTENT_PREFIX, identify

    if in_pacs_cache(path):
        return  # pulled again since the run, it has a new time: matched by its SOP instance below
    size, stamp = row.get("source_size"), row.get("source_stamp")
    if size is None or pd.isna(size) or not isinstance(stamp, str):
        return
    now = identify(path, content=stamp.startswith(CONTENT_PREFIX))
    if now is None or (now.size, now.stamp) != (int(size), stamp):
        what = "content" if stamp.startswith(CONTENT_PREFIX) else "size or modification time"
        raise SourceProblem(f"the source file {path} changed since the run (its {what} differs)")


def _target_name(run: Run, target: int | str) -> str:
    if isinstance(target, str):
        return target
    names = run.class_names
    return "" if names is None or run.record.num_targets == 1 else f"target {target}"


def _png_panel(run: Run, image_id: str, path: Path, request: ExportRequest) -> str:
    from densecam_core.analysis.figures import image_panel

    method = request.method if request.method != "cam" else "gradcam"
    fileio.write_file_exclusive(path, lambda handle: image_panel(run, image_id, handle, method=method))
    return path.name


def _save_dataset(dataset: Any, path: Path) -> None:
    fileio.write_file_exclusive(path, lambda handle: dataset.save_as(handle, enforce_file_format=True))


def file_stem(image_id: str) -> str:
    """A file name for an image id that stays inside the output folder: unsafe characters replaced, and a
    digest of the id so that ids differing only in them never share a file."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", image_id).strip("._")[:80] or "image"
    return f"{safe}-{hashlib.sha256(image_id.encode()).hexdigest()[:8]}"


def _progress_of(futures: list[Any], images: int, shown: bool) -> Any:
    """The futures in submission order, a progress bar counting their images when ``shown``."""
    if not shown:
        yield from futures
        return
    from tqdm import tqdm

    with tqdm(total=images, unit="image", desc="export") as bar:
        for future in futures:
            result = future.result()
            bar.update(len(result))
            yield future


def _progress(rows: pd.DataFrame, shown: bool) -> Any:
    if not shown:
        return rows.iterrows()
    from tqdm import tqdm

    return tqdm(rows.iterrows(), total=len(rows), unit="image", desc="export")
