"""End-to-end job throughput against the in-process Explainer on the same images, same settings.

    python benchmarks/job.py                      # 128 synthetic images (<= 512 px), 320 px input, batch 8, 2 shards of 64
    python benchmarks/job.py --images 16 --size 128   # quick

Baseline: the images decoded beforehand (untimed), then Explainer calls in batches (timed).
Job: local Ray, decode + explain + write + commit, timed from the moment the actors hold their
model replicas to the last commit (Ray and actor start-up are reported separately).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from densecam_core import Explainer, generate_mura, load_densenet169, read_manifest
from densecam_core.loader import BatchLoader
from jobs.explain import JobConfig, run_job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--shard-size", type=int, default=64, help="the job default")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--device", default="cpu", help="the baseline's device; on a GPU machine the job uses one GPU per actor")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="densecam-bench-")
    generate_mura(os.path.join(work, "tree"), images=args.images, seed=0)
    manifest = read_manifest(os.path.join(work, "tree"))

    explainer = Explainer(load_densenet169(device=args.device), precision=args.precision)
    batches = [b.images for b in BatchLoader(manifest["path"].tolist(), size=args.size, batch_size=args.batch)]
    explainer(batches[0]).to("cpu")  # warm-up
    start = time.perf_counter()
    for images in batches:
        explainer(images).to("cpu")  # the job copies every result back to write it: so does the baseline
    in_process = len(manifest) / (time.perf_counter() - start)

    summary = run_job(JobConfig(manifest=os.path.join(work, "tree"), store=os.path.join(work, "store"), size=args.size,
                                batch_size=args.batch, shard_size=args.shard_size, precision=args.precision,
                                progress=False))
    job = summary.images_per_second
    print(f"{len(manifest)} images, input {args.size}, batch {args.batch}, {args.precision}, "
          f"{torch.get_num_threads()} torch threads in process, {os.cpu_count()} CPUs")
    print()
    print("| variant | images/s | ratio |")
    print("|---|---:|---:|")
    print(f"| in-process Explainer (pre-decoded) | {in_process:.2f} | 1.00x |")
    print(f"| job: decode + explain + write + commit, local Ray | {job:.2f} | {job / in_process:.2f}x |")
    print(f"\njob wall time {summary.seconds:.1f} s, of which actor model start-up {summary.actor_startup_seconds:.1f} s")
    print("time inside the actors: " + ", ".join(f"{k} {v:.2f} s" for k, v in summary.stage_seconds.items()))


if __name__ == "__main__":
    main()
