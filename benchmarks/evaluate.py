"""Deletion + insertion of all 21 maps at K = 16: densecam_core.quality (batched) against a plain reference.

    python benchmarks/evaluate.py                      # 128 px and 320 px, 2 images, CPU
    python benchmarks/evaluate.py --sizes 128 --images 4

The reference is written as a user would: one forward per step, per map and per image, in a Python
loop. It is timed on ``--reference-maps`` of the 21 maps (every map costs it the same 2 * (K+1)
forwards) and its images/s for all 21 maps is extrapolated from that; values are compared on those
maps (equal to 1e-5). The batched version scores all 21 maps of every image.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

from densecam_core import Explainer, load_densenet169
from densecam_core.images import IMAGENET_MEAN, IMAGENET_STD
from densecam_core.quality import deletion_insertion, gaussian_blurred
from densecam_core.spec import BLOCKS, METHODS
from densecam_core.testing import randomise_batchnorm

MEAN = torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1)


def all_maps(explainer: Explainer, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    out = explainer(pixels)
    maps = {"cam/4": out.cam[:, 0]}
    for method in METHODS:
        for block in BLOCKS:
            maps[f"{method}/{block}"] = out.maps[method][block][:, 0]
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
    parser.add_argument("--batch", type=int, default=32, help="model batch size of the batched version")
    parser.add_argument("--reference-maps", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    model = randomise_batchnorm(load_densenet169(), seed=1).eval().to(args.device)
    explainer = Explainer(model)
    print(
        f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads; {args.images} images, K = {args.steps}, "
        "21 maps (CAM + 5 methods x 4 blocks) per image\n"
    )
    print(
        "| input | batched: images/s (21 maps) | plain loop: images/s (21 maps, extrapolated) | speed-up | max |difference| |"
    )
    print("|---:|---:|---:|---:|---:|")
    for size in (int(s) for s in args.sizes.split(",")):
        torch.manual_seed(size)
        pixels = torch.randint(0, 256, (args.images, 3, size, size), dtype=torch.uint8).to(args.device)
        maps = all_maps(explainer, pixels)
        deletion_insertion(model, pixels[:1], maps["cam/4"][:1], steps=2, batch_size=args.batch)  # warm-up
        start = time.perf_counter()
        results = {
            name: deletion_insertion(model, pixels, m, steps=args.steps, batch_size=args.batch)
            for name, m in maps.items()
        }
        batched = args.images / (time.perf_counter() - start)
        names = list(maps)[: args.reference_maps]
        start = time.perf_counter()
        worst = 0.0
        for name in names:
            for b in range(args.images):
                deletion, insertion = reference_one(model, pixels[b].float() / 255, maps[name][b], args.steps)
                worst = max(
                    worst,
                    abs(deletion - float(results[name].deletion_auc[b])),
                    abs(insertion - float(results[name].insertion_auc[b])),
                )
        per_map = (time.perf_counter() - start) / (len(names) * args.images)
        plain = 1.0 / (per_map * len(maps))
        print(f"| {size} px | {batched:.3f} | {plain:.4f} | {batched / plain:.1f}x | {worst:.1e} |", flush=True)


if __name__ == "__main__":
    main()
