"""Everything one shard writes, in commit order, as one torch-free call.

Why a module of its own: a GPU actor runs this in a writer process (spawned, importing no torch),
so Zarr's and Parquet's Python work does not share the interpreter whose GIL the GPU thread needs
to launch kernels. CPU actors call it in-process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from densecam_core.geometry import Geometry
from densecam_core.images import ModelInput
from densecam_core.shared_block import BlockHandle, attached
from densecam_core.store.format import Shard
from densecam_core.store.inputs import InputCache, SourceIdentity
from densecam_core.store.writer import write_shard


def commit_shard(
    run_url: str,
    shard: Shard,
    shard_size: int,
    arrays: dict[str, np.ndarray],
    index: pd.DataFrame,
    extra_types: dict[str, pa.DataType] | None,
    cache: tuple[str, int, str] | None = None,
    decoded: Sequence[tuple[SourceIdentity, ModelInput]] = (),
    run_created: str | None = None,
) -> None:
    """New input-cache entries (``cache`` = store URL, size, resize), then the shard's chunks, then its
    index part: the rename that makes the shard visible comes last. ``run_created`` keeps the run's
    arrays open in this process from shard to shard (``write_shard``)."""
    if cache is not None and decoded:
        InputCache(*cache).write(decoded)
    write_shard(run_url, shard, shard_size, arrays, index, extra_types, run_created)


def commit_shared_shard(
    commit: tuple[str, Shard, int, BlockHandle, pd.DataFrame, dict[str, pa.DataType] | None, Any, str | None],
    pixels: BlockHandle | None,
    decoded: Sequence[tuple[SourceIdentity, Geometry]],
) -> None:
    """``commit_shard`` in the writer process, the maps (and the decoded inputs' pixels, ``str(i)`` for
    ``decoded[i]``) read from the actor's shared memory."""
    run_url, shard, shard_size, maps, index, extra_types, cache, run_created = commit
    with contextlib.ExitStack() as stack:
        arrays = stack.enter_context(attached(maps))
        inputs = stack.enter_context(attached(pixels)) if pixels is not None else {}
        entries = [(identity, ModelInput(inputs[str(i)], geometry)) for i, (identity, geometry) in enumerate(decoded)]
        commit_shard(run_url, shard, shard_size, arrays, index, extra_types, cache, entries, run_created)


def ready(_: object = None) -> bool:
    """A no-op a writer process runs once at start, so its imports happen before the first shard."""
    return True
