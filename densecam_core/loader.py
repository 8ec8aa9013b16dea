"""Batched, threaded decoding that overlaps with compute and never lets one bad file stop a batch.

PIL decodes and resizes with the GIL released, so threads overlap decoding with the model's
passes without the start-up cost and memory copies of worker processes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from densecam_core.geometry import Geometry
from densecam_core.images import DEFAULT_MAX_PIXELS, ImageError, Preprocessed, load_for_model


@dataclass(frozen=True)
class ImageRecord:
    """One requested image: ``position`` in the input sequence, then either its geometry or its error."""

    position: int
    path: str
    geometry: Geometry | None
    error: str | None


@dataclass
class LoadedBatch:
    """``images`` stacks the successfully decoded images, in the order of the ok records."""

    images: torch.Tensor | None
    records: list[ImageRecord]

    @property
    def ok_records(self) -> list[ImageRecord]:
        return [r for r in self.records if r.error is None]


def _load(path: str, size: int, mode: str, max_pixels: int) -> Preprocessed | str:
    try:
        return load_for_model(path, size, mode, max_pixels=max_pixels)
    except ImageError as exc:
        return exc.reason
    except Exception as exc:  # the per-image boundary: any decoder bug becomes an error row
        return f"unexpected {type(exc).__name__}: {exc}"


class BatchLoader:
    """Iterate over ``paths`` in batches of ``batch_size``; ``prefetch`` batches decode ahead."""

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
    ) -> None:
        if batch_size < 1 or num_threads < 1:
            raise ValueError("batch_size and num_threads must be >= 1")
        self.paths = list(paths)
        self.size, self.mode, self.batch_size = size, mode, batch_size
        self.num_threads, self.prefetch, self.max_pixels = num_threads, max(1, prefetch), max_pixels

    def __len__(self) -> int:
        return -(-len(self.paths) // self.batch_size)

    def __iter__(self) -> Iterator[LoadedBatch]:
        with ThreadPoolExecutor(self.num_threads, thread_name_prefix="densecam-decode") as pool:
            pending: deque[Future] = deque()
            next_index = 0
            lookahead = self.batch_size * (self.prefetch + 1)
            while next_index < len(self.paths) or pending:
                while next_index < len(self.paths) and len(pending) < lookahead:
                    pending.append(pool.submit(_load, self.paths[next_index], self.size, self.mode, self.max_pixels))
                    next_index += 1
                take = min(self.batch_size, len(pending))
                start = next_index - len(pending)
                results = [pending.popleft().result() for _ in range(take)]
                yield self._collate(start, results)

    def _collate(self, start: int, results: list[Preprocessed | str]) -> LoadedBatch:
        records: list[ImageRecord] = []
        arrays: list[np.ndarray] = []
        for offset, result in enumerate(results):
            position = start + offset
            if isinstance(result, str):
                records.append(ImageRecord(position, self.paths[position], None, result))
            else:
                records.append(ImageRecord(position, self.paths[position], result.geometry, None))
                arrays.append(result.array)
        images = torch.from_numpy(np.stack(arrays)) if arrays else None
        return LoadedBatch(images, records)
