"""Deletion + insertion of all 21 maps at K = 16: the evaluation actor's scorer against a plain reference.

    python benchmarks/evaluate.py                      # 128 px and 320 px, 2 images, CPU
    python benchmarks/evaluate.py --sizes 128 --images 4

The reference is written as a user would: one forward per step, per map and per image, in a Python
loop. It is timed on ``--reference-maps`` of the 21 maps (every map costs it the same 2 * (K+1)
forwards) and its images/s for all 21 maps is extrapolated from that; values are compared on those
maps (equal to 1e-5). The batched side is ``BatchScorer`` (what each evaluation actor runs: shared curve
ends, a BatchNorm-folded channels-last copy, batched no-grad forwards), scoring all 21 maps of every image.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F
from machine import describe_cpu  # benchmarks/machine.py

from densecam_core import Explainer, load_densenet169
from densecam_core.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from densecam_core.evaluation.faithfulness import gaussian_blurred
from densecam_core.evaluation.scorer import BatchScorer, ScoreSettings
from densecam_core.model.precision import native_bf16
from densecam_core.testing import randomise_batchnorm
from densecam_core.vocabulary import BLOCKS, METHODS, MapKey

MEAN = torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1)


def all_maps(explainer: Explainer, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    out = explainer(pixels)
    maps = {MapKey("cam"): out.cam[:, 0]}
    for method in METHODS:
        for block in BLOCKS:
            maps[MapKey(method, block)] = out.maps[method][block][:, 0]
    return maps


def reference_one(
    model: torch.nn.Module, image01: torch.Tensor, saliency: torch.Tensor, steps: int
) -> tuple[float, float]:
    """One image, one map: a loop over steps, one forward each (a plain, obviously correct reference)."""
    height, width = image01.shape[1:]
    up = F.interpolate(saliency[None, None].float(), size=(height, width), mode="bilinear", align_corners=False)
    order = torch.argsort(-up.flatten(), stable=True)
    blurred = gaussian_blurred(image01[None])[0]
    areas = []
    for insertion in (False, True):
        probs = []
        for k in range(steps + 1):
            n = round(k / steps * height * width)
            image = (blurred if insertion else image01).clone().reshape(3, -1)
            image[:, order[:n]] = image01.reshape(3, -1)[:, order[:n]] if insertion else 0.0
            with torch.no_grad():
                batch = (image.reshape(1, 3, height, width) - MEAN.to(image.device)) / STD.to(image.device)
                probs.append(float(torch.sigmoid(model(batch)[0, 0])))
        areas.append(sum((probs[k] + probs[k + 1]) / 2 for k in range(steps)) / steps)
    return areas[0], areas[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="128,320")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument(
        "--batch", type=int, default=None, help="model batch size of the batched version (default: the scorer's)"
    )
    parser.add_argument("--reference-maps", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--no-tf32",
        action="store_true",
        help="CUDA: plain fp32 convolutions on both sides (TF32 rounds differently at batch 1 and batch 64)",
    )
    args = parser.parse_args()
    if args.no_tf32:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    model = randomise_batchnorm(load_densenet169(), seed=1).eval().to(args.device)
    explainer = Explainer(model)
    print(
        f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, native bf16: {native_bf16('cpu')}; "
        f"device {args.device}{' (TF32 off)' if args.no_tf32 else ''}; {args.images} images, K = {args.steps}, "
        "21 maps (CAM + 5 methods x 4 blocks) per image\n"
    )
    print(
        "| input | batched: images/s (21 maps) | plain loop: images/s (21 maps, extrapolated) | speed-up | max |difference| |"
    )
    print("|---:|---:|---:|---:|---:|")
    settings = ScoreSettings(
        metrics=("deletion", "insertion"), steps=args.steps, forward_batch=args.batch, random_baseline=False
    )
    scorer = BatchScorer(model, settings, methods=METHODS)
    for size in (int(s) for s in args.sizes.split(",")):
        torch.manual_seed(size)
        pixels = torch.randint(0, 256, (args.images, 3, size, size), dtype=torch.uint8).to(args.device)
        ids = [f"image{n}" for n in range(args.images)]
        maps = all_maps(explainer, pixels)
        warm = ScoreSettings(metrics=("deletion",), steps=2, forward_batch=args.batch, random_baseline=False)
        BatchScorer(model, warm, methods=()).score(pixels[:1], {MapKey("cam"): maps[MapKey("cam")][:1]}, ids[:1])
        _sync(args.device)
        start = time.perf_counter()
        rows = scorer.score(pixels, maps, ids)
        _sync(args.device)
        batched = args.images / (time.perf_counter() - start)
        values = rows.set_index(["method", "block", "metric", "image_id"])["value"]
        names = list(maps)[: args.reference_maps]
        start = time.perf_counter()
        worst = 0.0
        for method, block in names:
            for b in range(args.images):
                deletion, insertion = reference_one(
                    model, pixels[b].float() / 255, maps[MapKey(method, block)][b], args.steps
                )
                worst = max(
                    worst,
                    abs(deletion - values[(method, block, "deletion_auc", ids[b])]),
                    abs(insertion - values[(method, block, "insertion_auc", ids[b])]),
                )
        per_map = (time.perf_counter() - start) / (len(names) * args.images)
        plain = 1.0 / (per_map * len(maps))
        print(f"| {size} px | {batched:.3f} | {plain:.4f} | {batched / plain:.1f}x | {worst:.1e} |", flush=True)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


if __name__ == "__main__":
    print(f"machine: {describe_cpu()}")  # the CPU kind every figure is read against
    main()
