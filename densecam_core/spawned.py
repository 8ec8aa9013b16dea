"""A process pool started on first use and replaced once a child dies: a GPU actor's decoders and writer.

Spawned, not forked: the actor holds threads and a CUDA context. What the children run must live in
torch-free modules (``images``, ``store.commit``), so they start light.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any


class SpawnedPool:
    """``workers`` spawned processes, created by the first ``get``; ``what`` names them in errors."""

    def __init__(self, workers: int, what: str) -> None:
        self.workers, self.what = workers, what
        self.pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()  # shards that run at once share the pool

    def get(self) -> ProcessPoolExecutor:
        with self._lock:
            if self.pool is None:
                self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
            return self.pool

    def broken(self, exc: BrokenProcessPool) -> RuntimeError:
        """Drop the dead pool (the next shard gets a new one); the error fails this shard, which is retried."""
        with self._lock:
            self.pool = None
        return RuntimeError(f"{self.what} died ({exc}); the shard is retried with a new one")

    def run(self, function: Callable[..., Any], *args: Any) -> Any:
        """``function(*args)`` in one of the processes, waiting for its result."""
        try:
            return self.get().submit(function, *args).result()
        except BrokenProcessPool as exc:
            raise self.broken(exc) from exc

    def start(self, ready: Callable[[Any], Any]) -> None:
        """Spawn every process now and let each import ``ready``'s module (start-up, not the first shard)."""
        list(self.get().map(ready, range(self.workers)))

    def close(self) -> None:
        with self._lock:
            pool, self.pool = self.pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
