"""The evaluation job end to end on one actor: explain a generated tree, then score every map of it.

    python benchmarks/evaluate_job.py                          # CPU: 16 images, 128 px, K = 8
    python benchmarks/evaluate_job.py --images 128 --size 320 --precision fp16 --steps 16   # a GPU machine

Prints the evaluation's images/s per actor (all metrics: deletion and insertion of 21 maps plus the 4
random maps, five randomisation stages, two noise samples, localisation) and its per-stage actor time.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import pandas as pd
import torch
from machine import describe_cpu  # benchmarks/machine.py

from densecam_core import generate_mura
from densecam_core.evaluation.quality import format_grid, summary_grid
from densecam_core.model.precision import native_bf16
from jobs.evaluate.job import EvaluateConfig, run_evaluation
from jobs.explain.job import ExplainConfig, run_explain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8, help="images scored together")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="densecam-evaluate-")
    tree = os.path.join(work, "tree")
    generate_mura(tree, images=args.images, seed=0, lesion_scale=3.0)
    store = os.path.join(work, "store")
    explained = run_explain(
        ExplainConfig(
            manifest=tree, store=store, size=args.size, precision=args.precision, shard_size=32, progress=False
        )
    )
    boxes = pd.read_csv(os.path.join(tree, "lesion_boxes.csv"))
    summary, table = run_evaluation(
        EvaluateConfig(
            store=store,
            run=explained.run_id,
            metrics=("deletion", "insertion", "randomisation", "stability", "localisation"),
            boxes=os.path.join(tree, "lesion_boxes.csv") if not boxes.empty else None,
            steps=args.steps,
            batch_size=args.batch_size,
            progress=False,
        )
    )
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU (native bf16: {native_bf16('cpu')})"
    rate = summary.images_done / summary.explained_seconds if summary.explained_seconds else 0.0
    print(
        f"{device}; {args.images} images at {args.size} px, {args.precision}, K = {args.steps}: evaluation "
        f"{rate:.2f} images/s per actor over {summary.explained_seconds:.1f} s of dispatch "
        f"(explanation job: {explained.images_per_second:.1f} images/s)"
    )
    print("actor time: " + ", ".join(f"{k} {v:.1f} s" for k, v in summary.stage_seconds.items()))
    print(format_grid(summary_grid(table)))


if __name__ == "__main__":
    print(f"machine: {describe_cpu()}")  # the CPU kind every figure is read against
    main()
