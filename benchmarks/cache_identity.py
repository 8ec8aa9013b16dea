"""What the input cache's ``--cache-identity content`` costs against ``stat``, per image and per archive.

    python benchmarks/cache_identity.py              # 512 MURA-like PNGs, page cache warm, 1 and 2 threads
    python benchmarks/cache_identity.py --images 128

Every job identifies every image of its shards before it looks the cache up: ``stat`` is one stat per
file; ``content`` reads each file whole and digests it (BLAKE2b). Both are timed through
``identify_paths`` (what the job runs), after one untimed pass, against decoding the same files to the
model input (what a cache hit saves).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
from decode import make_pngs
from machine import describe_cpu

from densecam_core.data.preprocess import load_model_input
from densecam_core.store.inputs.identity import identify_paths


def seconds(fn, repeats: int = 3) -> float:
    fn()  # warm-up: page cache, thread start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--archive", type=int, default=40_000, help="images of the archive the totals are for")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="densecam-identity-")
    paths = make_pngs(folder, args.images)
    mean_kib = np.mean([os.path.getsize(p) for p in paths]) / 1024
    print(f"{len(paths)} grey PNGs, mean {mean_kib:.0f} KiB, page cache warm, on a {describe_cpu()}\n")
    print("| identity | threads | ms per image | a 40,000-image archive | vs decoding the same files |")
    print("|---|---:|---:|---:|---:|")
    decode = seconds(lambda: [load_model_input(p, 320) for p in paths], repeats=1) / len(paths)
    for threads in (1, 2):
        for name, content in (("stat", False), ("content", True)):
            per = seconds(lambda c=content, t=threads: identify_paths(paths, t, content=c)) / len(paths)
            print(
                f"| {name} | {threads} | {per * 1000:.3f} | {per * args.archive:.1f} s | "
                f"{per / decode:.3f}x of {decode * 1000:.2f} ms |"
            )


if __name__ == "__main__":
    main()
