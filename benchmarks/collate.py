"""Stacking a batch of model inputs: the loader's way against ``np.stack`` of broadcast views (before).

    python benchmarks/collate.py            # 64 images at 320 px, all grey and one in five RGB

MURA's radiographs are grey: one channel each, repeated into three for the network (or kept as one
and broadcast on the device, as GPU actors do).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from machine import describe_cpu  # benchmarks/machine.py

from densecam_core.data.loader import BatchLoader


def per_call(function, repeat: int) -> float:
    function()
    start = time.perf_counter()
    for _ in range(repeat):
        function()
    return (time.perf_counter() - start) / repeat * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n, size = args.batch, args.size
    batches = {
        "all grey": [rng.integers(0, 256, (1, size, size), dtype=np.uint8) for _ in range(n)],
        "one in five RGB": [
            rng.integers(0, 256, (3 if i % 5 == 0 else 1, size, size), dtype=np.uint8) for i in range(n)
        ],
    }
    plain, grey = BatchLoader([], size=size), BatchLoader([], size=size, grey_batches=True)
    print(f"batch of {n} at {size} px, ms per batch")
    print()
    print("| batch | np.stack of broadcast views (before) | loader, three channels | loader, grey kept grey |")
    print("|---|---:|---:|---:|")
    for name, arrays in batches.items():
        before = per_call(lambda a=arrays: np.stack([np.broadcast_to(x, (3, size, size)) for x in a]), args.repeat)
        three = per_call(lambda a=arrays: plain._stack(a), args.repeat)
        kept = per_call(lambda a=arrays: grey._stack(a), args.repeat)
        reference = np.stack([np.broadcast_to(a, (3, size, size)) for a in arrays])
        assert np.array_equal(plain._stack(arrays).numpy(), reference)
        print(f"| {name} | {before:.2f} | {three:.2f} ({before / three:.1f}x) | {kept:.2f} ({before / kept:.1f}x) |")


if __name__ == "__main__":
    print(f"machine: {describe_cpu()}")  # the CPU kind every figure is read against
    main()
