"""What one shard's commit costs the process that writes it (a GPU actor's writer process).

    python benchmarks/commit.py                 # 10 shards of 64 images, 320 px, every method
    python benchmarks/commit.py --shards 4

Commits real maps (an Explainer with random weights on generated PNGs, tiled to the shard) into a
local store with ``commit_shard``: cold (the shard's 64 decoded inputs go to the input cache too, at
the same time as the chunks), the same with the cache segment written first (the order before the
overlap: the baseline), and a shard whose inputs came from the cache (chunks and index only).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import Future

import numpy as np
from baseline import generated_manifest  # benchmarks/baseline.py
from machine import describe_cpu  # benchmarks/machine.py

from densecam_core import Explainer, load_densenet169
from densecam_core.data.dicom import DEFAULT_DICOM_WINDOW
from densecam_core.data.loader import BatchLoader
from densecam_core.data.preprocess import load_model_input
from densecam_core.store import layout
from densecam_core.store import shard as commit
from densecam_core.store.inputs.identity import identify
from densecam_core.store.writer import RunSpec, RunWriter
from densecam_core.vocabulary import METHODS, block_grid
from jobs.explain.outputs import store_arrays
from jobs.explain.settings import ExplainSettings
from jobs.runtime.skeleton import shard_work


class RightAway:
    """An executor that runs what it is given at once: the cache segment written before the chunks."""

    def submit(self, function, *args):
        future: Future = Future()
        future.set_result(function(*args))
        return future


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--size", type=int, default=320)
    args = parser.parse_args()
    shard_size = 64
    work = tempfile.mkdtemp(prefix="densecam-commit-")
    manifest = generated_manifest(work, args.shards * shard_size, 0.2)
    settings = ExplainSettings(methods=METHODS, size=args.size)
    spec = RunSpec("a" * 16, "x.pt", settings.run_settings(), 1, 1, block_grid(args.size), shard_size)
    store = os.path.join(work, "store")
    writer = RunWriter(store, spec)
    writer.create_or_open("benchmark")
    planned = writer.plan(manifest)
    with open(os.path.join(writer.run_url, layout.RUN_JSON)) as handle:
        meta = json.load(handle)

    # real maps of 16 images, tiled to a shard
    batch = next(iter(BatchLoader(manifest["path"].tolist()[:16], size=args.size, batch_size=16))).images
    result = Explainer(load_densenet169(seed=0))(batch)
    named = store_arrays(result)
    arrays = {name: np.tile(named[name].numpy(), (4,) + (1,) * (named[name].dim() - 1)) for name in meta["arrays"]}
    arrays[layout.TARGETS_ARRAY] = arrays[layout.TARGETS_ARRAY].astype(np.int32)

    shards = []
    for shard, rows in shard_work(planned, shard_size).todo:
        index = shard.index
        part = rows.copy()
        part["orig_height"], part["orig_width"], part["resize_mode"] = 512, 400, "stretch"
        part["logit"], part["prob"], part["status"], part["error"] = 0.0, 0.5, "ok", None
        part["shard"], part["run_id"] = int(index), spec.run_id
        decoded = [(identify(p), load_model_input(p, args.size, "stretch")) for p in rows["path"]]
        shards.append((shard, part, decoded))

    def commit_all(with_inputs: bool) -> float:
        start = time.perf_counter()
        for shard, part, decoded in shards:
            cache = commit.CacheTarget(store, args.size, "stretch", DEFAULT_DICOM_WINDOW) if with_inputs else None
            target = commit.ShardCommit(writer.run_url, shard, shard_size, part, None, cache, meta["created"])
            commit.commit_shard(target, arrays, decoded)
        return (time.perf_counter() - start) / len(shards) * 1000

    commit_all(False)  # warm: arrays opened, first writes done
    overlapped = commit_all(True)
    from_cache = commit_all(False)
    commit._cache_writer = RightAway()  # type: ignore[assignment]
    sequential = commit_all(True)
    print(f"{args.shards} shards of {shard_size}, {args.size} px, {len(arrays)} arrays, {os.cpu_count()} CPUs")
    print()
    print("| commit of one shard | ms |")
    print("|---|---:|")
    print(f"| cold, cache segment written first (baseline) | {sequential:.1f} |")
    print(f"| cold, cache segment and chunks at once | {overlapped:.1f} ({sequential / overlapped:.2f}x) |")
    print(f"| inputs from the cache (chunks and index) | {from_cache:.1f} |")


if __name__ == "__main__":
    print(f"machine: {describe_cpu()}")  # the CPU kind every figure is read against
    main()
