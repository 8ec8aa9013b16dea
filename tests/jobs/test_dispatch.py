"""The driver loop (jobs/runtime/dispatch.py) against a fake Ray: deadlines, retries, the real error text."""

from __future__ import annotations

import itertools
import time
from collections import deque

import pandas as pd

from densecam_core.store.layout import Shard
from jobs.explain.config import ExplainConfig
from jobs.runtime.dispatch import Dispatcher, _task_error_text
from jobs.runtime.resources import Resources


class Task:
    def __init__(self, value=None, error=None, hangs=False) -> None:
        self.value, self.error, self.hangs = value, error, hangs


class FakeRay:
    def __init__(self) -> None:
        self.killed: list[str] = []

    def wait(self, refs, num_returns=1, timeout=None):
        ready = [r for r in refs if not (isinstance(r, Task) and r.hangs)]
        if not ready:
            time.sleep(min(timeout or 0.01, 0.01))
        return ready[:num_returns], []

    def get(self, ref):
        if isinstance(ref, Task):
            if ref.error:
                raise ref.error
            return ref.value
        return 1  # readiness probe

    def kill(self, actor, no_restart=True):
        self.killed.append(actor.name)

    def cluster_resources(self):
        return {"CPU": 2}


class Actor:
    names = itertools.count()

    def __init__(self) -> None:
        self.name = f"actor{next(self.names)}"
        self.pid = self

    def remote(self):
        return f"probe-{self.name}"


class Result:
    def __init__(self, shard: int) -> None:
        self.shard, self.images, self.ok, self.errors = shard, 1, 1, 0
        self.images_decoded, self.images_from_cache, self.cache_damaged, self.seconds = 1, 0, 0, {}


class NoLock:
    def heartbeat(self) -> None:
        pass


def work(count: int) -> deque:
    return deque((Shard(i, i, i + 1), pd.DataFrame({"row": [i]})) for i in range(count))


def test_a_shard_that_hangs_past_the_deadline_is_retried_on_a_new_actor():
    ray = FakeRay()
    calls: dict[int, int] = {}

    def submit(actor, shard, rows):
        calls[shard.index] = calls.get(shard.index, 0) + 1
        hangs = shard.index == 1 and calls[1] == 1  # a FIFO, a dead NFS mount: no answer, ever
        return Task(Result(shard.index), hangs=hangs)

    config = ExplainConfig(shard_timeout=0.2, retries=2, progress=False)
    started = time.monotonic()
    counters = Dispatcher(ray, config, Resources(1, 1.0, 0.0, 1), Actor, submit, work(3), NoLock()).run()
    assert counters.shards_done == 3 and not counters.shards_failed
    assert counters.shard_attempts_failed == 1 and counters.actors_replaced == 1 and len(ray.killed) >= 1
    assert calls[1] == 2 and time.monotonic() - started < 10


def test_a_failed_shard_reports_the_workers_own_exception():
    class TaskError(Exception):
        def __init__(self) -> None:
            super().__init__("ray.exceptions.RayTaskError(ValueError): <ExplainActor object at 0x7f>")
            self.cause = ValueError("shard 3 holds rows 12..15; got rows [12, 14]")

    assert _task_error_text(TaskError()) == "ValueError: shard 3 holds rows 12..15; got rows [12, 14]"
    ray = FakeRay()
    config = ExplainConfig(retries=0, progress=False)
    counters = Dispatcher(
        ray,
        config,
        Resources(1, 1.0, 0.0, 1),
        Actor,
        lambda actor, shard, rows: Task(error=TaskError()),
        work(1),
        NoLock(),
    ).run()
    assert counters.shards_failed == [0]


def test_summary_counts_damaged_cache_entries_and_says_how_to_remove_them():
    from jobs.runtime.contract import ShardResult
    from jobs.runtime.dispatch import DispatchCounters

    counters = DispatchCounters()
    counters.add(ShardResult(0, 4, 4, 0, images_decoded=1, images_from_cache=3))
    assert counters.inputs_line().endswith("1 decoded from files, 3 from the input cache")
    counters.add(ShardResult(1, 4, 4, 0, images_decoded=2, images_from_cache=2, cache_damaged=2))
    assert (counters.images_decoded, counters.images_from_cache, counters.cache_damaged) == (3, 5, 2)
    assert "2 cached inputs were damaged and decoded again" in counters.inputs_line()
    assert "densecam verify STORE --inputs --repair" in counters.inputs_line()
