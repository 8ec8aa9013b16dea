"""``densecam cache`` against decoding alone: what writing the cache costs on top of decoding.

    python benchmarks/cache_fill.py                     # 1,024 grey PNGs at 320 px, every CPU's thread
    python benchmarks/cache_fill.py --images 2048 --threads 2 --rounds 2

Each round decodes every image once with the loader (nothing written), then fills a new store's
input cache with ``jobs.cache.fill_cache`` (decode, compress, commit segments, write the catalog);
the ratio is the fill's images/s to decoding's, alternated so that drift falls on both.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from baseline import generated_manifest  # benchmarks/baseline.py
from machine import describe_cpu  # benchmarks/machine.py

from densecam_core.data.loader import BatchLoader
from jobs.cache import fill_cache


def decode_rate(paths: list[str], size: int, threads: int, batch: int) -> float:
    started = time.perf_counter()
    count = sum(len(b.ok_records) for b in BatchLoader(paths, size=size, batch_size=batch, num_threads=threads))
    assert count == len(paths)
    return count / (time.perf_counter() - started)


def fill_rate(tree: str, store: str, size: int, threads: int, batch: int) -> float:
    started = time.perf_counter()
    counts = fill_cache(tree, store, size=size, threads=threads, segment_size=batch)
    assert counts["cached_now"] == counts["images"], counts
    return counts["images"] / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--segment", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="densecam-fill-")
    paths = generated_manifest(work, args.images, 0.0)["path"].tolist()
    tree = os.path.join(work, "tree")
    decode_rate(paths[: args.segment], args.size, args.threads, args.segment)  # warm: page cache, imports
    print(f"{args.images} grey PNGs to {args.size} px, {args.threads} threads, segments of {args.segment}")
    for round_ in range(args.rounds):
        decoding = decode_rate(paths, args.size, args.threads, args.segment)
        filling = fill_rate(tree, os.path.join(work, f"store-{round_}"), args.size, args.threads, args.segment)
        print(
            f"  decode only {decoding:7.1f} images/s   densecam cache {filling:7.1f} images/s   {filling / decoding:.2f}x"
        )


if __name__ == "__main__":
    print(f"machine: {describe_cpu()}")  # the CPU kind every figure is read against
    main()
