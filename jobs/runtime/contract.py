"""What a worker returns to the driver for each shard, and the work items the driver hands out.

Both jobs' workers return a ``ShardResult``; the driver loop counts them without knowing which job ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from densecam_core.store.layout import Shard

WorkItem = tuple[Shard, pd.DataFrame]
"""A shard and its manifest (or index) rows, as queued by the driver."""


@dataclass(frozen=True)
class ShardResult:
    """A committed shard: how many images it held, how they ended and where the time went."""

    shard: int
    images: int
    ok: int
    errors: int
    seconds: dict[str, float] = field(default_factory=dict)
    images_decoded: int = 0  # read from their files (error rows of unreadable files included)
    images_from_cache: int = 0
    cache_damaged: int = 0  # cached inputs that could not be read back (decoded again, counted in images_decoded)
