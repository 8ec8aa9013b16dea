"""Where a process's GIL went: a summary of ``py-spy record --gil -f raw`` output.

    py-spy record --gil -r 200 -f raw -o gil.txt -- python benchmarks/host_pipeline.py --device cuda ...
    python benchmarks/gil_summary.py gil.txt

Only the samples of the worker's threads count (stacks through ``process_shard``, the shard threads
and the process pools' manager threads: not set-up); each is named by its innermost densecam frame
and its innermost frame.
"""

from __future__ import annotations

import collections
import sys

from machine import describe_cpu  # benchmarks/machine.py

WORKER = ("process_shard", "futures/thread.py", "_ExecutorManagerThread", "queue_management", "_feed")
SETUP = ("generate_mura", "in_process_rate", "SimulatedDevice", "_adjust_thread_count")


def main(path: str, top: int = 25) -> None:
    counts: collections.Counter[str] = collections.Counter()
    total = everything = 0
    with open(path) as handle:
        for line in handle:
            stack, _, number = line.rstrip("\n").rpartition(" ")
            samples = int(number)
            everything += samples
            if not any(k in stack for k in WORKER) or any(k in stack for k in SETUP):
                continue
            total += samples
            frames = stack.split(";")
            ours = [f for f in frames if "densecam_core" in f]
            where = ours[-1].split(" (")[0] if ours else "-"
            counts[f"{where} | {frames[-1][:90]}"] += samples
    print(f"{total} of {everything} samples in the worker's threads")
    for key, samples in counts.most_common(top):
        print(f"{samples / max(total, 1) * 100:5.1f}%  {key}")


if __name__ == "__main__":
    print(f"machine: {describe_cpu()}")  # the CPU kind every figure is read against
    main(sys.argv[1])
