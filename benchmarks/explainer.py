"""Explainer throughput against a plain forward and pytorch-grad-cam, as ratios in one process.

    python benchmarks/explainer.py                # 320x320, batch 8, every variant
    python benchmarks/explainer.py --size 128 --rounds 2 --skip-gradcam-lib   # quick smoke

All variants are warmed up first, then timed interleaved with the plain forward round by round, one phase per
variant (the first autograd pass
speeds later plain forwards up through the allocator, so a cold baseline would flatter us).
Prints a Markdown table of images/s and the ratio to the plain forward, and the bf16-vs-fp32
per-image Pearson correlations of every map.
"""

from __future__ import annotations

import argparse
import copy
import platform
import time
from collections.abc import Callable

import numpy as np
import torch

from densecam_core import Explainer, load_densenet169
from densecam_core.explain import BLOCKS, Explanation
from densecam_core.store.compare import pearson_rows
from densecam_core.testing import randomise_batchnorm


def map_correlations(ref: Explanation, other: Explanation) -> dict[str, float]:
    """Minimum over images of the Pearson r between two explanations, per map."""
    out = {"cam": float(np.nanmin(pearson_rows(ref.cam.numpy(), other.cam.numpy())))}
    for method, per_block in ref.maps.items():
        for block in BLOCKS:
            r = pearson_rows(per_block[block].numpy(), other.maps[method][block].numpy())
            out[f"{method}/block{block}"] = float(np.nanmin(r))  # NaN: a constant (all-zero) map
    return out


def gradcam_library_runner(model: torch.nn.Module) -> Callable[[torch.Tensor], object]:
    """pytorch-grad-cam producing the same four per-block Grad-CAM maps: one object per block."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    f = model.features
    cams = [GradCAM(model=model, target_layers=[layer]) for layer in (f.transition1, f.transition2, f.transition3, f.norm5)]

    def run(x: torch.Tensor) -> object:
        targets = [ClassifierOutputTarget(0)] * x.shape[0]
        return [cam(input_tensor=x, targets=targets) for cam in cams]

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds per variant, interleaved")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--skip-gradcam-lib", action="store_true", help="skip pytorch-grad-cam (grad-cam package)")
    parser.add_argument("--skip-bf16", action="store_true")
    args = parser.parse_args()

    torch.manual_seed(0)
    base = randomise_batchnorm(load_densenet169())
    x = torch.randn(args.batch, 3, args.size, args.size)

    plain = copy.deepcopy(base)
    variants: dict[str, Callable[[torch.Tensor], object]] = {}

    def plain_forward(inp: torch.Tensor) -> object:
        with torch.no_grad():
            return plain(inp)

    variants["plain forward, fp32 (baseline)"] = plain_forward
    fp32 = Explainer(copy.deepcopy(base), precision="fp32")
    variants["Explainer, all methods, fp32"] = fp32
    bf16 = None
    if not args.skip_bf16:
        bf16 = Explainer(copy.deepcopy(base), precision="bf16")
        variants["Explainer, all methods, bf16"] = bf16
    if not args.skip_gradcam_lib:
        variants["pytorch-grad-cam, Grad-CAM x 4 blocks"] = gradcam_library_runner(copy.deepcopy(base))

    # Each variant is timed interleaved with the baseline in a phase of its own, so one variant's
    # allocator and weight-cache state (bf16 keeps bf16 weight copies) does not tax another's.
    baseline_name = "plain forward, fp32 (baseline)"
    rate: dict[str, float] = {}
    baseline_rates: list[float] = []
    for name, fn in variants.items():
        if name == baseline_name:
            continue
        pair = {baseline_name: plain_forward, name: fn}
        for f in pair.values():
            for _ in range(args.warmup):
                f(x)
        seconds = {n: 0.0 for n in pair}
        for _ in range(args.rounds):
            for n, f in pair.items():
                start = time.perf_counter()
                f(x)
                seconds[n] += time.perf_counter() - start
        base_rate = args.rounds * args.batch / seconds[baseline_name]
        baseline_rates.append(base_rate)
        rate[name] = args.rounds * args.batch / seconds[name] / base_rate  # ratio to its own phase

    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; input {args.size}x{args.size}, batch {args.batch}, {args.rounds} rounds")
    print()
    print("| variant | images/s | ratio to plain forward (same phase) |")
    print("|---|---:|---:|")
    print(f"| {baseline_name} | {sum(baseline_rates) / len(baseline_rates):.2f} | 1.00x |")
    for name, ratio in rate.items():
        phase_base = baseline_rates[list(rate).index(name)]
        print(f"| {name} | {ratio * phase_base:.2f} | {ratio:.2f}x |")
    lib = "pytorch-grad-cam, Grad-CAM x 4 blocks"
    if lib in rate:
        print(f"\nExplainer fp32 vs pytorch-grad-cam: {rate['Explainer, all methods, fp32'] / rate[lib]:.1f}x "
              "(ratio of the two ratios to the plain forward)")
    if bf16 is not None:
        corr = map_correlations(fp32(x), bf16(x))
        print("\nbf16 vs fp32, minimum per-image Pearson r:")
        print(", ".join(f"{k} {v:.4f}" for k, v in corr.items()))


if __name__ == "__main__":
    main()
