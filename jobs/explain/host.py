"""A GPU actor's host processes: decode processes and a writer process beside the thread that drives the device.

Why: the thread that launches kernels needs the GIL; decoding and Zarr/Parquet writes done in the
actor's own interpreter would take it. Decode processes write pixels into shared memory, the writer
process reads the maps from it: neither is pickled. CPU actors have none and do everything in-process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np

from densecam_core.data.decode_task import (
    ready as decoder_ready,  # lives in decode: children import no torch  # lives in decode: children import no torch
)
from densecam_core.data.loader import BatchLoader
from densecam_core.data.preprocess import ModelInput
from densecam_core.parallel.shared_block import SharedBlock, shared_or_none, sweep_dead_blocks
from densecam_core.parallel.spawned import SpawnedPool, close_all
from densecam_core.store.inputs.identity import SourceIdentity
from densecam_core.store.shard import DecodedSlot, ShardCommit, commit_shard, commit_shared_shard
from densecam_core.store.shard import ready as writer_ready


class HostProcesses:
    """``processes`` decode processes and one writer process (none when ``processes`` is 0)."""

    def __init__(self, processes: int) -> None:
        if processes > 0:
            sweep_dead_blocks()  # what actors of a killed job left in this node's shared memory
        self.decode = SpawnedPool(processes, "a decode process") if processes > 0 else None
        self.write = SpawnedPool(1, "the writer process") if processes > 0 else None  # writes with them

    def start(self) -> None:
        """Spawn the processes and let them import now, while the actor starts, not in its first shard."""
        if self.decode is not None and self.write is not None:
            self.decode.start(decoder_ready)
            self.write.start(writer_ready)

    def shared(self, specs: dict[str, tuple[tuple[int, ...], Any]]) -> SharedBlock | None:
        """A shared block the writer process will read, or None (no writer process, or no room)."""
        return shared_or_none(specs) if self.write is not None else None

    def decoders(self) -> contextlib.AbstractContextManager[Any]:
        """The decode processes' executor for one shard (None: the loader decodes on threads)."""
        return self.decode.lease() if self.decode is not None else contextlib.nullcontext(None)

    def batches(self, loader: BatchLoader) -> Iterator[Any]:
        """The loader's batches; a decode process that died (killed, or a decoder crash) fails the shard,
        which the driver retries, and the next shard gets a fresh pool."""
        try:
            yield from loader
        except BrokenProcessPool as exc:
            if self.decode is None:
                raise
            raise self.decode.broken(exc) from exc
        if loader.late and self.decode is not None:  # a decode process may still be stuck in that read
            self.decode.retire()

    def commit(
        self,
        commit: ShardCommit,
        outputs: dict[str, np.ndarray] | SharedBlock,
        decoded: Sequence[tuple[SourceIdentity, ModelInput]],
        decoded_at: Sequence[int],
        pixels: SharedBlock | None,
    ) -> None:
        """``commit_shard`` here, or in the writer process: the maps and the decoded inputs (at their slots
        ``decoded_at`` of ``pixels``) read from shared memory, or pickled where it had no room for them."""
        caching = commit.cache is not None and bool(decoded)
        if self.write is None or not isinstance(outputs, SharedBlock) or (caching and pixels is None):
            arrays = outputs.arrays if isinstance(outputs, SharedBlock) else outputs
            if self.write is None:
                commit_shard(commit, arrays, decoded)
            else:
                self.write.run(commit_shard, commit, arrays, decoded)
            return
        entries = (
            [DecodedSlot(identity, m.geometry, at, m.pixels.shape[0]) for (identity, m), at in zip(decoded, decoded_at)]
            if caching
            else []
        )
        handle = pixels.handle if caching and pixels is not None else None
        self.write.run(commit_shared_shard, commit, outputs.handle, handle, entries)

    def close(self) -> None:
        """Stop the processes (before the actor is killed: no orphans or leaked semaphores)."""
        close_all([pool for pool in (self.decode, self.write) if pool is not None])
