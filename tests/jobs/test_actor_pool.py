"""ActorPool start-up rules with a fake Ray: which failures stop the job and which restart a slot."""

from __future__ import annotations

import itertools

import pytest

from jobs.runtime.actor_pool import ActorPool, ActorStartError


class Died(Exception):
    pass


class FakeRay:
    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.killed: list[str] = []

    def get(self, ref: str) -> int:
        if ref in self.failing:
            raise Died(f"{ref} died")
        return 1

    def kill(self, actor: FakeActor, no_restart: bool = True) -> None:
        self.killed.append(actor.name)


class FakeActor:
    counter = itertools.count()

    def __init__(self) -> None:
        self.name = f"actor{next(self.counter)}"
        self.pid = self

    def remote(self) -> str:
        return f"probe-{self.name}"


def test_first_start_failure_stops_the_job():
    ray = FakeRay()
    pool = ActorPool(ray, FakeActor, 2, max_start_failures=3)
    first = next(iter(pool.pending))
    ray.failing.add(first)
    with pytest.raises(ActorStartError, match="failed while starting.*died"):
        pool.settle(first, (Died,))


def test_later_start_failures_restart_the_slot_until_the_limit():
    ray = FakeRay()
    pool = ActorPool(ray, FakeActor, 2, max_start_failures=1)
    probe_0, probe_1 = list(pool.pending)
    pool.settle(probe_0, (Died,))
    assert pool.ready == {0} and pool.first_ready_at is not None
    ray.failing.add(probe_1)
    old = pool.actors[1]
    pool.settle(probe_1, (Died,))  # one ready actor exists: restart slot 1
    assert pool.start_failures == 1 and pool.actors[1] is not old and pool.ready == {0}
    new_probe = next(iter(pool.pending))
    assert pool.pending == {new_probe: 1}
    ray.failing.add(new_probe)
    with pytest.raises(ActorStartError):  # the second failure is over the limit of 1
        pool.settle(new_probe, (Died,))


def test_restarting_a_ready_slot_drops_it_from_ready_and_kill_all_stops_every_actor():
    ray = FakeRay()
    pool = ActorPool(ray, FakeActor, 2, max_start_failures=1)
    for probe in list(pool.pending):
        pool.settle(probe, (Died,))
    assert pool.ready == {0, 1}
    pool.start(0)  # the actor died while working
    assert pool.ready == {1} and list(pool.pending.values()) == [0]
    pool.kill_all()
    assert sorted(ray.killed) == sorted(a.name for a in pool.actors)
