"""The one run skeleton both jobs follow: plan shards under the run's lock, skip what is committed,
dispatch the rest to actors on Ray, summarise, write ``--summary-json``.

Each job supplies what differs (what to plan, how to make and feed its actors); the order of the
steps, the lock's span and the summary's shape are the same for both.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd

from densecam_core import fileio
from densecam_core.store.layout import plan_shards
from densecam_core.store.lock import RunLock
from jobs.runtime.contract import ShardResult, WorkItem
from jobs.runtime.dispatch import DispatchCounters, Dispatcher, DispatchSettings, JobState
from jobs.runtime.resources import ActorRequest, Resources, cluster_resources, size_actors
from jobs.runtime.session import ray_session, warn_local_store_on_cluster

Hook = Callable[[JobState, ShardResult], None]


@dataclass(frozen=True)
class ShardPlan:
    """The shards a job still has to do (in row order) out of all the shards its rows fall in."""

    todo: deque[WorkItem]
    total: int
    skipped: int  # already committed: counted before the driver loop empties ``todo``


def shard_work(rows: pd.DataFrame, shard_size: int, done: Collection[int] = ()) -> ShardPlan:
    """Group rows (a ``row`` column) into their chunk-aligned shards, leaving out the ``done`` ones."""
    groups = {int(k): g for k, g in rows.groupby(rows["row"] // shard_size, sort=True)}
    todo: deque[WorkItem] = deque()
    for k, group in groups.items():
        if k not in done:
            start = k * shard_size
            todo.append((plan_shards(int(group["row"].max()) + 1 - start, shard_size, start)[0], group))
    return ShardPlan(todo, len(groups), len(groups) - len(todo))


class LaunchSettings(DispatchSettings, ActorRequest, Protocol):
    """What the runtime reads of a job's config: where Ray is, the store, actor sizing and the loop's limits."""

    address: str | None
    store: str


@dataclass(frozen=True)
class Launch:
    """How a job makes its actors and hands one a shard, once the actors' resources are known."""

    resources: Resources
    make_actor: Callable[[], Any]
    submit: Callable[[Any, Any, pd.DataFrame], Any]


def run_locked(
    run_url: str,
    plan: Callable[[], ShardPlan],
    dispatch: Callable[[deque[WorkItem], RunLock], DispatchCounters],
    finish: Callable[[DispatchCounters], None] | None = None,
) -> tuple[ShardPlan, DispatchCounters]:
    """Plan, dispatch and ``finish`` (e.g. compact) while holding the run's lock; nothing to do dispatches
    nothing (and starts no Ray)."""
    lock = RunLock(run_url)
    lock.acquire()
    try:
        work = plan()
        counters = dispatch(work.todo, lock) if work.todo else DispatchCounters()
        if finish is not None:
            finish(counters)
    finally:
        lock.release()
    return work, counters


def dispatch_on_ray(
    config: LaunchSettings,
    todo: deque[WorkItem],
    lock: RunLock,
    launch: Callable[[Any, Resources], Launch],
    *,
    hook: Hook | None = None,
    desc: str,
) -> DispatchCounters:
    """Start (or join) Ray, size the actors to the cluster, let the job launch them, run the driver loop."""
    import ray

    with ray_session(ray, config) as own_local_ray:
        total, nodes = cluster_resources(ray)
        warn_local_store_on_cluster(nodes, config.store)
        resources = size_actors(total, nodes, config, can_grow=not own_local_ray)
        job = launch(ray, resources)
        return Dispatcher(ray, config, job.resources, job.make_actor, job.submit, todo, lock, hook, desc=desc).run()


@dataclass(kw_only=True)
class RunSummary(DispatchCounters):
    """What the driver loop counted, and what every job knows of its run."""

    run_id: str
    store: str
    shards_total: int
    shards_skipped: int
    seconds: float

    def as_json(self) -> dict[str, Any]:
        return fileio.strict_json(dataclasses.asdict(self))

    def write_json(self, url: str | None) -> None:
        """``--summary-json``: the summary as one JSON object, written atomically (nothing when no path)."""
        if url:
            fs, path = fileio.filesystem(url)
            fileio.write_json_atomic(fs, path, self.as_json())
