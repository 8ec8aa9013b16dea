"""Writing runs: the driver creates and grows arrays; workers write whole chunks, then commit.

Commit protocol for one shard: (1) every array's rows [shard start, start + shard_size) are
written as whole chunks (a chunk along ``image`` is exactly one shard, so writers never share a
chunk); (2) the shard's index part goes to a temporary name and is renamed to
``index/part-<shard>.parquet``. A shard exists for readers only once (2) happened, so a crash
anywhere leaves no visible trace; writing a shard again rewrites the same bytes (idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import platform
import threading
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.core.sync import sync  # zarr's own event loop, the one its stores are bound to

from densecam_core import fileio
from densecam_core.store import layout as fmt
from densecam_core.store.index import list_index, uncover
from densecam_core.store.layout import Shard
from densecam_core.vocabulary import BLOCK_TAPS, BLOCKS

COMPRESSORS = (ZstdCodec(level=1), Crc32cCodec())
"""zstd, then a CRC-32C of the compressed chunk: a flipped bit is an error when read, never different maps.
Level 1: float maps compress as well as at level 3 in far less encoding time (docs/PERFORMANCE.md)."""


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines a run: the model, the settings, and the array shapes they imply."""

    fingerprint: str
    checkpoint: str
    settings: dict[str, Any]  # methods, size, resize, precision, targets
    num_classes: int
    num_targets: int
    grid: dict[int, tuple[int, int]]  # block -> (h, w)
    shard_size: int
    identifiers: dict[str, Any] | None = None  # DICOM sources: pseudonymised or clear, and the key's id

    @property
    def run_id(self) -> str:
        return fmt.run_id_for(self.fingerprint, self.settings)

    def array_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-image shape of every array (without the leading ``image`` axis)."""
        k = self.num_targets
        shapes: dict[str, tuple[int, ...]] = {
            "logits": (self.num_classes,),
            fmt.TARGETS_ARRAY: (k,),
            "cam": (k, *self.grid[4]),
        }
        for method in self.settings["methods"]:
            for block in BLOCKS:
                shapes[fmt.array_name(method, block)] = (k, *self.grid[block])
        return shapes


def ensure_store(url: str) -> None:
    """Create the store marker if missing; refuse a folder that is something else's non-empty dir."""
    fs, root = fileio.filesystem(url)
    marker = fileio.join(root, fmt.MARKER)
    if fs.exists(marker):
        fmt.check_version(fileio.read_json(fs, marker).get("format_version", 0), f"store {url!r}")
        return
    if fs.exists(root) and fs.isdir(root) and [p for p in fs.ls(root, detail=False) if not p.endswith(fmt.MARKER)]:
        raise fmt.StoreError(
            f"{url!r} is a non-empty folder but not a densecam store (no {fmt.MARKER}); pick a new path"
        )
    fs.makedirs(root, exist_ok=True)
    fileio.write_json_atomic(fs, marker, {"format": fmt.FORMAT_NAME, "format_version": fmt.FORMAT_VERSION})


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
        self.run_url = fileio.url_join(self.store_url, fmt.RUNS_DIR, self.spec.run_id)

    @property
    def zarr_url(self) -> str:
        return fileio.url_join(self.run_url, fmt.ZARR_DIR)

    def create_or_open(self, manifest_source: str, manifest: pd.DataFrame | None = None) -> bool:
        """Create run.json and the arrays if new (returns True); else check the recorded settings.

        ``manifest`` fixes the run's index schema: its extra columns' types are recorded, and a later
        manifest whose values do not fit them is refused here, before any work.
        """
        ensure_store(self.store_url)
        fs, root = fileio.filesystem(self.run_url)
        run_json = fileio.join(root, fmt.RUN_JSON)
        if fs.exists(run_json):
            recorded = fileio.read_json(fs, run_json)
            fmt.check_version(recorded.get("format_version", 0), f"run {self.spec.run_id}")
            if recorded["shard_size"] != self.spec.shard_size:
                raise fmt.StoreError(
                    f"run {self.spec.run_id} was written with shard size {recorded['shard_size']}, "
                    f"not {self.spec.shard_size}: pass --shard-size {recorded['shard_size']} (or omit it)"
                )
            _check_identifiers(recorded.get("identifiers"), self.spec.identifiers, self.spec.run_id)
            if manifest is not None:  # refuse now, not in every shard
                types = recorded_extra_types(recorded)
                for name in set(types) & set(map(str, manifest.columns)):
                    _cast_extra(name, manifest[name], types[name])
            return False
        group = zarr.open_group(store=self.zarr_url, mode="a", zarr_format=3)
        for name, shape in self.spec.array_shapes().items():
            is_targets = name == fmt.TARGETS_ARRAY
            group.create_array(
                name,
                shape=(0, *shape),
                chunks=(self.spec.shard_size, *shape),
                dtype="int32" if is_targets else "float32",
                fill_value=-1 if is_targets else np.nan,
                compressors=COMPRESSORS,
                dimension_names=fmt.dimension_names(name),
                overwrite=True,
            )
        _consolidate(self.zarr_url)  # a reader opens the whole hierarchy in one read
        fileio.write_json_atomic(
            fs,
            run_json,
            {
                "format": fmt.FORMAT_NAME,
                "format_version": fmt.FORMAT_VERSION,
                "run_id": self.spec.run_id,
                "model_fingerprint": self.spec.fingerprint,
                "checkpoint": self.spec.checkpoint,
                "settings": self.spec.settings,
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
                "taps": [tap.as_json() for tap in BLOCK_TAPS],
                **({"identifiers": self.spec.identifiers} if self.spec.identifiers else {}),
            },
        )
        return True

    def planned_rows(self) -> pd.DataFrame:
        """Every image ever planned into this run, with its row and shard (from plan segments)."""
        fs, root = fileio.filesystem(self.run_url)
        plan_dir = fileio.join(root, fmt.PLAN_DIR)
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
            plan_dir = fileio.join(root, fmt.PLAN_DIR)
            fs.makedirs(plan_dir, exist_ok=True)
            name = fileio.join(plan_dir, f"plan-{allocated // size:06d}.parquet")
            _write_parquet_atomic(fs, name, pa.Table.from_pandas(segment.reset_index(drop=True), preserve_index=False))
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
        names = fileio.read_json(fs, fileio.join(root, fmt.RUN_JSON))["arrays"]  # the run's own (format 1 runs too)
        group = zarr.open_group(store=self.zarr_url, mode="r+", zarr_format=3, use_consolidated=False)
        grown = False
        for name in names:
            array = _array(group, name)
            if array.shape[0] < target:
                array.resize((target, *array.shape[1:]))
                grown = True
        if grown:
            _consolidate(self.zarr_url)  # the consolidated shapes must follow

    def _run(self) -> Any:
        from densecam_core.store.reader import Run

        fs, root = fileio.filesystem(self.run_url)
        return Run(self.store_url, self.spec.run_id, fileio.read_json(fs, fileio.join(root, fmt.RUN_JSON)))

    def shards_with_errors(self) -> set[int]:
        """Committed shards that hold error rows (``--redo-errors`` explains them again)."""
        index = self._run().read_index(filters=[("status", "=", "error")], columns=["shard"])
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
        return record_counts(self._run())


def _check_identifiers(recorded: dict[str, Any] | None, now: dict[str, Any] | None, run_id: str) -> None:
    """One run holds one kind of identifier: pseudonyms under one key, or identifiers in clear."""
    if recorded is None or now is None or recorded == now:
        return

    def said(block: dict[str, Any]) -> str:
        if block.get("identifiers") == "clear":
            return "in clear (--keep-identifiers)"
        return f"pseudonymised under the key with id {block.get('pseudonym_key_id')}"

    raise fmt.StoreError(
        f"run {run_id} holds DICOM identifiers {said(recorded)}, this job's would be {said(now)}: pass the run's "
        "key (--pseudonym-key) or the same --keep-identifiers choice, or write the new rows to another --store"
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
    path = fileio.join(root, fmt.RUN_JSON)
    meta = fileio.read_json(fs, path)
    meta["counts"] = counts
    fileio.write_json_atomic(fs, path, meta)
    return counts


def write_shard(
    run_url: str,
    shard: Shard,
    shard_size: int,
    arrays: dict[str, np.ndarray],
    index: pd.DataFrame,
    extra_types: dict[str, pa.DataType] | None = None,
    run_created: str | None = None,
) -> None:
    """Worker side: write the shard's whole chunks, then commit its index part by rename."""
    write_chunks(run_url, shard, shard_size, arrays, run_created)
    write_index_part(run_url, shard.index, index, extra_types)


def write_chunks(
    run_url: str, shard: Shard, shard_size: int, arrays: dict[str, np.ndarray], run_created: str | None = None
) -> None:
    """The shard's whole chunks, every array at once (encoding and file writes overlap).

    ``arrays[name]`` holds ``shard.row_stop - shard.row_start`` rows; the chunk's remaining rows
    are filled with NaN so that every write covers exactly one whole chunk. ``run_created`` (run.json's
    ``created``) lets a process keep the run's arrays open from shard to shard; without it they are
    opened for this shard alone.
    """
    if shard.row_start % shard_size or shard.row_stop - shard.row_start > shard_size:
        raise ValueError(f"shard {shard} is not one chunk of size {shard_size}")
    count = shard.row_stop - shard.row_start
    for name, values in arrays.items():
        if values.shape[0] != count:
            raise ValueError(f"array {name!r} has {values.shape[0]} rows for a shard of {count}")
    rows = shard.row_start + shard_size
    opened = (_open_run(run_url, run_created) if run_created is not None else RunArrays(run_url)).covering(
        list(arrays), rows
    )
    writes = []
    for name, values in arrays.items():
        array = opened[name]
        if rows > array.shape[0]:
            # zarr would silently drop a write outside the array's shape: refuse instead
            raise fmt.StoreError(
                f"shard {shard.index} (rows {shard.row_start}..{shard.row_stop - 1}) lies outside array {name!r}, which "
                f"holds {array.shape[0]} rows: the run's arrays were not grown to its plan; rerun the job to grow them"
            )
        chunk = np.full((shard_size, *array.shape[1:]), array.fill_value, dtype=array.dtype)
        chunk[:count] = values
        writes.append(array.async_array.setitem(slice(shard.row_start, rows), chunk))
    sync(_all(writes))


async def _all(awaitables: list[Any]) -> None:
    await asyncio.gather(*awaitables)


class RunArrays:
    """One run's Zarr arrays as a process opened them: reused from shard to shard (opening ~25 arrays
    is a metadata read each), reopened when a shard needs rows they did not hold (the driver grew them)."""

    def __init__(self, run_url: str) -> None:
        self.zarr_url = fileio.url_join(run_url, fmt.ZARR_DIR)
        self.arrays: dict[str, zarr.Array] = {}
        self._lock = threading.Lock()

    def covering(self, names: list[str], rows: int) -> dict[str, zarr.Array]:
        with self._lock:
            stale = [n for n in names if n not in self.arrays or self.arrays[n].shape[0] < rows]
            if stale:
                group = zarr.open_group(store=self.zarr_url, mode="r+", zarr_format=3, use_consolidated=False)
                self.arrays.update({name: _array(group, name) for name in stale})
            return {name: self.arrays[name] for name in names}


@functools.lru_cache(maxsize=4)
def _open_run(run_url: str, created: str) -> RunArrays:
    """The few runs this process writes to, keyed by URL and creation time (a run deleted and created
    again at the same URL is a different run, whose arrays must be opened anew)."""
    return RunArrays(run_url)


def write_index_part(
    run_url: str, shard: int, index: pd.DataFrame, extra_types: dict[str, pa.DataType] | None = None
) -> None:
    """Commit a shard: its index part under a temporary name, then renamed into place (after its chunks)."""
    fs, root = fileio.filesystem(run_url)
    index_dir = fileio.join(root, fmt.INDEX_DIR)
    fs.makedirs(index_dir, exist_ok=True)
    _write_parquet_atomic(fs, fileio.join(index_dir, fmt.part_name(shard)), index_table(index, extra_types))


def _consolidate(url: str) -> None:
    """Consolidated metadata (driver only, after creating or growing arrays); zarr warns that it is not
    in the v3 specification yet, which readers that ignore it tolerate: they read each zarr.json."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(url)


def _array(group: zarr.Group, name: str) -> zarr.Array:
    try:
        node = group[name]
    except KeyError:
        raise fmt.StoreError(
            f"array {name!r} is missing from {group.store}: the run's heatmaps.zarr is damaged; delete the run "
            "folder to explain it anew"
        ) from None
    if not isinstance(node, zarr.Array):
        raise fmt.StoreError(f"{name!r} in {group.store} is a group, not an array: the run's heatmaps.zarr is damaged")
    return node


def index_table(index: pd.DataFrame, extra_types: dict[str, pa.DataType] | None = None) -> pa.Table:
    """The index DataFrame as Arrow: the documented types for the core columns, and for extra manifest
    columns the type the run recorded when it was created (one schema for every part of a run)."""
    fields = {f.name: f for f in fmt.INDEX_FIELDS}
    extra_types = extra_types or {}
    missing = [c for c in fmt.CORE_INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise ValueError(f"index rows lack columns {missing}")
    columns, names = [], []
    for name in index.columns:
        values = index[name]
        if name in fields:
            columns.append(_core_column(values, fields[name].type))
        elif name in extra_types:
            columns.append(_cast_extra(name, values, extra_types[name]))
        else:
            columns.append(pa.Array.from_pandas(values))
        names.append(name)
    return pa.Table.from_arrays(columns, names=names)


def _core_column(values: pd.Series, kind: pa.DataType) -> pa.Array:
    """A core column in its documented type, missing values (None, NaN, NA) as nulls: converted by Arrow
    directly where it can (far cheaper than going through Python objects, docs/PERFORMANCE.md), else value by value."""
    try:
        return pa.Array.from_pandas(values, type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return pa.array(values.astype(object).where(values.notna(), None).tolist(), type=kind)


def _cast_extra(name: str, values: pd.Series, target: pa.DataType) -> pa.Array:
    array = pa.Array.from_pandas(values)
    if array.type == target or array.type == pa.null():
        return array.cast(target)
    try:
        return array.cast(target)  # safe cast: 3.0 -> 3 passes, 3.5 -> 3 is refused
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise fmt.StoreError(
            f"manifest column {name!r} was {target} when this run was created and is now {array.type} with values "
            f"that do not fit ({exc}); rename the column, fix its values, or write a new run (another --store)"
        ) from None


def recorded_extra_types(run_meta: dict[str, Any]) -> dict[str, pa.DataType]:
    """The extra columns' types a run recorded at creation (types that carry no constraint left out)."""
    out = {}
    for name, alias in run_meta.get("index_extra_types", {}).items():
        try:
            kind = pa.type_for_alias(alias)
        except ValueError:
            continue
        if kind != pa.null():
            out[name] = kind
    return out


def extra_index_types(manifest: pd.DataFrame) -> dict[str, pa.DataType]:
    """Arrow types of a manifest's extra columns (not core index columns), as an index part would hold them."""
    core = set(fmt.CORE_INDEX_COLUMNS)
    return {str(c): pa.Array.from_pandas(manifest[c]).type for c in manifest.columns if c not in core}


def _write_parquet_atomic(fs: Any, path: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    fileio.write_bytes_atomic(fs, path, buffer.getvalue())
