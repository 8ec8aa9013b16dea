"""Per-image quality scores of a run: ``runs/<run_id>/metrics/family=<family>/`` (docs/FORMAT.md, docs/METRICS.md).

One Parquet part per evaluated shard and metric family, ``part-<shard:06d>.parquet``, committed like the index:
written under a temporary name and renamed into place, so a part is either whole or absent and resume skips the
shards whose part exists. Each family's ``_evaluation.json`` records the settings its parts were scored with, so a
family can be added to a scored run without scoring the others again, and an evaluation with other settings refuses
to mix its scores in. Evaluations made before families had folders wrote every family's scores into ``metrics/``
itself, listed in ``metrics/_evaluation.json``: they are read as they are. No torch import.
"""

from __future__ import annotations

import io
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from densecam_core import fileio
from densecam_core.store import layout
from densecam_core.store.layout import EVALUATION_JSON, METRIC_FIELDS, METRIC_SCHEMA, METRICS_DIR


def metrics_dir(run_url: str) -> tuple[Any, str]:
    fs, root = fileio.filesystem(run_url)
    return fs, fileio.join(root, METRICS_DIR)


def metric_table(frame: pd.DataFrame) -> pa.Table:
    """The long-form frame in the documented schema (missing optional columns become null)."""
    missing = [c for c in ("image_id", "row", "metric", "value", "shard") if c not in frame.columns]
    if missing:
        raise ValueError(f"metric rows lack columns {missing}")
    columns = {}
    for field in METRIC_FIELDS:
        values = frame[field.name] if field.name in frame.columns else pd.Series([None] * len(frame), dtype=object)
        values = values.astype(object).where(values.notna(), None) if field.type != pa.float64() else values
        columns[field.name] = pa.array(values, type=field.type, from_pandas=True)
    return pa.table(columns, schema=METRIC_SCHEMA)


def family_dir(run_url: str, family: str) -> tuple[Any, str]:
    fs, directory = metrics_dir(run_url)
    return fs, fileio.join(directory, layout.family_folder(family))


def write_metrics_part(run_url: str, shard: int, frame: pd.DataFrame, *, family: str) -> None:
    """Commit one shard's scores of one family: the whole part under a temporary name, then renamed into place."""
    fs, directory = family_dir(run_url, family)
    fs.makedirs(directory, exist_ok=True)
    buffer = io.BytesIO()
    pq.write_table(metric_table(frame), buffer, compression="zstd")
    fileio.write_bytes_atomic(fs, fileio.join(directory, layout.part_name(shard)), buffer.getvalue())


def _parts_in(fs: Any, directory: str) -> dict[int, str]:
    """Committed parts of one folder, shard -> path (temporary files of writes in progress are not parts)."""
    fs.invalidate_cache(directory)
    if not fs.exists(directory):
        return {}
    parts = {}
    for path in fs.ls(directory, detail=False):
        match = layout.PART_NAME.match(str(path).rsplit("/", 1)[-1])
        if match:
            parts[int(match.group(1))] = str(path)
    return dict(sorted(parts.items()))


def _legacy(run_url: str) -> tuple[dict[str, Any] | None, dict[int, str]]:
    """An evaluation made before families had folders: its settings (every family in one) and its parts."""
    fs, directory = metrics_dir(run_url)
    path = fileio.join(directory, EVALUATION_JSON)
    recorded = fileio.read_json(fs, path) if fs.exists(path) else None
    return recorded, _parts_in(fs, directory)


def family_parts(run_url: str, family: str) -> dict[int, str]:
    """The shards whose scores of ``family`` are committed, shard -> path (an older evaluation's parts count
    for the families it recorded)."""
    fs, directory = family_dir(run_url, family)
    parts = _parts_in(fs, directory)
    recorded, legacy = _legacy(run_url)
    if recorded is not None and family in map(layout.current_family_name, recorded.get("metrics", [])):
        parts = {**legacy, **parts}
    return dict(sorted(parts.items()))


def _every_part(run_url: str) -> list[str]:
    fs, directory = metrics_dir(run_url)
    paths = list(_legacy(run_url)[1].values())
    if fs.exists(directory):
        for entry in fs.ls(directory, detail=False):
            if layout.FAMILY_FOLDER.match(str(entry).rsplit("/", 1)[-1]):
                paths += _parts_in(fs, str(entry)).values()
    return paths


def read_metrics(run_url: str, filters: Any = None) -> pd.DataFrame:
    """Every committed score of a run as one long-form frame (empty, with the columns, when none).

    An image that could not be scored has an error row in each family's part: it is returned once."""
    paths = _every_part(run_url)
    if not paths:
        return METRIC_SCHEMA.empty_table().to_pandas()
    fs, _ = metrics_dir(run_url)
    expression = pq.filters_to_expression(filters) if isinstance(filters, list) else filters
    try:
        table = ds.dataset(paths, filesystem=fs, format="parquet", schema=METRIC_SCHEMA).to_table(filter=expression)
    except (pa.ArrowInvalid, OSError) as exc:
        raise layout.StoreError(
            f"a metrics part of {run_url} cannot be read ({exc}); delete the damaged part-*.parquet under "
            f"{METRICS_DIR}/ and run the evaluation again to rescore that shard"
        ) from exc
    frame = table.to_pandas()
    frame["metric"] = frame["metric"].replace(layout.FORMER_METRIC_NAMES)
    errors = frame["metric"] == "error"
    if errors.any():
        once = frame[errors].drop_duplicates(subset=["image_id", "row"])
        frame = pd.concat([frame[~errors], once]).sort_index(kind="stable").reset_index(drop=True)
    return frame


def scored_families(run_url: str) -> dict[str, dict[str, Any]]:
    """The families a run holds scores of, each with the settings they were scored with."""
    fs, directory = metrics_dir(run_url)
    found: dict[str, dict[str, Any]] = {}
    recorded, _ = _legacy(run_url)
    if recorded is not None:
        shared = {k: v for k, v in recorded.items() if k != "metrics"}
        found.update({layout.current_family_name(name): shared for name in recorded.get("metrics", [])})
    if fs.exists(directory):
        for entry in fs.ls(directory, detail=False):
            match = layout.FAMILY_FOLDER.match(str(entry).rsplit("/", 1)[-1])
            path = fileio.join(str(entry), EVALUATION_JSON)
            if match and fs.exists(path):
                found[match.group(1)] = fileio.read_json(fs, path)
    return found


def write_evaluation(run_url: str, family: str, settings: dict[str, Any]) -> None:
    """Record what ``family``'s scores depend on, before its first part is written."""
    fs, directory = family_dir(run_url, family)
    fs.makedirs(directory, exist_ok=True)
    fileio.write_json_atomic(fs, fileio.join(directory, EVALUATION_JSON), fileio.strict_json(settings))


def holds_legacy_scores(run_url: str) -> bool:
    """Scores of an evaluation made before families had folders (several families in one part)."""
    recorded, parts = _legacy(run_url)
    return recorded is not None or bool(parts)


def clear_metrics(run_url: str, families: tuple[str, ...] | None = None) -> None:
    """Remove ``families``' parts and settings, or every score of the run (``None``): ``--force``."""
    fs, directory = metrics_dir(run_url)
    if families is None:
        if fs.exists(directory):
            fs.rm(directory, recursive=True)
        return
    for family in families:
        _, folder = family_dir(run_url, family)
        if fs.exists(folder):
            fs.rm(folder, recursive=True)
