"""Training-step throughput: fp32 against bf16 autocast, same model, same batches, interleaved.

    python benchmarks/train.py                 # 192 px (the demo's size), batch 8
    python benchmarks/train.py --size 320      # MURA's size

bf16 pays off only on CPUs with native bf16 (AVX512-BF16 or AMX) or on CUDA; elsewhere oneDNN
emulates it and it is slower. The table says which this machine is.
"""

from __future__ import annotations

import argparse
import time

import torch
from machine import describe_cpu  # benchmarks/machine.py

from densecam_core.model.checkpoint import load_densenet169
from densecam_core.model.precision import native_bf16
from densecam_core.model.training import weighted_bce


def step_rate(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    dtype: torch.dtype | None,
    steps: int,
) -> float:
    """Training steps as training.train runs them: autocast, and a GradScaler for fp16."""
    device = images.device.type
    scaler = torch.amp.GradScaler(device, enabled=dtype == torch.float16)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        with torch.autocast(device, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits = model(images)[:, 0]
        loss = weighted_bce(logits, labels, torch.ones_like(labels))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (CUDA adds fp16 autocast with a GradScaler)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_densenet169(num_classes=1).train().to(args.device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-6)
    images = torch.randn(args.batch, 3, args.size, args.size).to(args.device, memory_format=torch.channels_last)
    labels = (torch.rand(args.batch) > 0.5).float().to(args.device)
    variants = {"fp32": None, "bf16 autocast": torch.bfloat16}
    if args.device.startswith("cuda"):
        variants["fp16 autocast + GradScaler"] = torch.float16
    for dtype in variants.values():  # warm-up both
        step_rate(model, optimizer, images, labels, dtype, 1)
    rates = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, dtype in variants.items():
            rates[name].append(step_rate(model, optimizer, images, labels, dtype, args.steps))
    best = {name: max(values) for name, values in rates.items()}
    where = (
        torch.cuda.get_device_name(args.device)
        if args.device.startswith("cuda")
        else f"{torch.get_num_threads()} CPU threads"
    )
    print(
        f"training steps, {args.size} px, batch {args.batch}, {where}, "
        f"native bf16 on this CPU (AVX512-BF16 or AMX): {native_bf16('cpu')}"
    )
    print("\n| precision | images/s | ratio |\n|---|---:|---:|")
    for name, rate in best.items():
        print(f"| {name} | {rate:.2f} | {rate / best['fp32']:.2f}x |")


if __name__ == "__main__":
    print(f"machine: {describe_cpu()}")  # the CPU kind every figure is read against
    main()
