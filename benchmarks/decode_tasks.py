"""What a GPU actor's process pays to have its decode processes decode: one task per image against
tasks of several images (the loader's ``chunk``), through a pool of spawned processes writing into a
shared pixel block, as the worker runs it.

    python benchmarks/decode_tasks.py                  # 1,024 grey PNGs, 1 decode process, batches of 64
    python benchmarks/decode_tasks.py --processes 3 --chunks 1 4 8 16

The figure that matters on a GPU node is the actor's CPU milliseconds per image: every task costs
it pickling, queue and result-thread work under its GIL, which the thread launching kernels needs.
Images/s is bound by the decode processes here, and only indicative on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
from baseline import generated_manifest  # benchmarks/baseline.py
from machine import describe_cpu  # benchmarks/machine.py

from densecam_core.data.decode_task import ready
from densecam_core.data.loader import BatchLoader
from densecam_core.parallel.shared_block import SharedBlock
from densecam_core.parallel.spawned import SpawnedPool


def one_pass(paths: list[str], pool: SpawnedPool, size: int, batch: int, chunk: int) -> tuple[float, float]:
    """(images/s, this process's CPU ms per image) for decoding every path once into a shared block."""
    with SharedBlock({"pixels": ((len(paths), 3, size, size), np.uint8)}) as block:
        loader = BatchLoader(
            paths, size=size, batch_size=batch, executor=pool.get(), into=block, grey_batches=True, chunk=chunk
        )
        cpu, wall = time.process_time(), time.perf_counter()
        count = sum(len(b.records) for b in loader)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert count == len(paths)
    return count / wall, cpu / count * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--processes", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--chunks", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=2, help="passes per chunk size, alternated")
    args = parser.parse_args()
    manifest = generated_manifest(tempfile.mkdtemp(prefix="densecam-tasks-"), args.images, 0.0)
    paths = manifest["path"].tolist()
    pool = SpawnedPool(args.processes, "a decode process")
    pool.start(ready)
    one_pass(paths[: args.batch * 2], pool, args.size, args.batch, 1)  # warm: page cache, imports
    results: dict[int, list[tuple[float, float]]] = {c: [] for c in args.chunks}
    for _ in range(args.rounds):
        for chunk in args.chunks:
            results[chunk].append(one_pass(paths, pool, args.size, args.batch, chunk))
    pool.close()
    print(f"{args.images} grey PNGs to {args.size} px, batches of {args.batch}, {args.processes} decode processes")
    print()
    print("| images per task | images/s | actor CPU ms/image |")
    print("|---:|---:|---:|")
    for chunk, runs in results.items():
        rates = " / ".join(f"{r:.0f}" for r, _ in runs)
        cpus = " / ".join(f"{c:.3f}" for _, c in runs)
        print(f"| {chunk} | {rates} | {cpus} |")


if __name__ == "__main__":
    print(f"machine: {describe_cpu()}")  # the CPU kind every figure is read against
    main()
