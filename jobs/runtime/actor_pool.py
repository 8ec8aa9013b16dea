"""Explain actors that start when the cluster can place them, not all before the first shard.

On an autoscaling cluster (``cluster.yaml``: a CPU-less head, GPU workers from zero) every actor
waits minutes for its node, and nodes arrive one by one. Waiting for all of them before any work
(or forever, on a fixed cluster that is too small) wastes the nodes that are up; so the pool
reports actors as they become ready and the driver only gives work to ready ones.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any


class ActorStartError(RuntimeError):
    """No actor could be placed or built: the cluster lacks the resources, or the model fails to load."""


class ActorPool:
    """Actor slots; each actor's ``pid()`` call doubles as its readiness probe (it returns once
    ``__init__``, model load and warm-up included, has finished)."""

    def __init__(self, ray: Any, make: Callable[[], Any], count: int, *, max_start_failures: int) -> None:
        self.ray = ray
        self.make = make
        self.actors: list[Any] = []
        self.ready: set[int] = set()
        self.pending: dict[Any, int] = {}  # readiness ref -> slot
        self.start_failures = 0
        self.max_start_failures = max_start_failures
        self.first_ready_at: float | None = None
        for slot in range(count):
            self.actors.append(None)
            self.start(slot)

    def start(self, slot: int) -> None:
        """(Re)create the actor of ``slot``; it gets work once its readiness probe returns."""
        self.ready.discard(slot)
        for ref, pending_slot in list(self.pending.items()):
            if pending_slot == slot:
                del self.pending[ref]
        actor = self.make()
        self.actors[slot] = actor
        self.pending[actor.pid.remote()] = slot

    def is_probe(self, ref: Any) -> bool:
        return ref in self.pending

    def settle(self, ref: Any, actor_errors: tuple[type[BaseException], ...]) -> None:
        """A readiness probe returned: mark its actor ready, or restart it after a start-up failure.

        The first actor failing before any was ever ready stops the job (a model that cannot load
        fails on every actor); later failures restart the slot, at most ``max_start_failures`` times.
        """
        slot = self.pending.pop(ref)
        try:
            self.ray.get(ref)
        except actor_errors as exc:
            self.start_failures += 1
            if self.first_ready_at is None or self.start_failures > self.max_start_failures:
                raise ActorStartError(f"an actor failed while starting: {exc}") from exc
            self.start(slot)
            return
        self.ready.add(slot)
        if self.first_ready_at is None:
            self.first_ready_at = time.perf_counter()

    def kill_all(self, close_timeout: float = 10.0) -> None:
        """Stop every actor, pending ones included, so none is placed after the job and holds resources.

        Ready actors first close what they own (a GPU actor's decode processes) within ``close_timeout``.
        """
        closing = [self.actors[slot].close.remote() for slot in self.ready if hasattr(self.actors[slot], "close")]
        if closing:
            with contextlib.suppress(Exception):  # a dead or stuck actor is killed all the same
                self.ray.wait(closing, num_returns=len(closing), timeout=close_timeout)
        for actor in self.actors:
            with contextlib.suppress(Exception):  # already dead: nothing to stop
                self.ray.kill(actor, no_restart=True)
