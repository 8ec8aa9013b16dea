"""The GPU actor's host pipeline without a GPU: an ExplainWorker whose explainer costs what a GPU pass
costs the host (a stretch holding the GIL, as kernel launches do, then a wait that releases it, as a
device sync does), feeding and writing real 320 px shards.

    python benchmarks/host_pipeline.py                        # 512 images, shards of 64, 3 at once
    python benchmarks/host_pipeline.py --gil-ms 15 --device-ms 40 --processes 1
    python benchmarks/host_pipeline.py --launches 916   # the GIL time as 916 ops, each dropping the GIL
    python benchmarks/host_pipeline.py --device cuda --precision fp16 --images 2048   # the real Explainer

With ``--device`` the worker runs the real Explainer there, as a GPU actor does but without Ray, and
the ratio is to the in-process Explainer on the same images decoded beforehand (what
``benchmarks/job.py`` compares the job with); under ``py-spy record --gil`` it shows what holds the
actor's GIL.

It prints, for a cold run (decoding, writing the input cache) and a run from the cache (a new
checkpoint): images/s, the ratio to the simulated device's own rate, and the CPU milliseconds per
image spent in the actor's process (what competes with kernel launches for the GIL) and in its
decode and writer processes. The actor's figure is the one a GPU run is most sensitive to; the ratio
is only indicative on a machine with fewer cores than a GPU node.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import torch
from baseline import InProcessExplainer, add_tree_arguments, generated_manifest  # benchmarks/baseline.py
from machine import describe_cpu  # benchmarks/machine.py

from densecam_core import load_densenet169
from densecam_core.cam.explainer import Explanation
from densecam_core.model.checkpoint import model_fingerprint, state_dict_bytes
from densecam_core.store.layout import Shard
from densecam_core.store.writer import RunSpec, RunWriter
from densecam_core.vocabulary import METHODS, block_grid
from jobs.explain.settings import ExplainSettings
from jobs.explain.worker import ExplainWorker


class SimulatedDevice:
    """Returns maps of the right shapes after ``gil_ms`` of Python work and ``device_ms`` of GIL-free waiting."""

    device = torch.device("cpu")

    def __init__(self, size: int, gil_ms: float, device_ms: float, launches: int = 0) -> None:
        self.grid, self.gil, self.wait, self.launches = block_grid(size), gil_ms / 1000, device_ms / 1000, launches
        self.tiny = torch.zeros(1)

    def __call__(self, images: torch.Tensor) -> Explanation:
        count = images.shape[0]
        if self.launches:
            each = self.gil / self.launches
            for _ in range(self.launches):
                until = time.perf_counter() + each
                while time.perf_counter() < until:
                    pass
                torch.add(self.tiny, 1)  # drops and retakes the GIL, as every op of a real pass does
        else:
            until = time.perf_counter() + self.gil
            while time.perf_counter() < until:  # kernel launches: Python and dispatcher work under the GIL
                pass
        time.sleep(self.wait)  # the device computing; the host thread waits without the GIL
        maps = {
            method: {block: torch.rand(count, 1, *self.grid[block]) for block in (1, 2, 3, 4)}
            for method in METHODS
            if method != "cam"
        }
        return Explanation(
            torch.rand(count, 1), torch.rand(count, 1, *self.grid[4]), maps, torch.zeros(count, 1, dtype=torch.long)
        )


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of live processes (Linux /proc), so start-up imports are not counted."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def child_pids(worker: ExplainWorker) -> list[int]:
    pools = [worker._decode, worker._write]
    return [pid for pool in pools if pool is not None and pool.pool is not None for pid in pool.pool._processes]


def run(
    args: argparse.Namespace, manifest, store: str, state: bytes, fingerprint: str
) -> tuple[float, float, float, str]:
    """One job over the manifest with one worker: images/s, actor and children CPU ms/image, the worker's stages."""
    settings = ExplainSettings(
        methods=METHODS,
        size=args.size,
        batch_size=args.shard_size,
        input_cache="readwrite",
        decode_processes=args.processes,
        decode_threads=max(2, args.processes),
        concurrency=args.concurrency,
        precision=args.precision,
        cuda_graphs=args.cuda_graphs,
    )
    spec = RunSpec(fingerprint, "x.pt", settings.run_settings(), 1, 1, block_grid(args.size), args.shard_size)
    writer = RunWriter(store, spec)
    writer.create_or_open("benchmark")
    planned = writer.plan(manifest)
    if args.device == "simulated":
        worker = ExplainWorker(state, settings, warm_up=False, store_url=store)
        worker.explainer = SimulatedDevice(args.size, args.gil_ms, args.device_ms, args.launches)  # type: ignore[assignment]
    else:
        worker = ExplainWorker(state, settings, device=args.device, warm_up=False, store_url=store)
    worker.warm_up()  # the first pass's kernel choices; starts the decode and writer processes

    def shard(item):
        index, rows = item
        bounds = Shard(int(index), int(index) * args.shard_size, int(rows["row"].max()) + 1)
        return worker.process_shard(writer.run_url, spec.run_id, bounds, args.shard_size, rows)

    children = child_pids(worker)
    own, theirs = cpu_seconds([os.getpid()]), cpu_seconds(children)
    start = time.perf_counter()
    with ThreadPoolExecutor(args.concurrency) as pool:
        results = list(pool.map(shard, planned.groupby("shard")))
    wall = time.perf_counter() - start
    own, theirs = cpu_seconds([os.getpid()]) - own, cpu_seconds(children) - theirs
    worker.close()
    count = sum(r.images for r in results)
    stages = {k: sum(r.seconds.get(k, 0.0) for r in results) for k in results[0].seconds if k != "total"}
    inside = ", ".join(f"{k} {v:.2f} s" for k, v in stages.items())
    return count / wall, own / count * 1000, theirs / count * 1000, inside


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--shard-size", type=int, default=64, help="also the batch, as on a GPU")
    parser.add_argument("--concurrency", type=int, default=3, help="shards at once, as a GPU actor")
    parser.add_argument("--processes", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="decode processes")
    parser.add_argument("--gil-ms", type=float, default=15.0, help="host time per batch holding the GIL")
    parser.add_argument(
        "--launches",
        type=int,
        default=0,
        help="split the GIL time into this many ops that each drop and retake the GIL, as torch calls do "
        "(the Explainer makes 916 Python-level torch calls per pass)",
    )
    parser.add_argument("--device-ms", type=float, default=40.0, help="device time per batch, GIL released")
    parser.add_argument("--device", default="simulated", help="simulated, or where the real Explainer runs (cuda)")
    parser.add_argument(
        "--cuda-graphs", action="store_true", help="the real Explainer replays its pass as a CUDA graph"
    )
    parser.add_argument("--precision", default="fp32", help="the real Explainer's precision")
    add_tree_arguments(parser)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="densecam-host-")
    manifest = generated_manifest(work, args.images, args.rgb_fraction)
    model = load_densenet169(seed=0)
    state, fingerprint = state_dict_bytes(model), model_fingerprint(model)
    if args.device == "simulated":
        simulated = SimulatedDevice(args.size, args.gil_ms, args.device_ms, args.launches)
        blank = torch.zeros(args.shard_size, 1, args.size, args.size, dtype=torch.uint8)
        simulated(blank)
        start = time.perf_counter()
        for _ in range(10):
            simulated(blank)
        device_rate = 10 * args.shard_size / (time.perf_counter() - start)  # alone, maps included
        launches = f" in {args.launches} ops" if args.launches else ""
        device = f"simulated device {args.gil_ms:g} ms GIL{launches} + {args.device_ms:g} ms per batch"
    else:
        model = load_densenet169(seed=0, device=args.device)
        paths = manifest["path"].tolist()
        device_rate = InProcessExplainer(
            model, paths, size=args.size, batch=args.shard_size, precision=args.precision
        ).rate()
        device = f"the Explainer on {args.device}, {args.precision}, in process on pre-decoded images"
    print(
        f"{args.images} images ({args.rgb_fraction:.0%} RGB), {args.size} px, shards of {args.shard_size} ({args.concurrency} at once), "
        f"{args.processes} decode processes, {device}: {device_rate:.0f} images/s; {os.cpu_count()} CPUs"
    )
    print("| run | images/s | ratio to the device | actor CPU ms/image | decode + writer CPU ms/image |")
    print("|---|---:|---:|---:|---:|")
    store = os.path.join(work, "store")
    stages = []
    for name, print_as in ((fingerprint, "cold (decode, write the cache)"), ("f" * 16, "from the input cache")):
        rate, own, children, inside = run(args, manifest, store, state, name)
        print(f"| {print_as} | {rate:.0f} | {rate / device_rate:.2f}x | {own:.2f} | {children:.2f} |", flush=True)
        stages.append(f"{print_as}, inside the worker (summed over shards): {inside}")
    print()
    print("\n".join(stages))


if __name__ == "__main__":
    print(f"machine: {describe_cpu()}")  # the CPU kind every figure is read against
    main()
