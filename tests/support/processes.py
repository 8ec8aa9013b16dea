"""Waiting on processes a test started, with a deadline."""

from __future__ import annotations

import multiprocessing.connection
import time


def ended(processes, timeout: float) -> bool:
    """Whether every process has exited within ``timeout`` seconds (its sentinel is ready)."""
    sentinels = [p.sentinel for p in processes]
    deadline = time.monotonic() + timeout
    while sentinels and time.monotonic() < deadline:
        for done in multiprocessing.connection.wait(sentinels, timeout=deadline - time.monotonic()):
            sentinels.remove(done)
    return not sentinels
