"""The heatmap store's layout, names and schema: the single source of truth (see docs/FORMAT.md).

No torch import: notebooks open stores without loading a deep-learning framework.
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
import re
import uuid
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa

FORMAT_NAME = "densecam-heatmap-store"
FORMAT_VERSION = 1
MARKER = "densecam.json"
RUNS_DIR = "runs"
RUN_JSON = "run.json"
ZARR_DIR = "heatmaps.zarr"
INDEX_DIR = "index"
PLAN_DIR = "plan"
LOCK_FILE = "lock.json"
DIMENSIONS = ("image", "class", "y", "x")
PART_NAME = re.compile(r"^part-(\d{6})\.parquet$")
RUN_ID_SETTINGS = ("methods", "size", "resize", "precision", "targets")



class StoreError(ValueError):
    """A store, run or file that cannot be used as asked; the message says what is there."""


def part_name(shard_index: int) -> str:
    return f"part-{shard_index:06d}.parquet"


def array_name(method: str, block: int | None = None) -> str:
    """Zarr path of one array inside heatmaps.zarr: ``cam``, ``logits`` or ``<method>/block<b>``."""
    if method in ("cam", "logits"):
        return method
    if block not in (1, 2, 3, 4):
        raise StoreError(f"block must be 1, 2, 3 or 4 for method {method!r}, got {block!r}")
    return f"{method}/block{block}"


def run_id_for(fingerprint: str, settings: dict[str, Any]) -> str:
    """Deterministic: the same weights and explanation settings always name the same run."""
    key = {"fingerprint": fingerprint, **{k: settings[k] for k in RUN_ID_SETTINGS}}
    return "run-" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, root path) for a local path or fsspec URL, without a trailing slash."""
    fs, root = fsspec.core.url_to_fs(url)
    return fs, root.rstrip("/") or "/"


def join(*parts: str) -> str:
    return posixpath.join(*parts)


def url_join(url: str, *parts: str) -> str:
    """Join onto a URL or local path keeping its protocol, for zarr and fsspec alike."""
    return "/".join([url.rstrip("/"), *parts])


def read_json(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, Any]:
    with fs.open(path, "rb") as handle:
        return json.loads(handle.read().decode())


def write_json_atomic(fs: fsspec.AbstractFileSystem, path: str, payload: dict[str, Any]) -> None:
    """Write to a temporary name, then rename: readers never see half a file."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    fs.pipe_file(tmp, json.dumps(payload, indent=2, sort_keys=True, default=str).encode())
    fs.mv(tmp, path)


def strict_json(value: Any) -> Any:
    """A copy that ``json.dumps(allow_nan=False)`` accepts: NaN / inf -> None, numpy scalars -> Python.

    Metrics are NaN when undefined (e.g. AUROC of one class); plain ``json.dumps`` would write the
    non-standard token ``NaN``, which strict parsers (browsers, jq, Java) reject.
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def check_version(found: int, where: str) -> None:
    if int(found) > FORMAT_VERSION:
        raise StoreError(
            f"{where} has format version {found}, newer than this densecam's {FORMAT_VERSION}: upgrade densecam"
        )


INDEX_FIELDS: tuple[pa.Field, ...] = (
    pa.field("image_id", pa.string()), pa.field("row", pa.int64()), pa.field("path", pa.string()),
    pa.field("split", pa.string()), pa.field("body_part", pa.string()), pa.field("patient_id", pa.string()),
    pa.field("study_id", pa.string()), pa.field("view", pa.int16()), pa.field("label", pa.int8()),
    pa.field("orig_height", pa.int32()), pa.field("orig_width", pa.int32()),
    pa.field("resize_mode", pa.string()), pa.field("logit", pa.float32()), pa.field("prob", pa.float32()),
    pa.field("status", pa.string()), pa.field("error", pa.string()), pa.field("shard", pa.int32()),
    pa.field("run_id", pa.string()),
)
"""Names and types of the core index columns; extra manifest columns keep their own types."""
CORE_INDEX_COLUMNS: tuple[str, ...] = tuple(f.name for f in INDEX_FIELDS)
