"""A process pool started on first use and replaced once a child dies: a GPU actor's decoders and writer.

Spawned, not forked: the actor holds threads and a CUDA context. What the children run must live in
torch-free modules (``images``, ``store.commit``), so they start light; and they do not re-run the
parent's main script (``spawn_context``).
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

CLOSE_GRACE = 5.0
"""Seconds a closing pool's children get to finish before they are killed (one stuck on a dead mount)."""

RETIRED_GRACE = 1.0
"""The same for a retired pool once no shard uses it: nothing waits on its work any more."""


class _ProcessWithoutMainScript(multiprocessing.context.SpawnProcess):
    """A spawned process that does not re-run the parent's ``__main__`` script.

    Spawn runs the parent's main script again in every child (as ``__mp_main__``). In a Ray actor that
    script is Ray's worker, so every decode and writer process imported Ray (docs/PERFORMANCE.md:
    slower to start and to exit). The children run densecam functions, which never live in
    ``__main__``. Spawn skips that step for a main module without ``__file__``, so ``start`` hides it
    while the child's start-up data is taken (a main run with ``python -m`` is imported by name, as
    before).
    """

    _main_lock = threading.Lock()

    def start(self) -> None:
        main = sys.modules["__main__"]
        with self._main_lock:
            script = main.__dict__.pop("__file__", None) if getattr(main, "__spec__", None) is None else None
            try:
                super().start()
            finally:
                if script is not None:
                    main.__file__ = script


SEMAPHORE_PREFIX = "/densecam-{pid}"


class _SpawnWithoutMainScript(multiprocessing.context.SpawnContext):
    Process = _ProcessWithoutMainScript


def spawn_context() -> multiprocessing.context.BaseContext:
    """The context the pools' processes are started with: spawn, without the parent's main script.

    The pools' semaphores are named after this process (``/dev/shm/sem.densecam-<pid>-…``; multiprocessing
    names them ``mp-…`` otherwise), so those of an actor that was killed are found and unlinked by the next
    one (``shared_block.sweep_dead_blocks``), like its shared-memory blocks."""
    multiprocessing.current_process()._config["semprefix"] = SEMAPHORE_PREFIX.format(pid=os.getpid())  # type: ignore[attr-defined]
    return _SpawnWithoutMainScript()


class SpawnedPool:
    """``workers`` spawned processes, created by the first ``get``; ``what`` names them in errors.

    Shards that run at once share the pool through ``lease``. A pool whose child is stuck (a read past
    its deadline) is ``retire``d: the next lease gets new processes, and the old ones are stopped, the
    stuck one killed, once the last shard using them is done. Nothing here waits without a deadline.
    """

    def __init__(self, workers: int, what: str) -> None:
        self.workers, self.what = workers, what
        self.pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._leases: collections.Counter[ProcessPoolExecutor] = collections.Counter()

    def get(self) -> ProcessPoolExecutor:
        with self._lock:
            return self._current()

    def _current(self) -> ProcessPoolExecutor:
        if self.pool is None:
            self.pool = ProcessPoolExecutor(self.workers, mp_context=spawn_context())
        return self.pool

    @contextlib.contextmanager
    def lease(self) -> Iterator[ProcessPoolExecutor]:
        """The pool for one shard's tasks; a pool retired or broken meanwhile stops when its last lease ends."""
        with self._lock:
            pool = self._current()
            self._leases[pool] += 1
        try:
            yield pool
        finally:
            with self._lock:
                self._leases[pool] -= 1
                done = self._leases[pool] == 0 and pool is not self.pool
                if self._leases[pool] == 0:
                    del self._leases[pool]
            if done:  # in the background: the shard need not wait for the children to go
                threading.Thread(
                    target=stop, args=([pool], RETIRED_GRACE), name="densecam-pool-stop", daemon=True
                ).start()

    def retire(self) -> None:
        """Give the next lease new processes (a child of this pool is stuck); stop this one when it is unused."""
        with self._lock:
            pool, self.pool = self.pool, None
            unused = pool is not None and self._leases[pool] == 0
        if pool is not None and unused:
            stop([pool], RETIRED_GRACE)

    def broken(self, exc: BrokenProcessPool) -> RuntimeError:
        """Drop the dead pool (the next shard gets a new one); the error fails this shard, which is retried."""
        with self._lock:
            self.pool = None
        return RuntimeError(f"{self.what} died ({exc}); the shard is retried with a new one")

    def run(self, function: Callable[..., Any], *args: Any) -> Any:
        """``function(*args)`` in one of the processes, waiting for its result."""
        try:
            with self.lease() as pool:
                return pool.submit(function, *args).result()
        except BrokenProcessPool as exc:
            raise self.broken(exc) from exc

    def start(self, ready: Callable[[Any], Any]) -> None:
        """Spawn every process now and let each import ``ready``'s module (start-up, not the first shard)."""
        list(self.get().map(ready, range(self.workers)))

    def close(self, grace: float = CLOSE_GRACE) -> None:
        """Stop the processes: what they run gets ``grace`` seconds, then they are killed."""
        close_all([self], grace)

    def detach(self) -> ProcessPoolExecutor | None:
        """The running pool, which this object forgets (the next ``get`` starts a new one)."""
        with self._lock:
            pool, self.pool = self.pool, None
        return pool


def close_all(pools: Sequence[SpawnedPool], grace: float = CLOSE_GRACE) -> None:
    """Stop several pools at once: their children exit side by side rather than one pool after another."""
    stop([pool for pool in (p.detach() for p in pools) if pool is not None], grace)


def stop(pools: Sequence[ProcessPoolExecutor], grace: float) -> None:
    """Shut ``pools`` down without waiting on them: children still running after ``grace`` seconds are killed
    (``shutdown(wait=True)`` would wait forever on one stuck in a read from a dead mount)."""
    processes = []
    for pool in pools:
        processes += list((getattr(pool, "_processes", None) or {}).values())  # the executor's only handle on them
        pool.shutdown(wait=False, cancel_futures=True)  # idle children get their sentinel and exit
    deadline = time.monotonic() + grace
    running = {process.sentinel: process for process in processes}
    while running and time.monotonic() < deadline:
        for ended in multiprocessing.connection.wait(list(running), timeout=max(0.0, deadline - time.monotonic())):
            running.pop(ended, None)
    for process in running.values():
        with contextlib.suppress(OSError, ValueError):  # gone meanwhile
            process.kill()
