"""A shard's inputs from the cache: each file's identity now, the hits, and their pixels read back (damage counted, never fatal)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import NamedTuple

from densecam_core.data.preprocess import ModelInput
from densecam_core.store.inputs.cache import InputCache
from densecam_core.store.inputs.identity import (
    SourceIdentity,
    identify_paths,
)


class CachedInputs(NamedTuple):
    identities: list[SourceIdentity | None]  # each file's identity, taken before decoding
    inputs: dict[int, ModelInput]  # position -> its cached input, for unchanged files
    damaged: int  # cache hits whose segment could not be read: decoded again


def cached_model_inputs(
    cache: InputCache | None,
    paths: Sequence[str],
    *,
    threads: int = 2,
    lock: threading.Lock | None = None,
    executor: Executor | None = None,
) -> CachedInputs:
    """Each file's identity and the inputs ``cache`` holds for unchanged, readable entries.

    Identities are taken by ``identify_paths`` (on ``executor``, a worker's persistent pool of
    ``threads``). ``lock`` guards the cache's view of committed segments when several shards share it.
    """
    if cache is None:
        return CachedInputs([None] * len(paths), {}, 0)
    identities = identify_paths(paths, threads, executor, content=cache.identity == "content")
    with lock or contextlib.nullcontext():
        hits = cache.lookup(identities)
    inputs = cache.read(hits)
    return CachedInputs(identities, inputs, len(hits) - len(inputs))
