"""A run of N images read like a notebook would, before and after index compaction.

    python benchmarks/scale.py                          # N = 10,000 / 100,000 / 1,000,000, local disk
    python benchmarks/scale.py --sizes 10000 --s3       # also against a moto S3 server on 127.0.0.1

Builds each run with the writer's own API and fabricated values, without computing maps: the plan
and the arrays cover N rows (metadata only), every shard's index part is committed, and the chunks
of the shards holding 100 randomly chosen images are written (``maps`` reads only those). Then it
times: opening the store, ``store.runs`` (10 runs of N images), ``read_index()``, ``read_index`` with a
filter, ``maps`` for the 100 images, and pandas reading one Parquet file holding the same rows (the
baseline ``read_index`` is held to) — before and after ``densecam compact``; it also counts the objects
per run and the chunks ``maps`` read.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from machine import describe_cpu  # benchmarks/machine.py

from densecam_core.data.manifest import BODY_PARTS
from densecam_core.store import layout
from densecam_core.store.compact import compact_run
from densecam_core.store.reader import open_store
from densecam_core.store.record import RunSettings
from densecam_core.store.shard import ShardCommit, commit_shard, write_index_part
from densecam_core.store.writer import RunSpec, RunWriter
from densecam_core.vocabulary import block_grid
from jobs.runtime.skeleton import shard_work

SHARD = 64
SIZE = 64


def fabricated_manifest(n: int) -> pd.DataFrame:
    ids = [f"valid/XR_{BODY_PARTS[i % 7]}/patient{i:07d}/study1_positive/image1.png" for i in range(n)]
    return pd.DataFrame(
        {
            "image_id": ids,
            "path": [f"/archive/{i}" for i in ids],
            "split": "valid",
            "body_part": [BODY_PARTS[i % 7] for i in range(n)],
            "patient_id": [f"patient{i:07d}" for i in range(n)],
            "study_id": [f"patient{i:07d}/study1" for i in range(n)],
            "view": 1,
            "label": np.arange(n) % 2,
        }
    )


def index_rows(planned: pd.DataFrame, run_id: str) -> pd.DataFrame:
    out = planned.copy()
    out["orig_height"], out["orig_width"], out["resize_mode"] = 512, 400, "stretch"
    out["logit"] = (out["row"] % 97 / 50.0 - 1).astype("float32")
    out["prob"] = 1 / (1 + np.exp(-out["logit"]))
    out["status"], out["error"], out["run_id"] = "ok", None, run_id
    return out


def build(store: str, n: int, fingerprint: str, sample: np.ndarray) -> RunWriter:
    settings = RunSettings(("gradcam",), SIZE)
    writer = RunWriter(store, RunSpec(fingerprint, "scale.pt", settings, 1, 1, block_grid(SIZE), SHARD))
    manifest = fabricated_manifest(n)
    writer.create_or_open("scale", manifest)
    planned = writer.plan(manifest)
    with_chunks = set((sample // SHARD).tolist())
    for shard, rows in shard_work(planned, SHARD).todo:
        index = index_rows(rows, writer.spec.run_id)
        if shard.index in with_chunks:
            values = {
                name: np.ones((len(rows), *shape), np.float32) for name, shape in writer.spec.array_shapes().items()
            }
            commit_shard(ShardCommit(writer.run_url, shard, SHARD, index), values)
        else:
            write_index_part(writer.run_url, shard.index, index)
    return writer


def timed(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def objects(store: str, run_id: str) -> int:
    from densecam_core import fileio

    fs, root = fileio.filesystem(store)
    return len(fs.find(f"{root}/runs/{run_id}"))


def measure(store: str, run_id: str, sample: np.ndarray, repeat: int) -> dict[str, float]:
    run = open_store(store).run(run_id)
    ids = run.index["image_id"].to_numpy()[sample]
    row: dict[str, float] = {}
    row["open"], _ = timed(lambda: open_store(store).run(run_id), repeat)
    row["runs"], listing = timed(lambda: open_store(store).runs, repeat)
    row["read_index"], frame = timed(lambda: open_store(store).run(run_id).read_index(), repeat)
    row["filter"], wrists = timed(lambda: run.read_index(filters=[("body_part", "=", "WRIST")]), repeat)
    fresh = open_store(store).run(run_id)
    fresh.index  # noqa: B018  (the image-id lookup is built once per Run, as in a notebook)
    row["maps"], maps = timed(lambda: fresh.maps("gradcam", 2, image_ids=list(ids)), repeat)
    assert len(frame) == len(run.index) and len(wrists) == (frame["body_part"] == "WRIST").sum()
    assert maps.shape[0] == len(ids) and len(listing) >= 1
    row["objects"] = objects(store, run_id)
    row["chunks"] = len(set((frame.set_index("image_id").loc[ids, "row"].to_numpy() // SHARD).tolist()))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--s3", action="store_true", help="also on a moto S3 server (127.0.0.1), smallest size only")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    targets = [("local", tempfile.mkdtemp(prefix="densecam-scale-"))]
    server = None
    if args.s3:
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
        server.start()
        host, port = server.get_host_and_port()
        os.environ.update(
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ENDPOINT_URL=f"http://{host}:{port}",
        )
        import fsspec

        fsspec.filesystem("s3").mkdir("scale")
        targets.append(("s3 (moto)", "s3://scale"))
    print(
        "| storage | N | index | objects/run | open | store.runs (10 runs) | read_index | filtered | "
        "maps, 100 images (chunks/array) | pandas, one file | read_index / pandas |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    sizes = [int(s) for s in args.sizes.split(",")]
    for where, base in targets:
        for n in sizes[:1] if where != "local" else sizes:
            store = f"{base}/n{n}"
            rng = np.random.default_rng(n)
            sample = rng.choice(n, size=min(100, n), replace=False)
            started = time.perf_counter()
            writers = [build(store, n, f"{k:064x}", sample) for k in range(1)]
            run_id = writers[0].spec.run_id
            for k in range(1, 10):  # 9 more runs of N images for the listing: same index, other fingerprints
                other = RunWriter(
                    store, RunSpec(f"{k:064x}", "scale.pt", writers[0].spec.settings, 1, 1, block_grid(SIZE), SHARD)
                )
                other.create_or_open("scale")
                _copy_index(store, run_id, other.spec.run_id)
            build_s = time.perf_counter() - started
            for stage in ("parts", "compacted"):
                if stage == "compacted":
                    started = time.perf_counter()
                    for run_key in open_store(store).run_metadata():
                        compact_run(open_store(store).run(run_key))
                    compact_s = time.perf_counter() - started
                row = measure(store, run_id, sample, args.repeat)
                baseline = _pandas_baseline(store, run_id, args.repeat)
                print(
                    f"| {where} | {n:,} | {stage} | {row['objects']:,.0f} | {row['open']:.3f} s | {row['runs']:.3f} s | "
                    f"{row['read_index']:.2f} s | {row['filter']:.2f} s | {row['maps']:.3f} s ({row['chunks']:.0f}) | "
                    f"{baseline:.2f} s | {row['read_index'] / baseline:.1f}x |",
                    flush=True,
                )
            print(
                f"<!-- {where} N={n}: built in {build_s:.0f} s, 10 runs compacted in {compact_s:.1f} s -->", flush=True
            )
            if where == "local":
                shutil.rmtree(store, ignore_errors=True)
    if server is not None:
        server.stop()


def _copy_index(store: str, source: str, target: str) -> None:
    from densecam_core import fileio

    fs, root = fileio.filesystem(store)
    fs.makedirs(f"{root}/runs/{target}/{layout.INDEX_DIR}", exist_ok=True)
    for path in fs.find(f"{root}/runs/{source}/{layout.INDEX_DIR}"):
        fs.copy(path, path.replace(source, target))


def _pandas_baseline(store: str, run_id: str, repeat: int) -> float:
    """pandas reading one Parquet file that holds the run's rows (written once, untimed)."""
    from densecam_core import fileio

    frame = open_store(store).run(run_id).read_index()
    fs, root = fileio.filesystem(store)
    path = f"{root}/baseline-{run_id}.parquet"
    with fs.open(path, "wb") as handle:
        frame.to_parquet(handle, index=False, compression="zstd")

    def read() -> pd.DataFrame:
        with fs.open(path, "rb") as handle:
            return pd.read_parquet(handle)

    seconds, _ = timed(read, repeat)
    fs.rm(path)
    return seconds


if __name__ == "__main__":
    print(f"machine: {describe_cpu()}")  # the CPU kind every figure is read against
    main()
