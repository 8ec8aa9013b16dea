"""An actor's first input-cache lookup: segment by segment, segments read concurrently, or the catalog.

Every actor's first lookup must learn the identities of every committed segment. Local disk hides
the cost; an object store charges a round trip per request. ``--latency`` models one: every
``open``, listing, ``info`` and read of an opened file sleeps that long, as a ranged GET would.

    python benchmarks/cache_lookup.py                          # 40,000 images in 625 segments of 64
    python benchmarks/cache_lookup.py --latency-ms 0 20 --images 40000

Pixels are 32 x 32 here: the identity columns, which the first lookup reads, are the same size at
any input size, and with ranged reads the pixels are never fetched.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
import tracemalloc
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem
from machine import describe_cpu  # benchmarks/machine.py

from densecam_core.data.geometry import Geometry
from densecam_core.data.preprocess import ModelInput
from densecam_core.store.inputs.cache import InputCache
from densecam_core.store.inputs.identity import SourceIdentity

SIZE = 32


class LatencyFileSystem(LocalFileSystem):
    """A local folder that answers like an object store: each request waits ``latency`` seconds first."""

    protocol = ("latency",)
    latency = 0.0
    requests = 0

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        return super()._strip_protocol(str(path).removeprefix("latency://"))

    @classmethod
    def wait(cls) -> None:
        cls.requests += 1
        time.sleep(cls.latency)

    def ls(self, path: str, detail: bool = False, **kwargs: Any) -> Any:
        listing = LocalFileSystem().ls(path, detail=detail, **kwargs)  # its own info() is no request
        for _ in range(max(1, -(-len(listing) // 1000))):  # S3 lists 1,000 keys per request
            self.wait()
        return listing

    def info(self, path: str, **kwargs: Any) -> Any:
        self.wait()
        return super().info(path, **kwargs)

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        self.wait()
        return _SlowReads(super()._open(path, mode=mode, **kwargs), self.wait)


class _SlowReads:
    """A file whose every read is a request."""

    def __init__(self, handle: Any, wait: Any) -> None:
        self._handle, self._wait = handle, wait

    def read(self, *args: Any) -> bytes:
        self._wait()
        return self._handle.read(*args)

    def readinto(self, buffer: Any) -> int:
        self._wait()
        return self._handle.readinto(buffer)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> _SlowReads:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()


def build(folder: str, images: int, per_segment: int) -> list[SourceIdentity]:
    cache = InputCache(folder, SIZE, "stretch")
    identities = []
    pixels = np.zeros((1, SIZE, SIZE), np.uint8)
    for start in range(0, images, per_segment):
        entries = [
            (
                SourceIdentity(
                    f"/data/MURA-v1.1/train/XR_WRIST/patient{i:05d}/study1_positive/image1.png", 40_000 + i, f"{i}"
                ),
                ModelInput(pixels, Geometry(512, 400, SIZE)),
            )
            for i in range(start, min(images, start + per_segment))
        ]
        cache.write(entries)
        identities += [identity for identity, _ in entries]
    return identities


def first_lookup(url: str, identities: list[SourceIdentity], threads: int) -> tuple[float, int, InputCache]:
    """(seconds, requests) of a new process's first lookup of a shard's 64 images, and its cache."""
    LatencyFileSystem.requests = 0
    started = time.perf_counter()
    cache = InputCache(url, SIZE, "stretch", read_threads=threads)
    hits = cache.lookup(identities[-64:])
    seconds = time.perf_counter() - started
    assert len(hits) == 64
    return seconds, LatencyFileSystem.requests, cache


def held_after_first_lookup(url: str, identities: list[SourceIdentity], threads: int) -> tuple[float, float]:
    """MiB a cache holds after its first lookup: Python objects (tracemalloc), Arrow buffers."""
    gc.collect()
    arrow = pa.total_allocated_bytes()
    tracemalloc.start()
    cache = InputCache(url, SIZE, "stretch", read_threads=threads)
    cache.lookup(identities[-64:])
    gc.collect()
    python = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    held = (python / 2**20, (pa.total_allocated_bytes() - arrow) / 2**20)
    del cache
    return held


def later_lookups(cache: InputCache, identities: list[SourceIdentity], relist: bool) -> tuple[float, float]:
    """(ms, requests) per later shard lookup of 64 images, all cached: listing the folder each time
    (before) or not (a lookup whose images are all known)."""
    LatencyFileSystem.requests = 0
    shards = range(0, min(len(identities), 64 * 50), 64)
    started = time.perf_counter()
    for start in shards:
        if relist:
            cache.refresh()
        assert len(cache.lookup(identities[start : start + 64])) == 64
    return (time.perf_counter() - started) / len(shards) * 1000, LatencyFileSystem.requests / len(shards)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=40_000)
    parser.add_argument("--segment", type=int, default=64, help="images per segment (the job's shard size)")
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 20.0])
    parser.add_argument("--threads", type=int, default=16, help="segments read at once")
    args = parser.parse_args()
    fsspec.register_implementation("latency", LatencyFileSystem, clobber=True)
    folder = tempfile.mkdtemp(prefix="densecam-cache-lookup-")
    started = time.perf_counter()
    identities = build(folder, args.images, args.segment)
    print(
        f"{args.images} images in {len(identities) // args.segment} segments, built in {time.perf_counter() - started:.1f} s"
    )
    url = f"latency://{folder}"
    for latency in args.latency_ms:
        LatencyFileSystem.latency = latency / 1000
        rows = []
        for how, threads, catalog in (
            ("segment by segment", 1, False),
            (f"{args.threads} segments at once", args.threads, False),
            ("catalog", args.threads, True),
        ):
            if catalog:
                InputCache(folder, SIZE, "stretch").write_catalog()
            seconds, requests, cache = first_lookup(url, identities, threads)
            rows.append((how, seconds, requests))
        base = rows[0][1]
        print(f"\nlatency {latency:g} ms per request: a new actor's first lookup")
        for how, seconds, requests in rows:
            print(f"  {how:<24} {seconds:8.2f} s  {requests:6d} requests  {base / seconds:6.1f}x")
        if latency == args.latency_ms[0]:
            python, arrow = held_after_first_lookup(url, identities, args.threads)
            print(
                f"  what a cache holds after it: {python:.0f} MiB of Python objects, {arrow:.0f} MiB of Arrow buffers"
            )
        print("  each later shard's lookup (64 images, all cached):")
        for how, relist in (("listing every time (before)", True), ("listing only for unknown images", False)):
            ms, requests = later_lookups(cache, identities, relist)
            print(f"    {how:<33} {ms:8.2f} ms  {requests:5.1f} requests")
        for path in fsspec.filesystem("file").glob(f"{folder}/inputs/*/_catalog.json"):
            fsspec.filesystem("file").rm(path)  # the next latency starts without a catalog again


if __name__ == "__main__":
    print(f"machine: {describe_cpu()}")  # the CPU kind every figure is read against
    main()
