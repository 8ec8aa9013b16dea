"""Per-image quality scores of a run: ``runs/<run_id>/metrics/`` (docs/FORMAT.md, docs/METRICS.md).

One Parquet part per evaluated shard, ``part-<shard:06d>.parquet``, committed like the index: written
under a temporary name and renamed into place, so a part is either whole or absent and resume skips
the shards whose part exists. ``_evaluation.json`` records the settings the parts were scored with;
an evaluation with other settings refuses to mix its scores in. No torch import.
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


def write_metrics_part(run_url: str, shard: int, frame: pd.DataFrame) -> None:
    """Commit one shard's scores: the whole part under a temporary name, then renamed into place."""
    fs, directory = metrics_dir(run_url)
    fs.makedirs(directory, exist_ok=True)
    buffer = io.BytesIO()
    pq.write_table(metric_table(frame), buffer, compression="zstd")
    fileio.write_bytes_atomic(fs, fileio.join(directory, layout.part_name(shard)), buffer.getvalue())


def metric_parts(run_url: str) -> dict[int, str]:
    """Committed parts, shard -> path (temporary files of writes in progress are not parts)."""
    fs, directory = metrics_dir(run_url)
    fs.invalidate_cache(directory)
    if not fs.exists(directory):
        return {}
    parts = {}
    for path in fs.ls(directory, detail=False):
        match = layout.PART_NAME.match(str(path).rsplit("/", 1)[-1])
        if match:
            parts[int(match.group(1))] = str(path)
    return dict(sorted(parts.items()))


def read_metrics(run_url: str, filters: Any = None) -> pd.DataFrame:
    """Every committed score of a run as one long-form frame (empty, with the columns, when none)."""
    parts = metric_parts(run_url)
    if not parts:
        return METRIC_SCHEMA.empty_table().to_pandas()
    fs, _ = metrics_dir(run_url)
    expression = pq.filters_to_expression(filters) if isinstance(filters, list) else filters
    try:
        table = ds.dataset(list(parts.values()), filesystem=fs, format="parquet", schema=METRIC_SCHEMA).to_table(
            filter=expression
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise layout.StoreError(
            f"a metrics part of {run_url} cannot be read ({exc}); delete the damaged part-*.parquet under "
            f"{METRICS_DIR}/ and run the evaluation again to rescore that shard"
        ) from exc
    return table.to_pandas()


def read_evaluation(run_url: str) -> dict[str, Any] | None:
    fs, directory = metrics_dir(run_url)
    path = fileio.join(directory, EVALUATION_JSON)
    return fileio.read_json(fs, path) if fs.exists(path) else None


def write_evaluation(run_url: str, settings: dict[str, Any]) -> None:
    fs, directory = metrics_dir(run_url)
    fs.makedirs(directory, exist_ok=True)
    fileio.write_json_atomic(fs, fileio.join(directory, EVALUATION_JSON), fileio.strict_json(settings))


def clear_metrics(run_url: str) -> None:
    """Remove every part and the settings (``--force``): the next evaluation starts afresh."""
    fs, directory = metrics_dir(run_url)
    if fs.exists(directory):
        fs.rm(directory, recursive=True)
