"""The heatmap store's layout: every file and folder name and every schema of docs/FORMAT.md, and nowhere else.

No torch import: notebooks open stores without loading a deep-learning framework.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from densecam_core.fileio import TMP_PREFIX as TMP_PREFIX  # the name of files being written, named here too
from densecam_core.vocabulary import DICOM_WINDOWS, RESIZE_MODES, MapKey

FORMAT_NAME = "densecam-heatmap-store"
FORMAT_VERSION = 2
MARKER = "densecam.json"
RUNS_DIR = "runs"
RUN_JSON = "run.json"
ZARR_DIR = "heatmaps.zarr"
INDEX_DIR = "index"
INDEX_SWAP_PREFIX = "_index-swap-"
"""A run's next index folder while a compaction on a local store builds it, and the old one once exchanged
for it: beside ``index/``, so no ``index/*.parquet`` glob reads it; removed by the compaction or the next."""
PLAN_DIR = "plan"
ANALYSIS_DIR = "analysis"
"""A run's analyses of its stored maps, one folder each: ``<kind>-<settings digest>`` (another setting is
another analysis, never an overwrite), visible once its ``<kind>.json`` exists (written last)."""
AUDIT_KIND = "audit"
AUDIT_JSON = "audit.json"
LOCALISE_KIND = "localise"
"""Weak labels' scores (``densecam localise``): ``metrics.parquet`` (a row per map and target),
``by_size.parquet`` (per lesion size band), ``images.parquet`` (a row per image, map and target)."""
LOCALISE_METRICS = "metrics.parquet"
LOCALISE_BY_SIZE = "by_size.parquet"
LOCALISE_IMAGES = "images.parquet"
ANALYSIS_KINDS = [AUDIT_KIND, LOCALISE_KIND]
"""The kinds of analysis a run's ``analysis/`` folder holds (``<kind>-<digest12>/<kind>.json``);
``register_analysis_kind`` adds one."""
AUDIT_IMAGES = "images.parquet"
AUDIT_CLUSTERS = "clusters.parquet"
AUDIT_ATLASES = "atlases.parquet"
AUDIT_CONFIRMATIONS = "confirmations.parquet"
CONFIRM_PARTS_DIR = "confirm"
"""The paste test's parts while it runs (``part-<cluster>.parquet``, one per flagged cluster: what a resumed
``--confirm`` skips) and ``confirm.json``, its settings; merged into ``confirmations.parquet`` at the end."""
CONFIRM_JSON = "confirm.json"
AUDIT_ARRAYS = "arrays.zarr"
"""Zarr arrays of an audit: ``cluster_mean/<map>``, ``atlas_mean/<map>``, ``atlas_peaks/<map>`` (one (h, w)
slice per row of the table naming it) and ``vectors/<map>`` (image, target, d) for ``Run.similar``."""
LOCK_FILE = "lock.json"
TARGETS_ARRAY = "targets"


def dimension_names(name: str) -> tuple[str, ...]:
    """Format 2: every dimension name has one size in a run, as xarray requires.

    ``class`` counts the classifier's outputs (``logits``), ``target`` the explained classes (K);
    ``y_b<b>``/``x_b<b>`` are block ``b``'s grid (CAM lives on block 4's).
    """
    if name == "logits":
        return ("image", "class")
    if name == TARGETS_ARRAY:
        return ("image", "target")
    block = MapKey.from_array_name(name).block
    return ("image", "target", f"y_b{block}", f"x_b{block}")


PART_NAME = re.compile(r"^part-(\d{6})\.parquet$")
PENDING_PART_NAME = re.compile(r"^_part-(\d{6})\.parquet\.pending$")
"""A recomputed shard's part while a compacted file still holds the shard's old rows: named so that other
tools skip it (pyarrow, pandas and Spark skip ``_`` names; a ``*.parquet`` glob, as DuckDB's, does not
match it), so they read the old rows once until the next compaction merges the new ones."""
RUN_ID = re.compile(r"^run-[0-9a-f]{16}$")


def is_array_name(name: str) -> bool:
    """Whether a run may name this array: ``logits``, ``targets`` or a map's (``MapKey.array_name``: a method name,
    as the method registry allows them, then its block), never a path."""
    if name in ("logits", TARGETS_ARRAY):
        return True
    try:
        MapKey.from_array_name(name)
    except ValueError:
        return False
    return True


class StoreError(ValueError):
    """A store, run or file that cannot be used as asked; the message says what is there."""


def analysis_folder(kind: str, settings: dict[str, Any]) -> str:
    """``<kind>-<12 hex digits>``: the folder of the analysis that ``settings`` (JSON-able) made; ``kind`` must be
    registered (it names a folder of the run)."""
    analysis_pattern(kind)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{kind}-{digest}"


def analysis_json(kind: str) -> str:
    """The file whose presence makes an analysis folder complete: ``<kind>.json``."""
    return f"{kind}.json"


def register_analysis_kind(kind: str) -> str:
    """Give a new kind of analysis its folders in every run (a lower-case word: it names folders and files)."""
    if not re.fullmatch(r"[a-z]{2,32}", kind):
        raise ValueError(f"an analysis kind is a lower-case word of 2 to 32 letters, got {kind!r}")
    if kind not in ANALYSIS_KINDS:
        ANALYSIS_KINDS.append(kind)
    return kind


def analysis_pattern(kind: str) -> re.Pattern[str]:
    """The folder names of ``kind``'s analyses."""
    if kind not in ANALYSIS_KINDS:
        raise ValueError(f"unknown analysis {kind!r}; known: {', '.join(ANALYSIS_KINDS)}")
    return re.compile(rf"^{kind}-[0-9a-f]{{12}}$")


def map_label(key: MapKey) -> str:
    """A map's name in analyses' tables and arrays: ``cam_block4``, ``gradcam_block3`` ..."""
    return f"{key.method}_block{key.block}"


def part_name(shard_index: int, pending: bool = False) -> str:
    return f"_part-{shard_index:06d}.parquet.pending" if pending else f"part-{shard_index:06d}.parquet"


def part_shard(name: str) -> int | None:
    """The shard of an index part's file name, visible or pending; None for any other file."""
    match = PART_NAME.match(name) or PENDING_PART_NAME.match(name)
    return int(match.group(1)) if match else None


def array_name(method: str, block: int | None = None) -> str:
    """Zarr path of one array inside heatmaps.zarr: ``cam``, ``logits``, ``targets`` or ``<method>/block<b>``
    (``MapKey.array_name``; CAM's block may be left out)."""
    if method in ("logits", TARGETS_ARRAY):
        return method
    try:
        return MapKey.of(method, block).array_name
    except ValueError as exc:
        raise StoreError(str(exc)) from None


def check_version(found: int, where: str) -> None:
    if int(found) > FORMAT_VERSION:
        raise StoreError(
            f"{where} has format version {found}, newer than this densecam's {FORMAT_VERSION}: upgrade densecam"
        )


INDEX_FIELDS: tuple[pa.Field, ...] = (
    pa.field("image_id", pa.string()),
    pa.field("row", pa.int64()),
    pa.field("path", pa.string()),
    pa.field("split", pa.string()),
    pa.field("body_part", pa.string()),
    pa.field("patient_id", pa.string()),
    pa.field("study_id", pa.string()),
    pa.field("view", pa.int16()),
    pa.field("label", pa.int8()),
    pa.field("orig_height", pa.int32()),
    pa.field("orig_width", pa.int32()),
    pa.field("resize_mode", pa.string()),
    pa.field("logit", pa.float32()),
    pa.field("prob", pa.float32()),
    pa.field("status", pa.string()),
    pa.field("error", pa.string()),
    pa.field("shard", pa.int32()),
    pa.field("run_id", pa.string()),
)
"""Names and types of the core index columns; extra manifest columns keep their own types."""
CORE_INDEX_COLUMNS: tuple[str, ...] = tuple(f.name for f in INDEX_FIELDS)
PROBS_FIELD = pa.field("probs", pa.list_(pa.float32()))
"""Runs that explain several classes per image: each explained class's probability, in ``targets`` order
(``prob`` is the first's); absent from one-target runs, so their index keeps its schema."""
SOURCE_FIELDS: tuple[pa.Field, ...] = (pa.field("source_size", pa.int64()), pa.field("source_stamp", pa.string()))
"""The source file's identity when its image was explained, as the input cache takes it (size, and the
modification time or a content digest): what ``densecam export`` checks a source against. Written with
the input cache on (null without it, and absent from runs written before it)."""


@dataclass(frozen=True)
class Shard:
    """A contiguous, chunk-aligned range of store rows: the unit of work, of writing and of resume."""

    index: int
    row_start: int
    row_stop: int

    @property
    def name(self) -> str:
        return f"{self.index:06d}"


def plan_shards(num_rows: int, shard_size: int, first_row: int = 0) -> list[Shard]:
    """Cut rows [first_row, first_row + num_rows) into shards aligned to ``shard_size``.

    ``first_row`` must be a multiple of ``shard_size`` so no two shards share a Zarr chunk.
    """
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    if first_row % shard_size:
        raise ValueError(f"first_row {first_row} is not a multiple of shard_size {shard_size}")
    return [
        Shard(start // shard_size, start, min(start + shard_size, first_row + num_rows))
        for start in range(first_row, first_row + num_rows, shard_size)
    ]


def run_meta_problem(meta: dict[str, Any]) -> str | None:
    """What makes a run.json unusable (a reader would crash on it, or read outside the run), or None.

    Checked when a store lists its runs, so every command meets a named problem, never a traceback."""
    size = meta.get("shard_size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        return f"run.json is damaged: shard_size {size!r} (a positive whole number)"
    arrays = meta.get("arrays")
    if not isinstance(arrays, dict) or not all(
        isinstance(name, str) and isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape)
        for name, shape in arrays.items()
    ):
        return "run.json is damaged: arrays (array name -> per-image shape)"
    unsafe = [name for name in arrays if not is_array_name(name)]
    if unsafe:
        return f"run.json is damaged: array names {unsafe[:3]} are not the store's (a path outside the run?)"
    settings = meta.get("settings")
    if not isinstance(settings, dict) or not isinstance(settings.get("methods"), list):
        return "run.json is damaged: settings"
    if not isinstance(meta.get("model_fingerprint"), str) or not isinstance(meta.get("created"), str):
        return "run.json is damaged: model_fingerprint or created"
    return None


# -- the index: compacted files and the state that lists them (store/index.py, store/compact.py)
COMPACTED_JSON = "_compacted.json"  # "_": tools reading the folder as Parquet skip it


COMPACT_NAME = re.compile(r"^compact-[0-9a-f]{32}\.parquet$")


# -- scores of an evaluation (store/scores.py)
METRICS_DIR = "metrics"


EVALUATION_JSON = "_evaluation.json"


FAMILY_FOLDER = re.compile(r"^family=([a-z][a-z0-9_]{0,31})$")
"""A metric family's scores, ``metrics/family=<name>/`` (hive-style: pyarrow, pandas, DuckDB and Spark read
``metrics/`` as one dataset with a ``family`` column). Scores of evaluations made before families had folders
lie in ``metrics/`` itself; both are read."""


FORMER_FAMILY_NAMES = {"randomization": "randomisation", "localization": "localisation"}
"""Family names evaluations recorded before the house's one spelling (British): read, and accepted, as the current."""


FORMER_METRIC_NAMES = {"randomization_spearman": "randomisation_spearman", "randomization_ssim": "randomisation_ssim"}
"""Metric names parts written before the one spelling hold: read as the current names."""


def current_family_name(name: str) -> str:
    return FORMER_FAMILY_NAMES.get(name, name)


def family_folder(family: str) -> str:
    if not FAMILY_FOLDER.match(f"family={family}"):
        raise StoreError(f"metric family {family!r} is not a name the store can hold (a lower-case word)")
    return f"family={family}"


METRIC_FIELDS: tuple[pa.Field, ...] = (
    pa.field("image_id", pa.string()),
    pa.field("row", pa.int64()),
    pa.field("method", pa.string()),  # cam, a gradient method, or random (the baseline); null on error rows
    pa.field("block", pa.int8()),  # 1-4; 4 for CAM
    pa.field("metric", pa.string()),  # e.g. deletion_auc; "error" for an image that could not be scored
    pa.field("stage", pa.int8()),  # randomisation stage 1-5, null for other metrics
    pa.field("value", pa.float64()),
    pa.field("error", pa.string()),  # why an image could not be scored (error rows only)
    pa.field("shard", pa.int32()),
)


METRIC_SCHEMA = pa.schema(METRIC_FIELDS)


# -- the input cache (store/inputs/): one folder per preprocessing, segments and their catalog
CATALOG_JSON = "_catalog.json"


CATALOG_NAME = re.compile(r"^catalog-[0-9a-f]{32}\.parquet$")


IDENTITY_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("file_size", pa.int64()),
        ("file_stamp", pa.string()),
        ("orig_height", pa.int32()),
        ("orig_width", pa.int32()),
        ("channels", pa.int8()),
    ]
)
"""A cached image's identity and geometry: the columns a segment holds beside its pixels."""


IDENTITY_COLUMNS = IDENTITY_SCHEMA.names


CATALOG_SCHEMA = pa.schema([("segment", pa.string()), ("row", pa.int32()), *IDENTITY_SCHEMA])


INPUTS_DIR = "inputs"


CACHE_JSON = "cache.json"


SEGMENT_NAME = re.compile(r"^segment-[0-9a-f]{32}\.parquet$")


INPUT_SEGMENT_SCHEMA = pa.schema([*IDENTITY_SCHEMA, ("pixels", pa.binary())])


CACHE_FOLDER = re.compile(rf"^s(\d+)-({'|'.join(RESIZE_MODES)})-p(\d+)(?:-w({'|'.join(DICOM_WINDOWS)}))?$")
"""The names ``cache_key`` gives, of any preprocessing version: size, resize mode, version, DICOM window."""
SUMMARY_CSV = "_summary.csv"
SUMMARY_PNG = "_summary.png"
"""The quality table an evaluation writes beside its parts (``metrics/``), as CSV and as a figure."""


def cache_folder_name(size: int, resize: str, version: int, dicom_window: str | None) -> str:
    """The input-cache folder of one preprocessing; the window enters only when not the default
    (``None``), so caches written before DICOM support keep their names. ``CACHE_FOLDER`` parses it."""
    window = "" if dicom_window is None else f"-w{dicom_window}"
    return f"s{int(size)}-{resize}-p{int(version)}{window}"


def compact_file_name() -> str:
    """A new compacted index file (``COMPACT_NAME``): unique, so a killed compaction never overwrites one in use."""
    return f"compact-{uuid.uuid4().hex}.parquet"


def plan_segment_name(segment: int) -> str:
    """The plan's segment of rows ``segment * shard_size`` onwards, in ``PLAN_DIR``."""
    return f"plan-{segment:06d}.parquet"


def input_segment_name() -> str:
    """A new input-cache segment (``SEGMENT_NAME``)."""
    return f"segment-{uuid.uuid4().hex}.parquet"


def catalog_file_name() -> str:
    """A new input-cache catalog (``CATALOG_NAME``), named by ``CATALOG_JSON`` once whole."""
    return f"catalog-{uuid.uuid4().hex}.parquet"
