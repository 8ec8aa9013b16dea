"""End-to-end job throughput against the in-process Explainer on the same images, same settings.

    python benchmarks/job.py                      # 128 synthetic images (<= 512 px), 320 px input, batch 8, 2 shards of 64
    python benchmarks/job.py --images 16 --size 128   # quick
    python benchmarks/job.py --cached             # also: a new checkpoint, every input from the input cache
    python benchmarks/job.py --device cuda --precision fp16 --images 2048 --cached --also-eager   # graphs on and off

Baseline: the images decoded beforehand (untimed), then Explainer calls in batches (timed), once
before the jobs and once after them; the ratios are to the mean of the two (a shared machine drifts).
Job: local Ray, decode + explain + write + commit, timed from the moment the actors hold their
model replicas to the last shard's result (Ray and actor start-up, and stopping the actors, are
reported separately). GPU actors replay CUDA graphs, the job's default; the in-process baseline runs
the pass op by op, as the Explainer does by default.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch
from baseline import InProcessExplainer, add_tree_arguments, generated_manifest  # benchmarks/baseline.py
from machine import describe_cpu  # benchmarks/machine.py

from densecam_core import load_densenet169
from densecam_core.vocabulary import METHODS
from jobs.explain.job import ExplainConfig, run_explain
from jobs.explain.settings import ExplainSettings
from jobs.explain.worker import ExplainWorker


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--batch", type=int, default=None, help="default: the job's (8 on CPU; on a GPU what fits)")
    parser.add_argument("--shard-size", type=int, default=64, help="the job default")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument(
        "--device", default="cpu", help="the baseline's device; on a GPU machine the job uses one GPU per actor"
    )
    parser.add_argument(
        "--cached",
        action="store_true",
        help="also run the job again with a new checkpoint, reading every input from the input cache",
    )
    parser.add_argument("--decode", default="auto", help="the job's --decode: auto, threads or processes")
    parser.add_argument(
        "--also-threads",
        action="store_true",
        help="also run the cold job with --decode threads (the previous default of GPU actors), to compare",
    )
    parser.add_argument(
        "--also-eager",
        action="store_true",
        help="GPU: also run every job variant with --no-cuda-graphs (the pass op by op), and time the in-process "
        "Explainer with CUDA graphs too (the ratios stay to the eager in-process Explainer)",
    )
    add_tree_arguments(parser)
    return parser


def print_table(
    args: argparse.Namespace,
    images: int,
    batch: int,
    baseline: tuple[float, float],
    graphed: tuple[float, float] | None,
    rows: list,
) -> None:
    """The rates as a table of ratios to the in-process Explainer (mean of before and after the jobs)."""
    before, after = baseline
    in_process = (before + after) / 2
    print(
        f"{images} images ({args.rgb_fraction:.0%} RGB), input {args.size}, batch {batch}, {args.precision}, {args.device}, "
        f"{torch.get_num_threads()} torch threads in process, {os.cpu_count()} CPUs"
    )
    print()
    print("| variant | images/s | ratio |")
    print("|---|---:|---:|")
    print(f"| in-process Explainer (pre-decoded): mean of before and after the jobs | {in_process:.2f} | 1.00x |")
    print(f"| (before the jobs / after them) | {before:.2f} / {after:.2f} | |")
    if graphed is not None:
        graphed_before, graphed_after = graphed
        rate = (graphed_before + graphed_after) / 2
        print(
            f"| in-process Explainer with CUDA graphs (before / after: {graphed_before:.2f} / {graphed_after:.2f}) "
            f"| {rate:.2f} | {rate / in_process:.2f}x |"
        )
    for name, summary in rows:
        rate = summary.images_per_second
        print(f"| {name} | {rate:.2f} | {rate / in_process:.2f}x |")
    for name, summary in rows:
        print(
            f"\n{name}: wall {summary.seconds:.1f} s, actor model start-up {summary.actor_startup_seconds:.1f} s, "
            f"actors stopping {summary.actor_shutdown_seconds:.2f} s, "
            f"{summary.images_decoded} decoded, {summary.images_from_cache} from the cache"
        )
        print("time inside the actors: " + ", ".join(f"{k} {v:.2f} s" for k, v in summary.stage_seconds.items()))


def main() -> None:
    args = build_parser().parse_args()
    work = tempfile.mkdtemp(prefix="densecam-bench-")
    manifest = generated_manifest(work, args.images, args.rgb_fraction)
    model = load_densenet169(device=args.device)
    batch = args.batch
    if batch is None:
        concurrency = 3 if args.device == "cuda" else 1  # as the job's actors (jobs/runtime/resources.py)
        settings = ExplainSettings(
            methods=METHODS,
            size=args.size,
            precision=args.precision,
            batch_size=None,
            concurrency=concurrency,
            max_batch=args.shard_size,
        )
        batch = ExplainWorker(model.state_dict(), settings, device=args.device, warm_up=False).batch_size

    paths = manifest["path"].tolist()
    baseline = InProcessExplainer(model, paths, size=args.size, batch=batch, precision=args.precision)
    graphed = (
        InProcessExplainer(model, paths, size=args.size, batch=batch, precision=args.precision, cuda_graphs=True)
        if args.also_eager
        else None
    )
    before = baseline.rate()
    graphed_before = graphed.rate() if graphed else float("nan")

    def job(store: str, checkpoint: str | None, decode: str = args.decode, cuda_graphs: bool = True):
        return run_explain(
            ExplainConfig(
                manifest=os.path.join(work, "tree"),
                store=store,
                size=args.size,
                checkpoint=checkpoint,
                batch_size=batch,
                shard_size=args.shard_size,
                precision=args.precision,
                decode=decode,
                cuda_graphs=cuda_graphs,
                progress=False,
            )
        )

    cold = job(os.path.join(work, "store"), None)
    rows = [(f"job: decode ({args.decode}) + explain + write + commit, local Ray", cold)]
    if args.also_threads:
        rows.append(("job, decoding with threads", job(os.path.join(work, "store-threads"), None, "threads")))
    other = os.path.join(work, "other.pt")
    if args.cached:
        torch.save(load_densenet169(seed=1).state_dict(), other)
        warm = job(os.path.join(work, "store"), other)
        assert warm.images_from_cache == len(manifest) and warm.images_decoded == 0, warm
        rows.append(("job, new checkpoint, inputs from the input cache", warm))
    if args.also_eager:
        rows.append(("job, cold, --no-cuda-graphs", job(os.path.join(work, "store-eager"), None, cuda_graphs=False)))
        if args.cached:
            warm = job(os.path.join(work, "store-eager"), other, cuda_graphs=False)
            assert warm.images_from_cache == len(manifest) and warm.images_decoded == 0, warm
            rows.append(("job, new checkpoint, from the input cache, --no-cuda-graphs", warm))
    after = baseline.rate()  # measured again once Ray is gone: the machine may have drifted meanwhile
    graphed_after = graphed.rate() if graphed else float("nan")
    print_table(args, len(manifest), batch, (before, after), (graphed_before, graphed_after) if graphed else None, rows)


if __name__ == "__main__":
    print(f"machine: {describe_cpu()}")  # the CPU kind every figure is read against
    main()
