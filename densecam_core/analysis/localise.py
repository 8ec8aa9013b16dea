"""``localise_run``: weak labels from a run's stored maps, scored the way Choe et al. and CheXlocalize ask.

For every map (CAM and each method x block) and target, each image with a true box is scored on its own pixel
grid (scaled down to at most ``grid_side`` pixels on its long side: the maps are bilinear resamplings of at most
80 x 80 cells, so this moves box edges by under a grid pixel and bounds the time) at every threshold. The
thresholds (one for boxes, one for masks) are chosen on the calibration split only and reported on the other
images, with the best threshold on those (the oracle) beside it; a centred Gaussian map, thresholded the same
way, is the baseline a map must beat. Reads maps chunk by chunk; torch-free.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from densecam_core.analysis.localise_inputs import Split, read_mask, truth_on_grid
from densecam_core.analysis.localise_metrics import MapScores, metrics_rows, size_band_rows
from densecam_core.analysis.regions import best_ious, level_histograms, levels, peak_position
from densecam_core.data.geometry import Geometry
from densecam_core.store.layout import StoreError
from densecam_core.store.run import Run
from densecam_core.store.targets import class_names, fixed_classes, with_target_probability
from densecam_core.vocabulary import BLOCKS, MapKey, chosen_keys

CHUNK_IMAGES = 512
BASELINE = "centre_baseline"
"""The method name of the centred-Gaussian baseline's rows (block 0: no block)."""
BOX_RULES = ("all", "largest")
MASK_RULES = ("tau", "otsu")


@dataclass(frozen=True)
class LocaliseRequest:
    """How weak labels are cut and scored; every field is recorded with the result."""

    methods: tuple[str, ...] | None = None  # default: cam and every method of the run
    blocks: tuple[int, ...] = BLOCKS
    targets: tuple[str, ...] | None = None  # class names or positions; default every target
    box_rule: str = "all"  # boxes of every component, or of the largest (the CAM paper's rule)
    mask_rule: str = "tau"  # a calibrated threshold, or Otsu's split per image
    min_probability: float | None = None  # CheXlocalize's cutoff: no region where the model's probability is lower
    steps: int = 100  # thresholds k / steps
    grid_side: int = 256
    bootstrap: int = 1000
    seed: int = 0

    def validate(self) -> None:
        if self.box_rule not in BOX_RULES or self.mask_rule not in MASK_RULES:
            raise ValueError(f"the box rule must be one of {BOX_RULES} and the mask rule one of {MASK_RULES}")
        if not 2 <= self.steps <= 1000 or self.grid_side < 16 or self.bootstrap < 0:
            raise ValueError("steps must be 2..1000, the grid side at least 16 and bootstrap replicates >= 0")
        if self.min_probability is not None and not 0.0 <= self.min_probability <= 1.0:
            raise ValueError(f"the probability cutoff must be in [0, 1], got {self.min_probability}")


@dataclass(frozen=True)
class ScoredMap:
    """One scored map at a target position, with the target's name: a stored map, or the centred baseline."""

    method: str
    block: int
    target: int
    target_name: str

    @property
    def stored(self) -> MapKey:
        """The run's map this is (not the baseline's)."""
        return MapKey(self.method, self.block, self.target)

    @property
    def name(self) -> str:
        """``cam/block4/abnormal``: the category name of the weak labels."""
        return f"{self.method}/block{self.block}/{self.target_name}"


@dataclass
class LocaliseResult:
    """The tables ``densecam localise`` writes, and the thresholds the weak labels are cut at."""

    metrics: pd.DataFrame
    by_size: pd.DataFrame
    images: pd.DataFrame
    levels: dict[str, tuple[int, int | None]]  # map name -> (box level, mask level or None for Otsu)
    maps: list[ScoredMap]
    split: Split
    settings: dict[str, Any] = field(default_factory=dict)


def target_names(run: Run) -> list[str]:
    """A name per target position: the class name, else ``abnormal`` for a one-output model, else ``class<id>``."""
    classes = fixed_classes(run.record)
    if classes is None:
        raise StoreError(f"run {run.run_id} explains each image's predicted class: its maps have no fixed target")
    names = class_names(run.record)
    if names is not None:
        return [names[c] for c in classes]
    return ["abnormal"] if run.record.num_classes == 1 else [f"class{c}" for c in classes]


def chosen_maps(run: Run, request: LocaliseRequest) -> list[ScoredMap]:
    """The maps and targets the request names; refused naming what the run has."""
    methods = request.methods or ("cam", *run.methods)
    unknown = [m for m in methods if m != "cam" and m not in run.methods]
    if unknown:
        raise ValueError(f"run {run.run_id} has no {', '.join(unknown)} maps; it has cam, {', '.join(run.methods)}")
    bad = [b for b in request.blocks if b not in BLOCKS]
    if bad:
        raise ValueError(f"blocks must be among {BLOCKS}; got {bad}")
    names = target_names(run)
    positions = list(range(len(names)))
    if request.targets is not None:
        positions = []
        for wanted in request.targets:
            if wanted in names:
                positions.append(names.index(wanted))
            elif wanted.isdigit() and int(wanted) < len(names):
                positions.append(int(wanted))
            else:
                raise ValueError(f"run {run.run_id} has no target {wanted!r}; its targets are: {', '.join(names)}")
    return [ScoredMap(k.method, k.block, p, names[p]) for k in chosen_keys(methods, request.blocks) for p in positions]


def working_geometry(row: Any, size: int, grid_side: int) -> Geometry:
    """The grid an image is scored on: its own, scaled to at most ``grid_side`` pixels on the long side."""
    height, width = int(row.orig_height), int(row.orig_width)
    scale = min(1.0, grid_side / max(height, width))
    return Geometry(max(1, round(height * scale)), max(1, round(width * scale)), size, str(row.resize_mode))


def centre_map(cells: int = 16, sigma: float = 0.25) -> np.ndarray:
    """The baseline: an isotropic Gaussian at the centre of the model input (``sigma`` of its side)."""
    centres = (np.arange(cells) + 0.5) / cells - 0.5
    return np.exp(-(centres[:, None] ** 2 + centres[None, :] ** 2) / (2 * sigma**2)).astype(np.float32)


def _map_chunks(run: Run, key: ScoredMap, rows: pd.DataFrame) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    positions = rows["row"].to_numpy()
    for start in range(0, len(rows), CHUNK_IMAGES):
        part = rows.iloc[start : start + CHUNK_IMAGES]
        if key.method == BASELINE:
            yield part, np.broadcast_to(centre_map(), (len(part), 16, 16))
        else:
            yield part, run.read_maps(key.stored, rows=positions[start : start + CHUNK_IMAGES])


def score_map(
    run: Run,
    key: ScoredMap,
    rows: pd.DataFrame,
    boxes: dict[str, np.ndarray],
    request: LocaliseRequest,
    masks_folder: str | None,
) -> MapScores:
    """Every image of ``rows`` (each with a box) scored at every threshold on its working grid."""
    steps, size = request.steps, run.settings.size
    n = len(rows)
    largest = request.box_rule == "largest"
    scores = MapScores.empty(n, steps, largest=largest)
    rows = with_target_probability(rows, run.record, key.target)
    shown = (
        np.ones(n, dtype=bool)
        if request.min_probability is None
        else rows["prob"].to_numpy(dtype=np.float64) >= request.min_probability
    )
    done = 0
    for part, maps in _map_chunks(run, key, rows):
        for record, raw in zip(part.itertuples(), maps):
            i = done
            done += 1
            geometry = working_geometry(record, size, request.grid_side)
            values = geometry.to_original(raw)
            sy, sx = geometry.orig_height / int(record.orig_height), geometry.orig_width / int(record.orig_width)
            truth = boxes[str(record.image_id)] * np.array([sx, sy, sx, sy])
            true_mask = None
            if masks_folder is not None:
                true_mask = read_mask(
                    masks_folder, str(record.image_id), int(record.orig_height), int(record.orig_width)
                )
            scores.from_mask[i] = true_mask is not None
            grid_truth = truth_on_grid(truth, geometry.orig_height, geometry.orig_width, true_mask)
            level_map = levels(values, steps) if shown[i] else np.full(values.shape, -1, dtype=np.int16)
            unimodal = key.method == BASELINE
            every, biggest = best_ious(level_map, truth, steps, unimodal=unimodal)
            scores.iou_all[i] = every
            if largest:
                scores.iou_largest[i] = biggest
            scores.inside[i], scores.outside[i] = level_histograms(level_map, grid_truth, steps)
            point = peak_position(values) if shown[i] else None
            scores.hit[i] = point is not None and bool(grid_truth[point[1], point[0]])
            if request.mask_rule == "otsu":
                scores.otsu_iou[i] = _otsu_iou(values, grid_truth) if shown[i] else 0.0
            scores.box_fraction[i] = float(grid_truth.mean())
    return scores


def _otsu_iou(values: np.ndarray, truth: np.ndarray) -> float:
    from densecam_core.analysis.otsu import otsu_mask

    mask = otsu_mask(values)
    union = np.logical_or(mask, truth).sum()
    return float(np.logical_and(mask, truth).sum() / union) if union else 0.0


def localise_run(
    run: Run,
    boxes: pd.DataFrame,
    split: Split,
    request: LocaliseRequest = LocaliseRequest(),
    *,
    masks_folder: str | None = None,
    workers: int = 1,
) -> LocaliseResult:
    """Score every map the request names against ``boxes`` (checked: ``localise_inputs.check_boxes``), choosing
    thresholds on ``split.calibration`` and reporting on ``split.reported``; ``workers`` > 1 scores chunks of
    images in that many spawned processes (the same result)."""
    request.validate()
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    keys = _with_baselines(chosen_maps(run, request))
    index = run.index[run.index["status"] == "ok"].sort_values("row").reset_index(drop=True)
    index = index[[c for c in SCORED_COLUMNS if c in index.columns]]  # what scoring reads, not every column
    has_target_column = "target" in boxes.columns and boxes["target"].notna().any()
    tasks = []
    for key in keys:
        of_target = _boxes_of(boxes, key, has_target_column)
        rows = index[index["image_id"].isin(of_target)].reset_index(drop=True)
        if rows.empty:
            raise ValueError(f"no image of run {run.run_id} has a box for target {key.target_name!r}")
        for start in range(0, len(rows), TASK_IMAGES):
            part = rows.iloc[start : start + TASK_IMAGES]
            tasks.append(_Task(key, part, {i: of_target[i] for i in part["image_id"]}))
    scored = _score_tasks(run, tasks, request, masks_folder, workers)
    result = _assemble(keys, tasks, scored, split, request)
    result.settings["truth"] = _truth_identity(boxes, masks_folder)
    return result


def _truth_identity(boxes: pd.DataFrame, masks_folder: str | None) -> dict[str, Any]:
    """What the scores were measured against, in the settings (another box file is another localisation)."""
    import hashlib

    table = boxes[[c for c in ("image_id", "x0", "y0", "x1", "y1", "target") if c in boxes.columns]]
    digest = hashlib.sha256(table.to_csv(index=False).encode()).hexdigest()[:16]
    return {"boxes": len(boxes), "boxes_digest": digest, "masks": masks_folder is not None}


SCORED_COLUMNS = ("image_id", "row", "study_id", "orig_height", "orig_width", "resize_mode", "prob", "probs")
"""The index columns scoring reads (tasks carry these rows to the workers)."""
TASK_IMAGES = 2048
"""Images of one map a task scores (the unit handed to a worker process)."""


@dataclass(frozen=True)
class _Task:
    key: ScoredMap
    rows: pd.DataFrame
    boxes: dict[str, np.ndarray]


def _score_tasks(
    run: Run, tasks: list[_Task], request: LocaliseRequest, masks_folder: str | None, workers: int
) -> list[MapScores]:
    if workers == 1:
        return [score_map(run, t.key, t.rows, t.boxes, request, masks_folder) for t in tasks]
    from concurrent.futures import ProcessPoolExecutor

    from densecam_core.parallel.spawned import spawn_context

    with ProcessPoolExecutor(workers, mp_context=spawn_context()) as pool:
        futures = [
            pool.submit(score_task, run.store_url, run.run_id, t.key, t.rows, t.boxes, request, masks_folder)
            for t in tasks
        ]
        return [f.result() for f in futures]


def score_task(
    store_url: str,
    run_id: str,
    key: ScoredMap,
    rows: pd.DataFrame,
    boxes: dict[str, np.ndarray],
    request: LocaliseRequest,
    masks_folder: str | None,
) -> MapScores:
    """A worker process's task (importable by name: spawned children run it)."""
    return score_map(_open_run(store_url, run_id), key, rows, boxes, request, masks_folder)


@functools.lru_cache(maxsize=2)
def _open_run(store_url: str, run_id: str) -> Run:
    from densecam_core.store.reader import open_store

    return open_store(store_url).run(run_id)


def _assemble(
    keys: list[ScoredMap], tasks: list[_Task], scored: list[MapScores], split: Split, request: LocaliseRequest
) -> LocaliseResult:
    """Each map's tasks joined, its thresholds chosen and its rows written; baselines beside their maps."""
    tables, bands, images, chosen = [], [], [], {}
    baselines: dict[int, dict[str, Any]] = {}
    for key in keys:
        mine = [i for i, t in enumerate(tasks) if t.key == key]
        rows = pd.concat([tasks[i].rows for i in mine], ignore_index=True)
        scores = MapScores.join([scored[i] for i in mine])
        for i in mine:
            scored[i] = MapScores.empty(0, 0)  # the parts are joined: free them
        calibrating = rows["image_id"].isin(split.calibration).to_numpy()
        row, per_image = metrics_rows(key, rows, scores, calibrating, request)
        if key.method == BASELINE:
            baselines[key.target] = row
        else:
            row |= {f"baseline_{k}": v for k, v in baselines[key.target].items() if k in _BASELINE_COLUMNS}
        tables.append(row)
        bands.append(size_band_rows(key, per_image))
        images.append(per_image)
        chosen[key.name] = (int(row["level"]), None if request.mask_rule == "otsu" else int(row["mask_level"]))
    return LocaliseResult(
        metrics=pd.DataFrame(tables),
        by_size=pd.concat(bands, ignore_index=True),
        images=pd.concat(images, ignore_index=True),
        levels=chosen,
        maps=[k for k in keys if k.method != BASELINE],
        split=split,
        settings={**asdict(request), "calibration": split.how, "version": 1},
    )


_BASELINE_COLUMNS = ("maxboxacc_v2", "box_acc_50", "pxap", "miou")


def _with_baselines(keys: list[ScoredMap]) -> list[ScoredMap]:
    """The baseline of each target first (its scores go beside every map of that target), then the maps."""
    seen: dict[int, ScoredMap] = {}
    for key in keys:
        seen.setdefault(key.target, ScoredMap(BASELINE, 0, key.target, key.target_name))
    return list(seen.values()) + keys


def _boxes_of(boxes: pd.DataFrame, key: ScoredMap, has_target_column: bool) -> dict[str, np.ndarray]:
    """``image_id -> (n, 4)`` boxes outlining ``key``'s target (every box when the file names no target)."""
    if has_target_column:
        wanted = {key.target_name, str(key.target)}
        boxes = boxes[boxes["target"].astype(str).str.strip().isin(wanted)]
    ids = boxes["image_id"].astype(str).to_numpy()
    order = np.argsort(ids, kind="stable")
    coords = boxes[["x0", "y0", "x1", "y1"]].to_numpy(np.float64)[order]
    names, starts = np.unique(ids[order], return_index=True)
    return dict(zip(names.tolist(), np.split(coords, starts[1:])))
