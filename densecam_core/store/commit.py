"""Everything one shard writes, in commit order, as one torch-free call.

Why a module of its own: a GPU actor runs this in a writer process (spawned, importing no torch),
so Zarr's and Parquet's Python work does not share the interpreter whose GIL the GPU thread needs
to launch kernels. CPU actors call it in-process.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from densecam_core.images import ModelInput
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
) -> None:
    """New input-cache entries (``cache`` = store URL, size, resize), then the shard's chunks, then its
    index part: the rename that makes the shard visible comes last."""
    if cache is not None and decoded:
        InputCache(*cache).write(decoded)
    write_shard(run_url, shard, shard_size, arrays, index, extra_types)


def ready(_: object = None) -> bool:
    """A no-op a writer process runs once at start, so its imports happen before the first shard."""
    return True
