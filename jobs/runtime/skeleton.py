"""The one run skeleton every job on Ray follows: plan shards under the run's lock, skip what is committed,
dispatch the rest to actors on Ray, finish, summarise, write ``--summary-json``.

A job is a ``ShardJob`` (what to plan, how to make and feed its actors, what to do as shards commit and at
the end); the order of the steps, the lock's span and the summary's shape are the runtime's.
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


class ShardJob(Protocol):
    """A job on the runtime, as the skeleton drives it: ``plan`` its shards under the run's lock, ``launch``
    its actors once their resources are known, hear of each ``committed`` shard, ``finish`` (e.g. compact)
    before the lock is released. ``description`` names the work on the progress bar ("explaining")."""

    description: str

    def plan(self) -> ShardPlan: ...

    def launch(self, ray: Any, resources: Resources) -> Launch: ...

    def committed(self, state: JobState, result: ShardResult) -> None: ...

    def finish(self, counters: DispatchCounters) -> None: ...


def run_shard_job(job: ShardJob, run_url: str, config: LaunchSettings) -> tuple[ShardPlan, DispatchCounters]:
    """Plan, dispatch on Ray and finish while holding the run's lock; nothing to do dispatches nothing (and
    starts no Ray)."""
    lock = RunLock(run_url)
    lock.acquire()
    try:
        work = job.plan()
        counters = _dispatch_on_ray(job, config, work.todo, lock) if work.todo else DispatchCounters()
        job.finish(counters)
    finally:
        lock.release()
    return work, counters


def _dispatch_on_ray(job: ShardJob, config: LaunchSettings, todo: deque[WorkItem], lock: RunLock) -> DispatchCounters:
    """Start (or join) Ray, size the actors to the cluster, let the job launch them, run the driver loop."""
    import ray

    with ray_session(ray, config) as own_local_ray:
        total, nodes = cluster_resources(ray)
        warn_local_store_on_cluster(nodes, config.store)
        resources = size_actors(total, nodes, config, can_grow=not own_local_ray)
        launch = job.launch(ray, resources)
        return Dispatcher(
            ray, config, launch.resources, launch.make_actor, launch.submit, todo, lock, job.committed,
            desc=job.description,
        ).run()  # fmt: skip


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
