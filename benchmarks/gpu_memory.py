"""Peak GPU memory and images/s of the Explainer per batch size and precision; optionally torch.compile.

    python benchmarks/gpu_memory.py                        # CUDA: 320 px, batches 32/64/128, fp32 and fp16
    python benchmarks/gpu_memory.py --compile fp16,64      # also each dense block compiled (torch.compile)
    python benchmarks/gpu_memory.py --graphs fp16,64       # also the pass replayed as a CUDA graph
    python benchmarks/gpu_memory.py --device cpu --batches 8 --precisions fp32 --compile fp32,8   # the CPU side

Memory is ``torch.cuda.max_memory_allocated`` over one Explainer call on uint8 input (weights
included), after a warm-up call at that batch. ``--compile`` wraps every dense block (the taps'
stages) in ``torch.compile`` with a fixed shape; gradients stay ``autograd.grad``'s, outside.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from machine import describe_cpu  # benchmarks/machine.py

from densecam_core import Explainer, load_densenet169
from densecam_core.testing import randomise_batchnorm


def rate(explainer: Explainer, batch: torch.Tensor, rounds: int) -> float:
    explainer(batch)
    if batch.device.type == "cuda" or explainer.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(rounds):
        explainer(batch).logits.cpu()
    return rounds * batch.shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--batches", default="32,64,128")
    parser.add_argument("--precisions", default="fp32,fp16")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--compile",
        default=None,
        metavar="PRECISION,BATCH",
        help="also time torch.compile'd dense blocks at this one setting (compiling takes minutes)",
    )
    parser.add_argument(
        "--graphs",
        action="append",
        default=[],
        metavar="PRECISION,BATCH",
        help="also time the pass replayed as a CUDA graph (Explainer(cuda_graphs=True)) at this setting; repeatable",
    )
    args = parser.parse_args()
    model = randomise_batchnorm(load_densenet169(), seed=1).to(args.device)
    cuda = args.device == "cuda"
    if cuda:
        print(torch.cuda.get_device_name(), f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
    print("| precision | batch | peak memory (GiB) | images/s |")
    print("|---|---:|---:|---:|")
    for precision in args.precisions.split(","):
        explainer = Explainer(model, precision=precision)
        for batch_size in (int(b) for b in args.batches.split(",")):
            batch = torch.randint(0, 256, (batch_size, 3, args.size, args.size), dtype=torch.uint8)
            explainer(batch)
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            explainer(batch)
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
            print(
                f"| {precision} | {batch_size} | {peak:.1f} | {rate(explainer, batch, args.rounds):.0f} |", flush=True
            )
    if args.compile:
        precision, batch_size = _setting(args.compile)
        eager = Explainer(model, precision=precision)
        compiled = Explainer(model, precision=precision)
        compiled._stages = [
            (tap, torch.compile(stage, dynamic=False), module) for tap, stage, module in compiled._stages
        ]
        _compare("torch.compile (each dense block)", eager, compiled, batch_size, args)
    for setting in args.graphs:
        precision, batch_size = _setting(setting)
        eager = Explainer(model, precision=precision)
        _compare("CUDA graphs", eager, Explainer(model, precision=precision, cuda_graphs=True), batch_size, args)


def _setting(text: str) -> tuple[str, int]:
    precision, batch = text.split(",")
    return precision, int(batch)


def _compare(name: str, eager: Explainer, other: Explainer, batch_size: int, args: argparse.Namespace) -> None:
    """Images/s of ``other`` against the eager pass, alternated twice each (a machine's drift falls on
    both), its first call's seconds, and the largest map difference relative to the map's range."""
    batch = torch.randint(0, 256, (batch_size, 3, args.size, args.size), dtype=torch.uint8)
    out = eager(batch)
    started = time.perf_counter()
    again = other(batch)
    first_seconds = time.perf_counter() - started
    diff = max(
        float(
            np.abs(again.maps[m][b].cpu().numpy() - out.maps[m][b].cpu().numpy()).max()
            / max(1e-12, float(out.maps[m][b].abs().max()))
        )
        for m in out.maps
        for b in out.maps[m]
    )
    second = torch.randint(0, 256, batch.shape, dtype=torch.uint8)  # a new input through the same recording
    second_diff = float((other(second).cam.cpu() - eager(second).cam.cpu()).abs().max())
    eager_rates, other_rates = [], []
    for _ in range(2):
        eager_rates.append(rate(eager, batch, args.rounds))
        other_rates.append(rate(other, batch, args.rounds))
    eager_rate, fast = float(np.mean(eager_rates)), float(np.mean(other_rates))
    print(
        f"\n{name}, {other.precision}, batch {batch_size}: eager {eager_rate:.4g} images/s "
        f"({' / '.join(f'{r:.4g}' for r in eager_rates)}), {name} {fast:.4g} "
        f"({' / '.join(f'{r:.4g}' for r in other_rates)}; {fast / eager_rate:.2f}x), first call {first_seconds:.1f} s, "
        f"largest map difference {diff:.1e} of the map's range (a second input: CAM differs by {second_diff:.1e})",
        flush=True,
    )


if __name__ == "__main__":
    print(f"machine: {describe_cpu()}")  # the CPU kind every figure is read against
    main()
