"""Everything one shard writes, in commit order, as one torch-free call.

Why a module of its own: a GPU actor runs this in a writer process (spawned, importing no torch),
so Zarr's and Parquet's Python work does not share the interpreter whose GIL the GPU thread needs
to launch kernels. CPU actors call it in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from zarr.core.sync import sync  # zarr's own event loop, the one its stores are bound to

from densecam_core import fileio
from densecam_core.data.geometry import Geometry
from densecam_core.data.preprocess import ModelInput
from densecam_core.parallel.shared_block import BlockHandle, attached
from densecam_core.store import layout
from densecam_core.store.arrays import RunArrays, open_run_arrays
from densecam_core.store.index import held_by_compacted, index_table, read_state, write_parquet_atomic
from densecam_core.store.inputs.cache import InputCache
from densecam_core.store.inputs.identity import SourceIdentity
from densecam_core.store.layout import Shard

# a segment of the input cache is compressed by Arrow (the GIL released) while zarr encodes the chunks
_cache_writer = ThreadPoolExecutor(1, thread_name_prefix="densecam-cache-write")


@dataclass(frozen=True)
class CacheTarget:
    """The input cache a shard's newly decoded inputs go to (the preprocessing that made them)."""

    store_url: str
    size: int
    resize: str
    dicom_window: str

    def open(self) -> InputCache:
        return InputCache(self.store_url, self.size, self.resize, self.dicom_window)


@dataclass(frozen=True)
class ShardCommit:
    """Where and what one shard commits, besides its arrays: one object from the worker to the writer
    process. ``run_created`` (run.json's ``created``) keeps the run's arrays open from shard to shard."""

    run_url: str
    shard: Shard
    shard_size: int
    index: pd.DataFrame
    extra_types: dict[str, pa.DataType] | None = None
    cache: CacheTarget | None = None
    run_created: str | None = None


@dataclass(frozen=True)
class DecodedSlot:
    """A decoded input left in the decode processes' shared block: its file, geometry, slot and channels."""

    identity: SourceIdentity
    geometry: Geometry
    slot: int
    channels: int


def commit_shard(
    commit: ShardCommit, arrays: dict[str, np.ndarray], decoded: Sequence[tuple[SourceIdentity, ModelInput]] = ()
) -> None:
    """New input-cache entries and the shard's chunks, written at the same time, then its index part:
    the rename that makes the shard visible comes last, after both."""
    cache = commit.cache
    caching = _cache_writer.submit(cache.open().write, decoded) if cache is not None and decoded else None
    try:
        write_chunks(commit.run_url, commit.shard, commit.shard_size, arrays, commit.run_created)
    finally:
        if caching is not None:
            caching.result()  # its error, if any, is the shard's: nothing is committed without its entries
    write_index_part(commit.run_url, commit.shard.index, commit.index, commit.extra_types)


def commit_shared_shard(
    commit: ShardCommit, maps: BlockHandle, pixels: BlockHandle | None, decoded: Sequence[DecodedSlot]
) -> None:
    """``commit_shard`` in the writer process, the maps read from the actor's shared memory, and the
    decoded inputs from the decode processes' block."""
    with contextlib.ExitStack() as stack:
        arrays = stack.enter_context(attached(maps))
        inputs = stack.enter_context(attached(pixels))["pixels"] if pixels is not None else None
        entries = [
            (d.identity, ModelInput(inputs[d.slot, : d.channels], d.geometry))  # type: ignore[index]
            for d in decoded
        ]
        commit_shard(commit, arrays, entries)


def ready(_: object = None) -> bool:
    """A no-op a writer process runs once at start, so its imports happen before the first shard."""
    return True


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
    opened = (open_run_arrays(run_url, run_created) if run_created is not None else RunArrays(run_url)).covering(
        list(arrays), rows
    )
    writes = []
    for name, values in arrays.items():
        array = opened[name]
        if rows > array.shape[0]:
            # zarr would silently drop a write outside the array's shape: refuse instead
            raise layout.StoreError(
                f"shard {shard.index} (rows {shard.row_start}..{shard.row_stop - 1}) lies outside array {name!r}, which "
                f"holds {array.shape[0]} rows: the run's arrays were not grown to its plan; rerun the job to grow them"
            )
        chunk = np.full((shard_size, *array.shape[1:]), array.fill_value, dtype=array.dtype)
        chunk[:count] = values
        writes.append(array.async_array.setitem(slice(shard.row_start, rows), chunk))
    sync(_all(writes))


async def _all(awaitables: list[Any]) -> None:
    await asyncio.gather(*awaitables)


def write_index_part(
    run_url: str, shard: int, index: pd.DataFrame, extra_types: dict[str, pa.DataType] | None = None
) -> None:
    """Commit a shard: its index part under a temporary name, then renamed into place (after its chunks).

    A shard whose old rows a compacted file holds (a recompute) gets a pending part, which densecam reads
    once the driver uncovers the shard and other tools skip until a compaction merges it."""
    fs, root = fileio.filesystem(run_url)
    index_dir = fileio.join(root, layout.INDEX_DIR)
    fs.makedirs(index_dir, exist_ok=True)
    pending = shard in held_by_compacted(read_state(fs, index_dir))
    write_parquet_atomic(fs, fileio.join(index_dir, layout.part_name(shard, pending)), index_table(index, extra_types))
