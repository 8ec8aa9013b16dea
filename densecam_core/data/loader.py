"""Batched, threaded decoding that overlaps with compute and never lets one bad file stop a batch.

PIL decodes and resizes with the GIL released, so threads overlap decoding with the model's
passes without the start-up cost and memory copies of worker processes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from densecam_core.data.decode import DEFAULT_MAX_PIXELS
from densecam_core.data.decode_task import load_chunk
from densecam_core.data.dicom import DEFAULT_DICOM_WINDOW
from densecam_core.data.geometry import Geometry
from densecam_core.data.preprocess import ModelInput, load_or_reason
from densecam_core.parallel.shared_block import SharedBlock


@dataclass(frozen=True)
class ImageRecord:
    """One requested image: ``position`` in the input sequence, then either its input or its error.

    ``pixels`` is the (C, size, size) uint8 model input (C = 1 for grey sources); ``from_cache``
    tells whether it came from the input cache rather than from decoding the file.
    """

    position: int
    path: str
    geometry: Geometry | None
    error: str | None
    pixels: np.ndarray | None = None
    from_cache: bool = False


@dataclass
class LoadedBatch:
    """``images`` stacks the ok records' inputs as (n, 3, size, size) uint8, in the order of the ok records
    ((n, 1, size, size) when the loader keeps grey batches grey and every image of the batch is grey)."""

    images: torch.Tensor | None
    records: list[ImageRecord]

    @property
    def ok_records(self) -> list[ImageRecord]:
        return [r for r in self.records if r.error is None]


_load = load_or_reason  # module attribute: tests replace it to simulate a hung read


@dataclass(frozen=True)
class _Part:
    """One position's share of a submitted task: the task's future, and where in its results it sits."""

    future: Future
    offset: int
    positions: tuple[int, ...]  # every position the task decodes


PROCESS_TASK_IMAGES = 8
"""Images per task for a pool of decode processes: one task per image cost the submitting process
several times more CPU time per image (docs/PERFORMANCE.md), while 8 keep a batch spread over many processes."""

DEFAULT_READ_TIMEOUT = 120.0
"""Seconds one image may take to read and decode (a 100 MB file from an object store fits easily)."""


class BatchLoader:
    """Iterate over ``paths`` in batches of ``batch_size``; ``prefetch`` batches decode ahead.

    ``cached`` maps positions to model inputs already at hand (the input cache): those are not
    decoded. Batches are uint8; the Explainer normalises them on its device. ``executor`` decodes
    instead of a pool of ``num_threads`` threads made per iteration (a GPU actor's persistent pool
    of decode processes, which keep decoding off the GIL the actor's compute thread needs).
    """

    def __init__(
        self,
        paths: Sequence[str],
        *,
        size: int = 320,
        mode: str = "stretch",
        batch_size: int = 8,
        num_threads: int = 2,
        prefetch: int = 2,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_bytes: int | None = None,
        cached: Mapping[int, ModelInput] | None = None,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        executor: Executor | None = None,
        into: SharedBlock | None = None,
        grey_batches: bool = False,
        chunk: int = 1,
        dicom_window: str = DEFAULT_DICOM_WINDOW,
        within: str | None = None,
    ) -> None:
        if batch_size < 1 or num_threads < 1:
            raise ValueError("batch_size and num_threads must be >= 1")
        self.paths = list(paths)
        self.size, self.mode, self.batch_size = size, mode, batch_size
        self.num_threads, self.prefetch, self.max_pixels = num_threads, max(1, prefetch), max_pixels
        self.max_bytes = max_bytes
        self.dicom_window = dicom_window
        self.within = within  # a folder walk's root: a file that a link leads out of it is an error row
        self.cached = dict(cached or {})
        self.read_timeout = read_timeout
        self.executor = executor
        # with ``executor``'s processes: each decodes into its slot of this block (array ``pixels``,
        # (len(paths), 3, size, size)) and returns only the geometry, so no pixels are pickled
        self.into = into if executor is not None else None
        # a batch whose images are all grey stays (n, 1, size, size): the Explainer broadcasts it on its device
        self.grey_batches = grey_batches
        # with ``executor``: images per task (consecutive positions), since each task of a process pool
        # costs this process GIL time (pickling, queues, result thread) that kernel launches need
        self.chunk = max(1, chunk) if executor is not None else 1
        self._retried: dict[int, _Part] = {}  # images of a task that outlived the deadline, each retried alone
        self.late = 0  # tasks that outlived the deadline: with ``executor``, a process of it may be stuck

    def __len__(self) -> int:
        return -(-len(self.paths) // self.batch_size)

    def __iter__(self) -> Iterator[LoadedBatch]:
        pool = self.executor or ThreadPoolExecutor(self.num_threads, thread_name_prefix="densecam-decode")
        pending: deque[_Part | ModelInput] = deque()
        try:
            next_index = 0
            lookahead = self.batch_size * (self.prefetch + 1)
            while next_index < len(self.paths) or pending:
                while next_index < len(self.paths) and len(pending) < lookahead:
                    hit = self.cached.get(next_index)
                    if hit is not None:
                        pending.append(hit)
                        next_index += 1
                        continue
                    room = min(self.chunk, lookahead - len(pending), len(self.paths) - next_index)
                    positions = [next_index]
                    while len(positions) < room and positions[-1] + 1 not in self.cached:
                        positions.append(positions[-1] + 1)
                    pending.extend(self._submit(pool, positions))
                    next_index = positions[-1] + 1
                take = min(self.batch_size, len(pending))
                start = next_index - len(pending)
                results = [self._resolve(pool, pending.popleft(), start + i) for i in range(take)]
                yield self._collate(start, results)
        finally:
            if self.executor is None:  # a read stuck past its deadline keeps its thread: do not wait for it
                pool.shutdown(wait=False, cancel_futures=True)
            else:  # a shared pool stays; what this iteration queued and no longer needs is dropped
                for item in [*pending, *self._retried.values()]:
                    if isinstance(item, _Part):
                        item.future.cancel()

    def _submit(self, pool: Executor, positions: list[int]) -> list[_Part]:
        """One task decoding ``positions``: one image through ``_load`` on threads; on ``executor``, a
        ``load_chunk`` of them, into the shared block when there is one."""
        args = (self.size, self.mode, self.max_pixels, self.max_bytes)
        future: Future[Any]
        if self.executor is None:
            future = pool.submit(_load, self.paths[positions[0]], *args, self.dicom_window, self.within)
        else:
            paths = [self.paths[p] for p in positions]
            block = self.into.handle if self.into is not None else None
            slots = positions if block is not None else None
            future = pool.submit(load_chunk, paths, *args, block, slots, self.dicom_window, self.within)
        return [_Part(future, offset, tuple(positions)) for offset in range(len(positions))]

    def _resolve(self, pool: Executor, item: _Part | ModelInput, position: int) -> tuple[ModelInput | str, bool]:
        """(the input or the error reason, whether it came from the cache). A read that outlives
        ``read_timeout`` becomes an error row instead of stalling the shard; when its task held
        several images, each is first retried in a task of its own, so only the hung one fails."""
        if not isinstance(item, _Part):
            return item, True
        item = self._retried.pop(position, item)
        try:
            result = item.future.result(timeout=self.read_timeout)
        except FutureTimeout:
            self.late += 1
            if len(item.positions) > 1:  # the first of its images to be waited for: retry each alone
                self._retried.update({p: self._submit(pool, [p])[0] for p in item.positions})
                return self._resolve(pool, self._retried.pop(position), position)
            return f"read or decode did not finish within {self.read_timeout:g} s (a hung mount, a device file?)", False
        if self.executor is not None:
            result = result[item.offset]
        if isinstance(result, tuple):  # decoded into the shared block: a view of its slot
            geometry, channels = result
            return ModelInput(self.into.arrays["pixels"][position, :channels], geometry), False  # type: ignore[union-attr]
        return result, False

    def _collate(self, start: int, results: list[tuple[ModelInput | str, bool]]) -> LoadedBatch:
        records: list[ImageRecord] = []
        arrays: list[np.ndarray] = []
        for offset, (result, from_cache) in enumerate(results):
            position = start + offset
            if isinstance(result, str):
                records.append(ImageRecord(position, self.paths[position], None, result))
            else:
                records.append(
                    ImageRecord(position, self.paths[position], result.geometry, None, result.pixels, from_cache)
                )
                arrays.append(result.pixels)
        return LoadedBatch(self._stack(arrays), records)

    def _stack(self, arrays: list[np.ndarray]) -> torch.Tensor | None:
        """(n, 3, size, size), grey images repeated into three channels; (n, 1, size, size) when the
        loader keeps grey batches grey and all are. Copied into a new array one image at a time:
        ``np.stack`` of broadcast views is far slower when every view is grey (benchmarks/collate.py)."""
        if not arrays:
            return None
        channels = 1 if self.grey_batches and all(a.shape[0] == 1 for a in arrays) else 3
        out = np.empty((len(arrays), channels, self.size, self.size), dtype=np.uint8)
        for slot, pixels in zip(out, arrays):
            slot[...] = pixels
        return torch.from_numpy(out)
