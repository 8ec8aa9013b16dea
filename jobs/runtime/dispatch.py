"""The driver loop: give shards to ready actors, collect results, retry failures, replace lost actors.

Each step is a named method of ``Dispatcher``; everything it counts lives in ``DispatchCounters``.
Ray is passed in (never imported at module level) so the loop's rules are testable with a fake.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd

from densecam_core.store.layout import Shard
from densecam_core.store.lock import RunLock
from jobs.runtime.actor_pool import ActorPool, ActorStartError
from jobs.runtime.contract import ShardResult, WorkItem
from jobs.runtime.resources import Resources, describe

HEARTBEAT_SECONDS = 30.0
WAIT_SECONDS = 10.0


class DispatchSettings(Protocol):
    """The limits the driver loop keeps (both jobs' configs have them, with the same flags)."""

    start_timeout: float
    shard_timeout: float
    retries: int
    actor_start_retries: int
    max_in_flight: int
    progress: bool


@dataclass
class DispatchCounters:
    """What the loop counted; the job summary is built from it."""

    images_done: int = 0
    ok: int = 0
    errors: int = 0
    images_decoded: int = 0
    images_from_cache: int = 0
    cache_damaged: int = 0
    shards_done: int = 0
    shards_retried: int = 0  # re-queued after a failed attempt
    shard_attempts_failed: int = 0
    shards_failed: list[int] = field(default_factory=list)
    actors_replaced: int = 0
    explained_seconds: float = 0.0  # from the first actor ready to the last shard's result
    actor_startup_seconds: float = 0.0
    actor_shutdown_seconds: float = 0.0  # the actors closing their decode and writer processes, after the last result
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def inputs_line(self) -> str:
        """The summary's line on where the inputs came from; damaged cache entries say what to do."""
        line = (
            f"inputs           {self.images_decoded} decoded from files, {self.images_from_cache} from the input cache"
        )
        if self.cache_damaged:
            line += (
                f"; {self.cache_damaged} cached inputs were damaged and decoded again "
                "(`densecam verify STORE --inputs --repair` removes the damaged cache segments)"
            )
        return line

    def add(self, result: ShardResult) -> None:
        self.images_done += result.images
        self.ok += result.ok
        self.errors += result.errors
        self.images_decoded += result.images_decoded
        self.images_from_cache += result.images_from_cache
        self.cache_damaged += result.cache_damaged
        self.shards_done += 1
        for stage, seconds in result.seconds.items():
            self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds


@dataclass
class JobState:
    """What hooks (tests) may look at after each result, e.g. to kill an actor."""

    actors: list[Any] = field(default_factory=list)
    results: list[ShardResult] = field(default_factory=list)


def make_actor_class(ray: Any, worker_class: type, name: str) -> Any:
    """A Ray actor class around a plain worker class (``process_shard``, and ``close`` if it has one): the worker
    holds the job's logic and is tested without Ray; the actor only gives it a process and resources."""

    class ShardActor:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.worker = worker_class(*args, **kwargs)

        def pid(self) -> int:
            return os.getpid()

        def process(self, *args: Any) -> ShardResult:
            return self.worker.process_shard(*args)

    if hasattr(worker_class, "close"):  # the pool then lets it close what it owns before the kill

        def close(self: ShardActor) -> None:
            self.worker.close()

        ShardActor.close = close  # type: ignore[attr-defined]
    ShardActor.__name__ = ShardActor.__qualname__ = name
    ShardActor.__doc__ = f"A Ray actor around the plain {worker_class.__name__}: one model replica on its own device."
    return ray.remote(max_restarts=0)(ShardActor)


def actor_error_types() -> tuple[type[BaseException], ...]:
    from ray.exceptions import RayActorError

    try:
        from ray.exceptions import ActorDiedError, ActorUnavailableError
    except ImportError:  # older Ray
        return (RayActorError,)
    return (RayActorError, ActorDiedError, ActorUnavailableError)


class Dispatcher:
    """Bounded work per actor, results in completion order, failures retried, dead actors replaced."""

    def __init__(
        self,
        ray: Any,
        config: DispatchSettings,
        resources: Resources,
        make_actor: Callable[[], Any],
        submit: Callable[[Any, Shard, pd.DataFrame], Any],
        todo: deque[WorkItem],
        lock: RunLock,
        hook: Callable[[JobState, ShardResult], None] | None = None,
        *,
        desc: str = "explaining",
    ) -> None:
        self.ray, self.config, self.resources, self.desc = ray, config, resources, desc
        self.submit_one, self.todo, self.lock, self.hook = submit, todo, lock, hook
        self.actor_errors = actor_error_types()
        self.counters = DispatchCounters()
        self.started = time.perf_counter()
        self.pool = ActorPool(
            ray, make_actor, min(resources.workers, max(len(todo), 1)), max_start_failures=config.actor_start_retries
        )
        self.state = JobState(actors=self.pool.actors)
        self.in_flight: dict[Any, tuple[int, Shard, pd.DataFrame]] = {}
        self.load = [0] * len(self.pool.actors)
        self.max_in_flight = max(config.max_in_flight, resources.concurrency + 1)  # one queued beyond what runs
        self.attempts: dict[int, int] = {}
        self.submitted: dict[Any, float] = {}
        self.last_beat = time.monotonic()

    def run(self) -> DispatchCounters:
        from tqdm import tqdm

        total = sum(len(rows) for _, rows in self.todo)
        bar = tqdm(total=total, unit="img", desc=self.desc, disable=not self.config.progress, smoothing=0.1)
        finished = self.started
        try:
            while self.todo or self.in_flight:
                self.submit_to_ready_actors()
                waiting_on = list(self.in_flight) + list(self.pool.pending)
                if not waiting_on:  # cannot happen: a slot is always ready, starting, or has raised
                    raise RuntimeError(f"{len(self.todo)} shards left but no actor is running or starting")
                timeout = min(WAIT_SECONDS, self.config.start_timeout, self.config.shard_timeout)
                ready, _ = self.ray.wait(waiting_on, num_returns=1, timeout=timeout)
                self.heartbeat()
                self.check_start_timeout()
                self.check_shard_deadlines()
                for ref in ready:
                    if self.pool.is_probe(ref):
                        self.pool.settle(ref, self.actor_errors)
                    else:
                        bar.update(self.handle_result(ref))
            finished = time.perf_counter()
        finally:
            bar.close()
            self.pool.kill_all()
        # throughput is timed to the last result: stopping the actors is a fixed cost, like starting them
        first_ready = self.pool.first_ready_at or self.started
        self.counters.actor_startup_seconds = first_ready - self.started
        self.counters.explained_seconds = finished - first_ready
        self.counters.actor_shutdown_seconds = time.perf_counter() - finished
        self.counters.actors_replaced += self.pool.start_failures
        return self.counters

    def submit_to_ready_actors(self) -> None:
        for slot in sorted(self.pool.ready):
            while self.todo and self.load[slot] < self.max_in_flight:
                shard, rows = self.todo.popleft()
                ref = self.submit_one(self.pool.actors[slot], shard, rows)
                self.in_flight[ref] = (slot, shard, rows)
                self.submitted[ref] = time.monotonic()
                self.load[slot] += 1

    def heartbeat(self) -> None:
        """Also while actors wait for nodes: the run lock must stay ours."""
        if time.monotonic() - self.last_beat > HEARTBEAT_SECONDS:
            self.lock.heartbeat()
            self.last_beat = time.monotonic()

    def check_start_timeout(self) -> None:
        if self.pool.first_ready_at is None and time.perf_counter() - self.started > self.config.start_timeout:
            r = self.resources
            raise ActorStartError(
                f"no actor started within {self.config.start_timeout:g} s: each needs {r.gpus_per_worker:g} GPU "
                f"and {r.cpus_per_worker:g} CPU, and the cluster has {describe(self.ray.cluster_resources())}. On an "
                "autoscaling cluster allow longer (--start-timeout); on a fixed one lower --workers, "
                "--gpus-per-worker or --cpus-per-worker"
            )

    def check_shard_deadlines(self) -> None:
        """An actor that holds a shard past --shard-timeout is stopped (a hung read, a wedged driver call):
        the shard is retried elsewhere and the actor replaced."""
        now = time.monotonic()
        for ref, (slot, shard, rows) in list(self.in_flight.items()):
            if ref not in self.in_flight or now - self.submitted[ref] <= self.config.shard_timeout:
                continue
            self.in_flight.pop(ref)
            self.submitted.pop(ref, None)
            with contextlib.suppress(Exception):  # already gone: nothing to stop
                self.ray.kill(self.pool.actors[slot], no_restart=True)
            self.replace_lost_actor(slot)
            self.retry(
                shard, rows, f"no result within --shard-timeout {self.config.shard_timeout:g} s; its actor was stopped"
            )

    def handle_result(self, ref: Any) -> int:
        """Count a finished shard, or retry a failed one; returns the images it completed."""
        self.submitted.pop(ref, None)
        slot, shard, rows = self.in_flight.pop(ref)
        self.load[slot] -= 1
        try:
            result: ShardResult = self.ray.get(ref)
        except self.actor_errors as exc:
            self.replace_lost_actor(slot)
            self.retry(shard, rows, f"actor died: {exc}")
            return 0
        except Exception as exc:  # a RayTaskError wrapping the worker's exception: the shard failed
            self.retry(shard, rows, _task_error_text(exc))
            return 0
        self.counters.add(result)
        self.state.results.append(result)
        if self.hook is not None:
            self.hook(self.state, result)
        return result.images

    def replace_lost_actor(self, slot: int) -> None:
        """Start a new actor in ``slot``; the shards the dead one still held go back to the queue's front."""
        self.counters.actors_replaced += 1
        self.pool.start(slot)
        for ref, (other_slot, shard, rows) in list(self.in_flight.items()):
            if other_slot == slot:  # died with it, never attempted: no attempt counted
                self.in_flight.pop(ref)
                self.submitted.pop(ref, None)
                self.todo.appendleft((shard, rows))
        self.load[slot] = 0

    def retry(self, shard: Shard, rows: pd.DataFrame, reason: str) -> None:
        self.counters.shard_attempts_failed += 1
        failures = self.attempts[shard.index] = self.attempts.get(shard.index, 0) + 1
        if failures > self.config.retries:
            print(f"shard {shard.index} failed {failures} times, giving up: {reason}", file=sys.stderr)
            self.counters.shards_failed.append(shard.index)
            return
        print(f"shard {shard.index}: attempt {failures} failed ({reason}); retried", file=sys.stderr)
        self.counters.shards_retried += 1
        self.todo.appendleft((shard, rows))


def _task_error_text(exc: BaseException) -> str:
    """The worker's own exception (type and message), not Ray's wrapper or the actor's repr."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
