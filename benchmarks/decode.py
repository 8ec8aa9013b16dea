"""Decode + preprocess throughput of MURA-like PNGs (grey, 8-bit, long side ~512 px) to the model input.

    python benchmarks/decode.py                 # 256 images, 320 px, 1 and 2 threads, PIL and torchvision
    python benchmarks/decode.py --images 64     # quick

Variants, each a full pass over the same files after one untimed warm-up pass (page cache warm):
* ``densecam``: ``images.load_model_input`` (what the job runs: PIL decode, grey kept one channel,
  uint8 resize; normalisation happens on the device)
* ``densecam float``: ``images.load_for_model`` (the previous host path: RGB, float normalisation)
* ``torchvision``: ``torchvision.io.decode_png`` + ``torchvision.transforms.v2.functional.resize``
  with ``antialias=True`` (PIL's bilinear antialiases when it shrinks, as here: the like-for-like
  alternative), and without it (faster, but aliased: not the same model input)
Threads run the same per-image function from a thread pool, as the job's loader does.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from densecam_core.images import load_for_model, load_model_input


def make_pngs(folder: str, count: int, seed: int = 0) -> list[str]:
    """Grey 8-bit PNGs whose long side is ~512 px, with radiograph-like texture (compresses like one)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        h, w = int(rng.integers(440, 513)), int(rng.integers(300, 420))
        if rng.random() < 0.5:
            h, w = w, h
        _yy, xx = np.mgrid[0:h, 0:w]
        bone = 140 * np.exp(-(((xx - w / 2) / (w / 6)) ** 2))
        image = np.clip(30 + bone + rng.normal(0, 12, (h, w)), 0, 255).astype(np.uint8)
        path = os.path.join(folder, f"image{i}.png")
        Image.fromarray(image, mode="L").save(path)
        paths.append(path)
    return paths


def torchvision_load(path: str, size: int, antialias: bool = True) -> object:
    import torch
    from torchvision.io import ImageReadMode, decode_png, read_file
    from torchvision.transforms.v2.functional import resize

    image = decode_png(read_file(path), mode=ImageReadMode.UNCHANGED)
    return resize(image.unsqueeze(0), [size, size], antialias=antialias).to(torch.uint8)


def rate(fn: Callable[[str], object], paths: list[str], threads: int) -> float:
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(fn, paths))  # warm-up
        start = time.perf_counter()
        list(pool.map(fn, paths))
        return len(paths) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="densecam-decode-")
    paths = make_pngs(folder, args.images)
    mean_bytes = np.mean([os.path.getsize(p) for p in paths])
    try:
        import torch

        torch.set_num_threads(1)  # torchvision's resize must not bring its own thread team
    except ImportError:
        pass
    variants: dict[str, Callable[[str], object]] = {
        "densecam (PIL, uint8, grey kept)": lambda p: load_model_input(p, args.size, "stretch"),
        "densecam float (previous host path)": lambda p: load_for_model(p, args.size, "stretch"),
        "torchvision decode_png + resize (antialias, like PIL)": lambda p: torchvision_load(p, args.size),
        "torchvision decode_png + resize (no antialias)": lambda p: torchvision_load(p, args.size, False),
    }
    threads = [int(t) for t in args.threads.split(",")]
    print(
        f"{len(paths)} grey PNGs, long side 440-512 px, mean {mean_bytes / 1024:.0f} KiB, to {args.size} px; "
        f"{os.cpu_count()} CPUs\n"
    )
    print(
        "| decoder | "
        + " | ".join(f"{t} thread{'s' if t > 1 else ''} (images/s)" for t in threads)
        + " | per core at max threads |"
    )
    print("|---|" + "---:|" * (len(threads) + 1))
    for name, fn in variants.items():
        rates = [rate(fn, paths, t) for t in threads]
        per_core = rates[-1] / min(threads[-1], os.cpu_count() or 1)
        print(f"| {name} | " + " | ".join(f"{r:.0f}" for r in rates) + f" | {per_core:.0f} |")


if __name__ == "__main__":
    main()
