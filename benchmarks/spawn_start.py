"""What a GPU actor's process pools cost to start and to stop inside a Ray actor: spawned children
that re-run the actor's main script (Ray's worker, so each child imports Ray) against children that
do not (``densecam_core.parallel.spawned.spawn_context``, the pools' default).

    python benchmarks/spawn_start.py                  # 2 processes, 3 rounds each way, alternated
    python benchmarks/spawn_start.py --processes 15   # a 16-core GPU node's decode pool

Each round starts a ``SpawnedPool`` in a fresh actor, waits until every child has imported
``densecam_core.data.decode`` (what the actor's warm-up does), reads the children's resident memory, and
closes the pool.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time

from machine import describe_cpu  # benchmarks/machine.py


def measure(processes: int, plain: bool) -> tuple[float, float, float]:
    """Seconds to start, MiB resident in the children, seconds to close (run inside the actor)."""
    from densecam_core.data.decode_task import ready
    from densecam_core.parallel import spawned

    if plain:
        spawned.spawn_context = lambda: multiprocessing.get_context("spawn")  # re-runs the main script
    pool = spawned.SpawnedPool(processes, "a decode process")
    started = time.perf_counter()
    pool.start(ready)
    start_seconds = time.perf_counter() - started
    resident = 0
    for pid in list(pool.pool._processes):  # type: ignore[union-attr]
        with open(f"/proc/{pid}/status") as status:
            resident += next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
    started = time.perf_counter()
    pool.close()
    return start_seconds, resident / 1024, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import ray

    ray.init(num_cpus=max(2, args.processes + 1), include_dashboard=False, log_to_driver=False)
    try:
        probe = ray.remote(num_cpus=1, max_calls=1)(measure)  # a fresh worker process each call, as a new actor
        results: dict[str, list[tuple[float, float, float]]] = {"plain spawn": [], "without the main script": []}
        for _ in range(args.rounds):
            for name in results:
                results[name].append(ray.get(probe.remote(args.processes, name == "plain spawn")))
    finally:
        ray.shutdown()
    print(f"{args.processes} processes a pool, {args.rounds} rounds each, alternated; {os.cpu_count()} CPUs")
    print("| children | start (s) | resident in the children (MiB) | close (s) |")
    print("|---|---:|---:|---:|")
    for name, rows in results.items():
        start, resident, close = (statistics.median(r[i] for r in rows) for i in range(3))
        print(f"| {name} | {start:.2f} | {resident:.0f} | {close:.2f} |")


if __name__ == "__main__":
    print(f"machine: {describe_cpu()}")  # the CPU kind every figure is read against
    main()
