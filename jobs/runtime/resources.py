"""How many actors to start, and what each one asks of the cluster.

Why these defaults: a GPU actor decodes PNGs on its CPUs while its GPU explains, and decoding is the
slower of the two (docs/PERFORMANCE.md), so by default it takes its node's whole share of CPUs per
GPU, less one CPU that Ray's own processes keep. CPU actors take up to 4 CPUs each (torch threads
scale poorly beyond that on DenseNet's small convolutions), and ``--workers N`` alone divides the
CPUs among the N actors.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

CPU_ACTOR_MAX_CPUS = 4.0
GPU_ACTOR_CONCURRENCY = 3
"""Shards a GPU actor works on at once (threads): one decoding or reading, one on the GPU, one writing."""
GPU_ACTOR_FALLBACK_CPUS = 4.0
"""A GPU actor's CPUs when no GPU node is up yet to learn its share from (autoscaling from zero)."""


class ActorRequest(Protocol):
    """The settings actor sizing reads (``ExplainConfig`` and the evaluation's ``EvaluateConfig`` have them)."""

    workers: int | None
    gpus_per_worker: float
    cpus_per_worker: float | None
    start_timeout: float


@dataclass(frozen=True)
class Resources:
    """What each of ``workers`` actors asks for; ``threads`` torch and decode threads run inside it,
    ``concurrency`` shards at once (1 on CPU actors: torch ops from a second thread ran slower there)."""

    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    threads: int
    concurrency: int = 1


def describe(resources: dict[str, float]) -> str:
    return f"{float(resources.get('GPU', 0)):g} GPUs and {float(resources.get('CPU', 0)):g} CPUs"


def gpu_node_share(nodes: Sequence[dict[str, float]], gpus_per_worker: float) -> float | None:
    """CPUs per ``gpus_per_worker`` GPUs on the GPU nodes now alive (the smallest share), less one for Ray."""
    shares = [(float(n["CPU"]) - 1.0) / float(n["GPU"]) for n in nodes if float(n.get("GPU", 0)) > 0 and n.get("CPU")]
    if not shares:
        return None
    return max(1.0, math.floor(min(shares) * gpus_per_worker))


def size_actors(
    total: dict[str, float], nodes: Sequence[dict[str, float]], config: ActorRequest, *, can_grow: bool = True
) -> Resources:
    """Actors and their resources for a cluster with ``total`` resources over ``nodes`` (alive nodes' resources).

    Defaults fill the cluster as it is now. An explicit ``--workers`` may ask for more than it has
    now when the cluster ``can_grow``: pending actors make an autoscaler add nodes. The local Ray
    this job started itself cannot grow, so asking it for more is refused at once.
    """
    gpus, cpus = float(total.get("GPU", 0)), float(total.get("CPU", 0))
    gpus_per_worker = config.gpus_per_worker or (1.0 if gpus >= 1 else 0.0)
    if gpus_per_worker > 0:
        workers = config.workers or int(gpus // gpus_per_worker)
        share = gpu_node_share(nodes, gpus_per_worker)
        cpus_per_worker = config.cpus_per_worker or (share if share is not None else GPU_ACTOR_FALLBACK_CPUS)
    elif config.workers and not config.cpus_per_worker:
        workers = config.workers
        cpus_per_worker = max(0.01, math.floor(cpus / workers * 100) / 100) if cpus else 1.0
    else:
        cpus_per_worker = config.cpus_per_worker or max(1.0, min(cpus, CPU_ACTOR_MAX_CPUS))
        workers = config.workers or int(cpus // cpus_per_worker)
    if workers < 1:
        raise ValueError(
            f"the cluster has {describe(total)} now, too few for one actor ({gpus_per_worker:g} GPU, "
            f"{cpus_per_worker:g} CPU); on an autoscaling cluster pass --workers N (and --gpus-per-worker) "
            "so that the autoscaler adds nodes for N actors"
        )
    short = workers * gpus_per_worker > gpus or workers * cpus_per_worker > cpus + 1e-9
    if short and not can_grow:
        raise ValueError(
            f"{workers} actors of {gpus_per_worker:g} GPU and {cpus_per_worker:g} CPU do not fit the local Ray on this "
            f"machine ({describe(total)}); lower --workers, --gpus-per-worker or --cpus-per-worker, or pass --address"
        )
    if short:
        print(
            f"note: {workers} actors need {workers * gpus_per_worker:g} GPUs and {workers * cpus_per_worker:g} CPUs; "
            f"the cluster has {describe(total)} now. Actors start as nodes join (autoscaler); "
            f"work starts with the first, and the job stops if none starts within --start-timeout "
            f"{config.start_timeout:g} s",
            file=sys.stderr,
        )
    concurrency = GPU_ACTOR_CONCURRENCY if gpus_per_worker > 0 else 1
    return Resources(workers, cpus_per_worker, gpus_per_worker, max(1, int(cpus_per_worker)), concurrency)


def cluster_resources(ray: Any) -> tuple[dict[str, float], list[dict[str, float]]]:
    """(total resources, alive nodes' resources) of the connected Ray cluster."""
    nodes = [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]
    return dict(ray.cluster_resources()), nodes
