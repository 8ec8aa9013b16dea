"""Everything one shard writes, in commit order, as one torch-free call.

Why a module of its own: a GPU actor runs this in a writer process (spawned, importing no torch),
so Zarr's and Parquet's Python work does not share the interpreter whose GIL the GPU thread needs
to launch kernels. CPU actors call it in-process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from densecam_core.data.decode import ModelInput
from densecam_core.data.geometry import Geometry
from densecam_core.parallel.shared_block import BlockHandle, attached
from densecam_core.store.inputs.cache import InputCache, SourceIdentity
from densecam_core.store.layout import Shard
from densecam_core.store.writer import write_chunks, write_index_part

# a segment of the input cache is compressed by Arrow (the GIL released) while zarr encodes the chunks
_cache_writer = ThreadPoolExecutor(1, thread_name_prefix="densecam-cache-write")


def commit_shard(
    run_url: str,
    shard: Shard,
    shard_size: int,
    arrays: dict[str, np.ndarray],
    index: pd.DataFrame,
    extra_types: dict[str, pa.DataType] | None,
    cache: tuple[str, int, str, str] | None = None,
    decoded: Sequence[tuple[SourceIdentity, ModelInput]] = (),
    run_created: str | None = None,
) -> None:
    """New input-cache entries (``cache`` = store URL, size, resize, DICOM window) and the shard's chunks, written at
    the same time, then its index part: the rename that makes the shard visible comes last, after both.
    ``run_created`` keeps the run's arrays open in this process from shard to shard (``write_chunks``)."""
    caching = _cache_writer.submit(InputCache(*cache).write, decoded) if cache is not None and decoded else None
    try:
        write_chunks(run_url, shard, shard_size, arrays, run_created)
    finally:
        if caching is not None:
            caching.result()  # its error, if any, is the shard's: nothing is committed without its entries
    write_index_part(run_url, shard.index, index, extra_types)


def commit_shared_shard(
    commit: tuple[str, Shard, int, BlockHandle, pd.DataFrame, dict[str, pa.DataType] | None, Any, str | None],
    pixels: BlockHandle | None,
    decoded: Sequence[tuple[SourceIdentity, Geometry, int, int]],
) -> None:
    """``commit_shard`` in the writer process, the maps read from the actor's shared memory, and the
    decoded inputs from the decode processes' block (``pixels``: identity, geometry, slot, channels)."""
    run_url, shard, shard_size, maps, index, extra_types, cache, run_created = commit
    with contextlib.ExitStack() as stack:
        arrays = stack.enter_context(attached(maps))
        inputs = stack.enter_context(attached(pixels))["pixels"] if pixels is not None else None
        entries = [
            (identity, ModelInput(inputs[slot, :channels], geometry))  # type: ignore[index]
            for identity, geometry, slot, channels in decoded
        ]
        commit_shard(run_url, shard, shard_size, arrays, index, extra_types, cache, entries, run_created)


def ready(_: object = None) -> bool:
    """A no-op a writer process runs once at start, so its imports happen before the first shard."""
    return True
