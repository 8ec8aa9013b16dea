"""Explainer throughput against a plain forward and pytorch-grad-cam, as ratios in one process.

    python benchmarks/explainer.py                # 320x320, batch 8, every variant
    python benchmarks/explainer.py --size 128 --rounds 2 --skip-gradcam-lib   # quick smoke
    python benchmarks/explainer.py --checkpoint model.pt --images DIR         # your model, your images
    python benchmarks/explainer.py --arch densenet121 --targets 14            # CheXNet-shaped: 14 targets in one pass

All variants are warmed up first, then timed interleaved with the plain forward round by round, one phase per
variant (the first autograd pass
speeds later plain forwards up through the allocator, so a cold baseline would flatter us).
Prints a Markdown table of images/s and the ratio to the plain forward, and one of the bf16-vs-fp32
per-image Pearson correlations of every map beside fp32's own change when the input moves by half a
grey level (the noise floor an 8-bit image already carries).
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from machine import describe_cpu  # benchmarks/machine.py

from densecam_core import Explainer
from densecam_core.analysis.comparison import pearson_rows
from densecam_core.cam.explainer import BLOCKS, Explanation
from densecam_core.data.decode import is_image_name
from densecam_core.data.preprocess import IMAGENET_STD, load_for_model
from densecam_core.model.checkpoint import load_densenet
from densecam_core.model.precision import native_bf16
from densecam_core.testing import randomise_batchnorm
from densecam_core.vocabulary import method_names


def map_correlations(ref: Explanation, other: Explanation) -> dict[str, np.ndarray]:
    """Per-image Pearson r between two explanations, per map (NaN where a map is constant, e.g. all zero)."""
    ref, other = ref.to("cpu"), other.to("cpu")
    out = {"cam": pearson_rows(ref.cam.numpy(), other.cam.numpy())}
    for method, per_block in ref.maps.items():
        for block in BLOCKS:
            out[f"{method}/block{block}"] = pearson_rows(per_block[block].numpy(), other.maps[method][block].numpy())
    return out


def half_grey_level_jitter(x: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """``x`` moved by uniform noise of +-0.5 grey level: an 8-bit image's own quantisation error.

    A map that changes under this in fp32 cannot be expected to survive bf16 any better: the
    difference is below what the stored image can express.
    """
    gen = torch.Generator().manual_seed(seed)
    std = torch.from_numpy(IMAGENET_STD).view(1, 3, 1, 1)
    noise = (torch.rand(x.shape, generator=gen) - 0.5) / 255.0 / std
    return x + noise.to(x.device)


def print_agreement(columns: dict[str, dict[str, np.ndarray]]) -> None:
    """Per map, min / median per-image r of each comparison; the first column is held to the targets."""
    names = list(columns)
    print("\n| map | " + " | ".join(f"{n}: min r | median r" for n in names) + f" | target ({names[0]}) |")
    print("|---|" + "---:|---:|" * len(names) + "---|")
    for key in columns[names[0]]:
        target = 0.99 if key == "cam" or key.startswith("gradcam/") else 0.97
        cells = " | ".join(f"{np.nanmin(columns[n][key]):.3f} | {np.nanmedian(columns[n][key]):.3f}" for n in names)
        verdict = "met" if np.nanmin(columns[names[0]][key]) >= target else "missed"
        print(f"| {key} | {cells} | >= {target} {verdict} |")


def first_images(folder: str, count: int, size: int) -> torch.Tensor:
    """The first ``count`` images under ``folder`` (sorted paths), preprocessed as the job does."""
    paths = sorted(p for p in Path(folder).rglob("*") if p.is_file() and is_image_name(p.name))[:count]
    if len(paths) < count:
        raise SystemExit(f"--images {folder!r}: found {len(paths)} images, need --batch {count}")
    return torch.from_numpy(np.stack([load_for_model(str(p), size).array for p in paths]))


def gradcam_library_runner(model: torch.nn.Module, targets: int = 1) -> Callable[[torch.Tensor], object]:
    """pytorch-grad-cam producing the same four per-block Grad-CAM maps: one object per block, one call per target."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    f = model.features
    cams = [
        GradCAM(model=model, target_layers=[layer]) for layer in (f.transition1, f.transition2, f.transition3, f.norm5)
    ]

    def run(x: torch.Tensor) -> object:
        return [
            cam(input_tensor=x, targets=[ClassifierOutputTarget(t)] * x.shape[0])
            for t in range(targets)
            for cam in cams
        ]

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds per variant, interleaved")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--skip-gradcam-lib", action="store_true", help="skip pytorch-grad-cam (grad-cam package)")
    parser.add_argument("--skip-bf16", action="store_true")
    parser.add_argument("--arch", default="densenet169", help="densenet121, densenet161, densenet169 or densenet201")
    parser.add_argument(
        "--targets", type=int, default=1, help="outputs of the (random) model; all explained in one pass when > 1"
    )
    parser.add_argument(
        "--checkpoint", help="a trained model instead of random weights with random BatchNorm statistics"
    )
    parser.add_argument("--images", help="a folder: explain its first --batch images instead of Gaussian noise")
    parser.add_argument(
        "--device", default="cpu", help="cpu or cuda (on CUDA also fp16, fp32 without TF32, contiguous layout)"
    )
    return parser


def interleaved_ratios(
    variants: dict[str, Callable[[torch.Tensor], object]],
    baseline_name: str,
    x: torch.Tensor,
    warmup: int,
    rounds: int,
    batch: int,
) -> tuple[dict[str, float], list[float]]:
    """Each variant's rate as a ratio to the baseline's, timed interleaved with it in a phase of its own, so
    one variant's allocator and weight-cache state (bf16 keeps bf16 weight copies) does not tax another's.
    Returns the ratios and each phase's baseline rate (images/s)."""
    rate: dict[str, float] = {}
    baseline_rates: list[float] = []
    for name, fn in variants.items():
        if name == baseline_name:
            continue
        pair = {baseline_name: variants[baseline_name], name: fn}
        for f in pair.values():
            for _ in range(warmup):
                f(x)
        seconds = {n: 0.0 for n in pair}
        for _ in range(rounds):
            for n, f in pair.items():
                start = time.perf_counter()
                f(x)
                seconds[n] += time.perf_counter() - start
        base_rate = rounds * batch / seconds[baseline_name]
        baseline_rates.append(base_rate)
        rate[name] = rounds * batch / seconds[name] / base_rate  # ratio to its own phase
    return rate, baseline_rates


def _map_count(methods: tuple[str, ...]) -> int:
    return 1 + len(methods) * len(BLOCKS)  # CAM, and each method at each block


def build_variants(
    base: torch.nn.Module,
    device: torch.device,
    args: argparse.Namespace,
    synced: Callable[[Callable[[torch.Tensor], object]], Callable[[torch.Tensor], object]],
    strict_fp32: Callable[[Callable[[torch.Tensor], object]], Callable[[torch.Tensor], object]],
) -> tuple[dict[str, Callable[[torch.Tensor], object]], Explainer, Explainer | None, Explainer | None]:
    """The timed variants (the plain forward first), and the fp32, bf16 and fp16 Explainers among them."""
    plain = copy.deepcopy(base)
    variants: dict[str, Callable[[torch.Tensor], object]] = {}

    def plain_forward(inp: torch.Tensor) -> object:
        with torch.no_grad():
            return plain(inp)

    variants["plain forward, fp32 (baseline)"] = synced(plain_forward)
    k = int(base.classifier.out_features)
    targets = "all" if k > 1 else None  # every output in one forward and one backward
    fp32 = Explainer(copy.deepcopy(base), precision="fp32", targets=targets)
    variants["Explainer, all methods, fp32" + (f", {k} targets in one pass" if k > 1 else "")] = synced(fp32)
    every = Explainer(copy.deepcopy(base), precision="fp32", targets=targets, methods=method_names())
    variants[f"Explainer, every method with Eigen-CAM ({_map_count(method_names())} maps), fp32"] = synced(every)
    if k > 1:  # what a loop over the targets would cost: one Explainer pass per target
        singles = [Explainer(copy.deepcopy(base), precision="fp32", targets=[t]) for t in range(k)]
        variants[f"Explainer, all methods, fp32, {k} single-target passes"] = synced(
            lambda inp: [single(inp) for single in singles]
        )
    bf16 = fp16 = None
    if not args.skip_bf16:
        bf16 = Explainer(copy.deepcopy(base), precision="bf16", targets=targets)
        variants["Explainer, all methods, bf16"] = synced(bf16)
    if device.type == "cuda":
        fp16 = Explainer(copy.deepcopy(base), precision="fp16", targets=targets)
        variants["Explainer, all methods, fp16"] = synced(fp16)
        variants["Explainer, all methods, fp32 without TF32"] = synced(strict_fp32(fp32))
        contiguous = Explainer(copy.deepcopy(base), precision="fp16", channels_last=False, targets=targets)
        variants["Explainer, all methods, fp16, contiguous layout"] = synced(contiguous)
    if not args.skip_gradcam_lib:
        label = "pytorch-grad-cam, Grad-CAM x 4 blocks" + (f" x {k} targets" if k > 1 else "")
        variants[label] = synced(gradcam_library_runner(copy.deepcopy(base), k))

    return variants, fp32, bf16, fp16


def main() -> None:
    args = build_parser().parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    if args.checkpoint:
        base = load_densenet(args.checkpoint)
    else:
        base = randomise_batchnorm(load_densenet(architecture=args.arch, num_classes=args.targets))
    x = (
        first_images(args.images, args.batch, args.size)
        if args.images
        else torch.randn(args.batch, 3, args.size, args.size)
    )
    x_cpu, x = x, x.to(device)
    base = base.to(device)

    def synced(fn: Callable[[torch.Tensor], object]) -> Callable[[torch.Tensor], object]:
        """Timing must wait for the GPU's queue to drain."""
        if device.type != "cuda":
            return fn

        def run(inp: torch.Tensor) -> object:
            out = fn(inp)
            torch.cuda.synchronize()
            return out

        return run

    def strict_fp32(fn: Callable[[torch.Tensor], object]) -> Callable[[torch.Tensor], object]:
        """cuDNN runs fp32 convolutions as TF32 by default (10-bit mantissa); this turns that off."""

        def run(inp: torch.Tensor) -> object:
            with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
                return fn(inp)

        return run

    variants, fp32, bf16, fp16 = build_variants(base, device, args, synced, strict_fp32)
    baseline_name = "plain forward, fp32 (baseline)"
    rate, baseline_rates = interleaved_ratios(variants, baseline_name, x, args.warmup, args.rounds, args.batch)

    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(
        f"machine: {describe_cpu()}{gpu}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, native bf16: {'yes' if native_bf16(device) else 'no (emulated)'}; "
        f"input {args.size}x{args.size}, batch {args.batch}, {args.rounds} rounds; "
        f"{'checkpoint ' + args.checkpoint if args.checkpoint else 'random weights, random BatchNorm statistics'}, "
        f"{'images from ' + args.images if args.images else 'Gaussian-noise input'}"
    )
    print()
    print("| variant | images/s | ratio to plain forward (same phase) |")
    print("|---|---:|---:|")
    print(f"| {baseline_name} | {sum(baseline_rates) / len(baseline_rates):.2f} | 1.00x |")
    for name, ratio in rate.items():
        phase_base = baseline_rates[list(rate).index(name)]
        print(f"| {name} | {ratio * phase_base:.2f} | {ratio:.2f}x |")
    ours = next(name for name in rate if name.startswith("Explainer, all methods, fp32") and "single" not in name)
    lib = next((name for name in rate if name.startswith("pytorch-grad-cam")), None)
    if lib is not None:
        print(
            f"\nExplainer fp32 vs pytorch-grad-cam: {rate[ours] / rate[lib]:.1f}x "
            "(ratio of the two ratios to the plain forward)"
        )
    singles = next((name for name in rate if "single-target passes" in name), None)
    if singles is not None:
        print(f"all targets in one pass vs one pass per target: {rate[ours] / rate[singles]:.1f}x")
    reference = strict_fp32(fp32)(x) if device.type == "cuda" else fp32(x)
    columns: dict[str, dict[str, np.ndarray]] = {}
    if bf16 is not None:
        columns["bf16 vs fp32"] = map_correlations(reference, bf16(x))
    if fp16 is not None:
        columns["fp16 vs fp32"] = map_correlations(reference, fp16(x))
    if device.type == "cuda":
        columns["TF32 (CUDA default) vs fp32"] = map_correlations(reference, fp32(x))
        cpu = Explainer(copy.deepcopy(base).cpu(), precision="fp32")(x_cpu)
        columns["CUDA fp32 vs CPU fp32"] = map_correlations(cpu, reference)
    columns["fp32, input +-0.5 grey level"] = map_correlations(reference, fp32(half_grey_level_jitter(x)))
    print_agreement(columns)


if __name__ == "__main__":
    main()
