"""Small runs written without a model: specs, manifests, fake maps, committed shards."""

from __future__ import annotations

import numpy as np
import pandas as pd

from densecam_core import block_grid, open_store
from densecam_core.store import layout
from densecam_core.store.layout import Shard, plan_shards
from densecam_core.store.record import RunSettings
from densecam_core.store.shard import ShardCommit, commit_shard
from densecam_core.store.writer import RunSpec, RunWriter

SIZE = 64
GRID = block_grid(SIZE)


def spec(fingerprint: str = "f" * 64, shard_size: int = 4, methods=("gradcam",)) -> RunSpec:
    return RunSpec(fingerprint, "test.pt", RunSettings(tuple(methods), SIZE), 1, 1, GRID, shard_size)


def manifest(n: int, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": [f"img{i:03d}.png" for i in range(start, start + n)],
            "path": [f"/x/img{i:03d}.png" for i in range(start, start + n)],
            "split": "valid",
            "body_part": "WRIST",
            "patient_id": "p1",
            "study_id": "p1/XR_WRIST/study1",
            "view": 1,
            "label": 1,
            "hospital": "north",
        }
    )


def fake_outputs(rows: np.ndarray, the_spec: RunSpec) -> dict[str, np.ndarray]:
    """Arrays whose every value encodes its row, so misplaced rows are caught."""
    return {
        name: np.broadcast_to(rows.reshape(-1, *([1] * len(shape))), (len(rows), *shape)).astype(np.float32) * (1 + i)
        for i, (name, shape) in enumerate(the_spec.array_shapes().items())
    }


def index_rows(
    planned: pd.DataFrame, run_id: str, height: int = 50, width: int = 80, mode: str = "stretch"
) -> pd.DataFrame:
    out = planned.copy()
    out["orig_height"], out["orig_width"], out["resize_mode"] = height, width, mode
    out["logit"], out["prob"] = 0.5, 0.62
    out["status"], out["error"], out["run_id"] = "ok", None, run_id
    return out


def commit_all(writer: RunWriter, planned: pd.DataFrame, skip: set[int] = frozenset(), **geometry) -> None:
    for shard_index, rows in planned.groupby("shard"):
        if shard_index in skip:
            continue
        start = int(rows["row"].min())
        shard = plan_shards(len(rows), writer.spec.shard_size, start)[0]
        write_shard(
            writer.run_url,
            shard,
            writer.spec.shard_size,
            fake_outputs(rows["row"].to_numpy(), writer.spec),
            index_rows(rows, writer.spec.run_id, **geometry),
        )


def committed_run(tmp_path, n: int = 8):
    writer = RunWriter(str(tmp_path / "store"), spec())
    writer.create_or_open("m")
    commit_all(writer, writer.plan(manifest(n)))
    return writer, open_store(str(tmp_path / "store")).run("latest")


def chunk_file(writer: RunWriter, array: str, shard: int):
    from pathlib import Path

    folder = Path(writer.run_url) / layout.ZARR_DIR / array / "c" / str(shard)
    return next(p for p in folder.rglob("*") if p.is_file())


def write_shard(
    run_url: str,
    shard: Shard,
    shard_size: int,
    arrays: dict[str, np.ndarray],
    index: pd.DataFrame,
    extra_types: dict | None = None,
    run_created: str | None = None,
) -> None:
    """A shard's chunks and index part, as a worker commits them (no input cache)."""
    commit_shard(ShardCommit(run_url, shard, shard_size, index, extra_types, run_created=run_created), arrays)
