"""Writing runs: the driver creates and grows arrays; workers write whole chunks, then commit.

Commit protocol for one shard: (1) every array's rows [shard start, start + shard_size) are
written as whole chunks (a chunk along ``image`` is exactly one shard, so writers never share a
chunk); (2) the shard's index part goes to a temporary name and is renamed to
``index/part-<shard>.parquet``. A shard exists for readers only once (2) happened, so a crash
anywhere leaves no visible trace; writing a shard again rewrites the same bytes (idempotent).
"""

from __future__ import annotations

import contextlib
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import zarr

from densecam_core import fileio
from densecam_core.store import layout
from densecam_core.store.arrays import COMPRESSORS, consolidate, open_array
from densecam_core.store.index import (
    cast_extra,
    extra_index_types,
    list_index,
    recorded_extra_types,
    uncover,
    write_parquet_atomic,
)
from densecam_core.store.record import RunRecord, RunSettings, run_id_for
from densecam_core.vocabulary import DEFAULT_ARCHITECTURE, chosen_keys, taps_for


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines a run: the model, the settings, and the array shapes they imply."""

    fingerprint: str
    checkpoint: str
    settings: RunSettings
    num_classes: int
    num_targets: int
    grid: dict[int, tuple[int, int]]  # block -> (h, w)
    shard_size: int
    identifiers: dict[str, Any] | None = None  # DICOM sources: pseudonymised or clear, and the key's id
    architecture: str = DEFAULT_ARCHITECTURE  # the DenseNet explained: its taps' channels follow

    @property
    def run_id(self) -> str:
        return run_id_for(self.fingerprint, self.settings)

    def array_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-image shape of every array (without the leading ``image`` axis)."""
        k = self.num_targets
        shapes: dict[str, tuple[int, ...]] = {
            "logits": (self.num_classes,),
            layout.TARGETS_ARRAY: (k,),
            "cam": (k, *self.grid[4]),
        }
        for key in chosen_keys(self.settings.methods):  # every method at every block (CAM is above)
            shapes[key.array_name] = (k, *self.grid[key.block])
        return shapes


def ensure_store(url: str) -> None:
    """Create the store marker if missing; refuse a folder that is something else's non-empty dir."""
    fs, root = fileio.filesystem(url)
    marker = fileio.join(root, layout.MARKER)
    if fs.exists(marker):
        layout.check_version(fileio.read_json(fs, marker).get("format_version", 0), f"store {url!r}")
        return
    if fs.exists(root) and fs.isdir(root) and [p for p in fs.ls(root, detail=False) if not p.endswith(layout.MARKER)]:
        raise layout.StoreError(
            f"{url!r} is a non-empty folder but not a densecam store (no {layout.MARKER}); pick a new path"
        )
    fs.makedirs(root, exist_ok=True)
    fileio.write_json_atomic(fs, marker, {"format": layout.FORMAT_NAME, "format_version": layout.FORMAT_VERSION})


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("densecam", "torch", "torchvision", "zarr", "pyarrow", "pandas", "ray"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out


@dataclass
class RunWriter:
    """Driver-side handle: creates the run, plans rows for new images, grows the arrays."""

    store_url: str
    spec: RunSpec
    run_url: str = field(init=False)

    def __post_init__(self) -> None:
        self.run_url = fileio.url_join(self.store_url, layout.RUNS_DIR, self.spec.run_id)

    @property
    def zarr_url(self) -> str:
        return fileio.url_join(self.run_url, layout.ZARR_DIR)

    def create_or_open(self, manifest_source: str, manifest: pd.DataFrame | None = None) -> bool:
        """Create run.json and the arrays if new (returns True); else check the recorded settings.

        ``manifest`` fixes the run's index schema: its extra columns' types are recorded, and a later
        manifest whose values do not fit them is refused here, before any work.
        """
        ensure_store(self.store_url)
        fs, root = fileio.filesystem(self.run_url)
        run_json = fileio.join(root, layout.RUN_JSON)
        if fs.exists(run_json):
            recorded = fileio.read_json(fs, run_json)
            layout.check_version(recorded.get("format_version", 0), f"run {self.spec.run_id}")
            record = RunRecord.parse(recorded)
            if record.shard_size != self.spec.shard_size:
                raise layout.StoreError(
                    f"run {self.spec.run_id} was written with shard size {record.shard_size}, "
                    f"not {self.spec.shard_size}: pass `shard_size` {record.shard_size} (or omit it)"
                )
            _check_identifiers(dict(record.identifiers) or None, self.spec.identifiers, self.spec.run_id)
            if not record.identifiers and self.spec.identifiers:
                # the first job with identifying rows fixes the run's mode: a later job with the other is refused
                fileio.write_json_atomic(fs, run_json, {**recorded, "identifiers": self.spec.identifiers})
            if manifest is not None:  # refuse now, not in every shard
                types = recorded_extra_types(record.index_extra_types)
                for name in set(types) & set(map(str, manifest.columns)):
                    cast_extra(name, manifest[name], types[name])
            return False
        group = zarr.open_group(store=self.zarr_url, mode="a", zarr_format=3)
        for name, shape in self.spec.array_shapes().items():
            is_targets = name == layout.TARGETS_ARRAY
            group.create_array(
                name,
                shape=(0, *shape),
                chunks=(self.spec.shard_size, *shape),
                dtype="int32" if is_targets else "float32",
                fill_value=-1 if is_targets else np.nan,
                compressors=COMPRESSORS,
                dimension_names=layout.dimension_names(name),
                overwrite=True,
            )
        consolidate(self.zarr_url)  # a reader opens the whole hierarchy in one read
        fileio.write_json_atomic(
            fs,
            run_json,
            {
                "format": layout.FORMAT_NAME,
                "format_version": layout.FORMAT_VERSION,
                "run_id": self.spec.run_id,
                "model_fingerprint": self.spec.fingerprint,
                "checkpoint": self.spec.checkpoint,
                "settings": self.spec.settings.recorded(),
                "num_classes": self.spec.num_classes,
                "num_targets": self.spec.num_targets,
                "grid": {str(b): list(hw) for b, hw in self.spec.grid.items()},
                "index_extra_types": {}
                if manifest is None
                else {name: str(kind) for name, kind in extra_index_types(manifest).items()},
                "shard_size": self.spec.shard_size,
                "arrays": {k: list(v) for k, v in self.spec.array_shapes().items()},
                "created": datetime.now(timezone.utc).isoformat(),
                "manifest_source": manifest_source,
                "versions": _versions(),
                "architecture": self.spec.architecture,
                "taps": [tap.as_json() for tap in taps_for(self.spec.architecture)],
                **({"identifiers": self.spec.identifiers} if self.spec.identifiers else {}),
            },
        )
        return True

    def planned_rows(self) -> pd.DataFrame:
        """Every image ever planned into this run, with its row and shard (from plan segments)."""
        fs, root = fileio.filesystem(self.run_url)
        plan_dir = fileio.join(root, layout.PLAN_DIR)
        files = (
            sorted(p for p in fs.ls(plan_dir, detail=False) if p.endswith(".parquet")) if fs.exists(plan_dir) else []
        )
        if not files:
            return pd.DataFrame({"image_id": pd.Series(dtype="string"), "row": pd.Series(dtype="int64")})
        return pd.concat([pq.read_table(f, filesystem=fs).to_pandas() for f in files], ignore_index=True)

    def plan(self, manifest: pd.DataFrame) -> pd.DataFrame:
        """Assign rows to the manifest's images: planned ones keep theirs, new ones are appended.

        New images start at the next shard boundary, so committed chunks are never touched again.
        A plan segment is written (atomically) before any work, so a restarted driver finds the
        same rows. Returns the manifest with ``row`` and ``shard`` columns.
        """
        planned = self.planned_rows()
        known = dict(zip(planned["image_id"], planned["row"]))
        is_new = ~manifest["image_id"].isin(known)
        out = manifest.copy()
        out["row"] = out["image_id"].map(known)
        if is_new.any():
            size = self.spec.shard_size
            allocated = 0 if planned.empty else (int(planned["row"].max()) // size + 1) * size
            new_rows = np.arange(allocated, allocated + int(is_new.sum()))
            out.loc[is_new, "row"] = new_rows
            segment = out.loc[is_new].copy()
            segment.attrs = {}  # pandas writes attrs into the Parquet metadata: only the rows belong in the store
            segment["row"] = segment["row"].astype("int64")
            fs, root = fileio.filesystem(self.run_url)
            plan_dir = fileio.join(root, layout.PLAN_DIR)
            fs.makedirs(plan_dir, exist_ok=True)
            name = fileio.join(plan_dir, layout.plan_segment_name(allocated // size))
            write_parquet_atomic(fs, name, pa.Table.from_pandas(segment.reset_index(drop=True), preserve_index=False))
        out["row"] = out["row"].astype("int64")
        # every time, not only after a new segment: a driver that died between writing a segment and
        # growing the arrays left rows no array covers (idempotent when they already do)
        highest = max([int(out["row"].max())] + ([] if planned.empty else [int(planned["row"].max())]))
        self.grow(highest + 1)
        out["shard"] = (out["row"] // self.spec.shard_size).astype("int32")
        return out

    def grow(self, rows: int) -> None:
        """Resize every array to hold ``rows`` images, rounded up to whole chunks (driver only)."""
        size = self.spec.shard_size
        target = -(-rows // size) * size
        fs, root = fileio.filesystem(self.run_url)
        names = RunRecord.parse(fileio.read_json(fs, fileio.join(root, layout.RUN_JSON))).arrays  # format 1 runs' too
        group = zarr.open_group(store=self.zarr_url, mode="r+", zarr_format=3, use_consolidated=False)
        grown = False
        for name in names:
            array = open_array(group, name)
            if array.shape[0] < target:
                array.resize((target, *array.shape[1:]))
                grown = True
        if grown:
            consolidate(self.zarr_url)  # the consolidated shapes must follow

    def open_run(self) -> Any:
        from densecam_core.store.run import Run

        fs, root = fileio.filesystem(self.run_url)
        return Run(self.store_url, self.spec.run_id, fileio.read_json(fs, fileio.join(root, layout.RUN_JSON)))

    def shards_with_errors(self) -> set[int]:
        """Committed shards that hold error rows (``--redo-errors`` explains them again)."""
        index = self.open_run().read_index(filters=[("status", "=", "error")], columns=["shard"])
        return {int(s) for s in index["shard"]}

    def committed_shards(self) -> set[int]:
        fs, root = fileio.filesystem(self.run_url)
        return list_index(fs, root).shards

    def reopen(self, shards: set[int]) -> None:
        """Recomputed shards whose new parts are committed leave the compacted index, so those parts are read."""
        fs, root = fileio.filesystem(self.run_url)
        uncover(fs, root, shards)

    def record_counts(self) -> dict[str, Any]:
        """Write the committed counts into run.json (driver, holding the lock): listings read them from there."""
        return record_counts(self.open_run())


def _check_identifiers(recorded: dict[str, Any] | None, now: dict[str, Any] | None, run_id: str) -> None:
    """One run holds one kind of identifier: pseudonyms under one key, or identifiers in clear."""
    if recorded is None or now is None or recorded == now:
        return

    def said(block: dict[str, Any]) -> str:
        if block.get("identifiers") == "clear":
            return "in clear (`keep_identifiers`)"
        return f"pseudonymised under the key with id {block.get('pseudonym_key_id')}"

    raise layout.StoreError(
        f"run {run_id} holds DICOM identifiers {said(recorded)}, this job's would be {said(now)}: pass the run's "
        "key (`pseudonym_key`) or the same `keep_identifiers` choice, or write the new rows to another `store`"
    )


def record_counts(run: Any) -> dict[str, Any]:
    """Count ``run``'s committed rows and store the counts in its run.json (atomically)."""
    status = run.read_index(columns=["status"])["status"]
    counts = {
        "images": len(status),
        "ok": int((status == "ok").sum()),
        "errors": int((status == "error").sum()),
        "updated": datetime.now(timezone.utc).isoformat(),
    }
    fs, root = fileio.filesystem(run.url)
    path = fileio.join(root, layout.RUN_JSON)
    meta = fileio.read_json(fs, path)
    meta["counts"] = counts
    fileio.write_json_atomic(fs, path, meta)
    return counts
