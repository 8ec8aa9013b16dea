"""Decode + preprocess throughput of MURA-like PNGs (grey, 8-bit, long side ~512 px) to the model input,
and of DICOM radiographs per transfer syntax against the same pixels as an 8-bit PNG.

    python benchmarks/decode.py                 # 256 images, 320 px, 1 and 2 threads, PIL and torchvision
    python benchmarks/decode.py --images 64     # quick
    python benchmarks/decode.py --dicom         # the NEMA CRs of pydicom-data, one thread (per core)

``--dicom``: the tibia (1760x1760, 10-bit MONOCHROME1) and chest (1955x1841, 15-bit) CRs, each as the
8-bit PNG of its windowed pixels (the baseline), uncompressed DICOM through the lookup-table pipeline,
uncompressed DICOM through pydicom's float pipeline (``apply_modality_lut`` + ``apply_voi_lut``, the
alternative the lookup tables replace), and compressed: RLE, JPEG-LS lossless, JPEG 2000 lossless and
lossy (the compressed copies pydicom-data ships, or encoded here with pydicom's encoders). Every
variant ends in the same 320 px uint8 model input.

Variants, each a full pass over the same files after one untimed warm-up pass (page cache warm):
* ``densecam``: ``preprocess.load_model_input`` (what the job runs: PIL decode, grey kept one channel,
  uint8 resize; normalisation happens on the device)
* ``densecam float``: ``preprocess.load_for_model`` (the previous host path: RGB, float normalisation)
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

from densecam_core.data.preprocess import load_for_model, load_model_input


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


def dicom_variants(folder: str, size: int) -> dict[str, tuple[str, Callable[[str], object]]]:
    """name -> (file, the per-file function), for each NEMA CR and each way of storing it."""
    from copy import deepcopy
    from pathlib import Path

    import data_store  # pydicom-data
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut
    from pydicom.uid import JPEGLSLossless, RLELossless

    from densecam_core.data.decode import read_image
    from densecam_core.data.preprocess import resize_pixels

    nema = Path(data_store.__file__).parent / "data"

    def pydicom_float(path: str) -> object:
        ds = pydicom.dcmread(path)
        values = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds, prefer_lut=False)
        low, high = float(values.min()), float(values.max())
        grey = (values - low) * (255.0 / (high - low))
        if ds.PhotometricInterpretation == "MONOCHROME1":
            grey = 255.0 - grey
        return resize_pixels(np.clip(np.rint(grey), 0, 255).astype(np.uint8), size, "stretch")

    out: dict[str, tuple[str, Callable[[str], object]]] = {}
    job = lambda p: load_model_input(p, size, "stretch")  # noqa: E731
    for base, what in (("RG3", "tibia 1760x1760 10-bit"), ("RG1", "chest 1955x1841 15-bit")):
        png = os.path.join(folder, f"{base}.png")
        Image.fromarray(read_image(str(nema / f"{base}_UNCR.dcm"))).save(png)
        ds = pydicom.dcmread(nema / f"{base}_UNCR.dcm")
        encoded = {}
        for name, syntax, plugin in (("rle", RLELossless, "pydicom"), ("jls", JPEGLSLossless, "pyjpegls")):
            copy = deepcopy(ds)
            try:
                copy.compress(syntax, encoding_plugin=plugin)
            except Exception as exc:  # an encoder not installed: that row is left out, and said
                print(f"({base}: no {name} encoder: {exc})")
                continue
            encoded[name] = os.path.join(folder, f"{base}_{name}.dcm")
            copy.save_as(encoded[name])
        out[f"{what}: 8-bit PNG (baseline)"] = (png, job)
        out[f"{what}: DICOM uncompressed, lookup tables (densecam)"] = (str(nema / f"{base}_UNCR.dcm"), job)
        out[f"{what}: DICOM uncompressed, pydicom float pipeline"] = (str(nema / f"{base}_UNCR.dcm"), pydicom_float)
        if "rle" in encoded:
            out[f"{what}: DICOM RLE lossless"] = (encoded["rle"], job)
        if "jls" in encoded:
            out[f"{what}: DICOM JPEG-LS lossless"] = (encoded["jls"], job)
        out[f"{what}: DICOM JPEG 2000 lossless"] = (str(nema / f"{base}_J2KR.dcm"), job)
        out[f"{what}: DICOM JPEG 2000 lossy"] = (str(nema / f"{base}_J2KI.dcm"), job)
    out["NM 1024x256 16-bit: DICOM JPEG lossless (process 14)"] = (str(nema / "JPEG-LL.dcm"), job)
    return out


def dicom_main(size: int, repeats: int) -> None:
    from machine import describe_cpu

    folder = tempfile.mkdtemp(prefix="densecam-dicom-")
    variants = dicom_variants(folder, size)
    print(f"DICOM decode + grayscale pipeline + resize to {size} px, one thread, on a {describe_cpu()}\n")
    print("| source | images/s per core | ms per image | vs the 8-bit PNG of the same pixels |")
    print("|---|---:|---:|---:|")
    baseline = 0.0
    for name, (path, fn) in variants.items():
        rate_one = rate(fn, [path] * repeats, 1)
        if name.endswith("(baseline)"):
            baseline = rate_one
        ratio = f"{rate_one / baseline:.2f}x" if baseline and "NM" not in name else ""
        print(f"| {name} | {rate_one:.1f} | {1000 / rate_one:.1f} | {ratio} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--dicom", action="store_true", help="the DICOM table instead (see above)")
    parser.add_argument("--repeats", type=int, default=20, help="--dicom: decodes of each file per variant")
    args = parser.parse_args()
    if args.dicom:
        dicom_main(args.size, args.repeats)
        return
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
