"""Exporting a run of DICOM radiographs as Secondary Captures and fractional Segmentations: images/s per core,
against re-writing each source file with pydicom in the same run (the floor cost of reading and writing the
same bytes), and the export's peak memory as the number of images grows.

    python benchmarks/export.py --images 1000 --side 512
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from machine import describe_cpu


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--side", type=int, default=512, help="side of the square synthetic sources, pixels")
    return parser


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    import pydicom
    from support.dicom_runs import explain

    from densecam_core import generate_mura, open_store
    from densecam_core.data.pseudonyms import create_key, load_identifiers
    from densecam_core.export.run_export import ExportRequest, export_run

    args = build_parser().parse_args(argv)
    print(f"machine: {describe_cpu()}; {args.images} sources of {args.side}x{args.side} pixels")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        side = args.side
        generate_mura(root / "mura", images=args.images, seed=0, min_side=side, max_side=side, dicom=True)
        sources = root / "sources"
        sources.mkdir()
        for number, path in enumerate(sorted((root / "mura").rglob("*.dcm"))):
            shutil.move(path, sources / f"image{number:05d}.dcm")
        key = str(create_key(root / "key"))
        run_id = explain(sources, root / "store", key)
        run = open_store(str(root / "store")).run(run_id)
        ok = int((run.index["status"] == "ok").sum())
        started = time.perf_counter()
        for path in sorted(sources.iterdir()):
            pydicom.dcmread(path).save_as(root / "copy.dcm")
        rewrite = time.perf_counter() - started
        identifiers = load_identifiers(key)
        before = peak_mib()  # the explanation's model and run: what the export starts from
        peaks = []
        started = time.perf_counter()
        for part, limit in enumerate((ok // 4, ok)):
            out = root / f"out{part}"
            begin = time.perf_counter()
            export_run(run, out, ExportRequest(limit=limit), identifiers=identifiers)
            peaks.append((limit, time.perf_counter() - begin, peak_mib()))
        exported_seconds = peaks[-1][1]
    print(f"re-writing each source with pydicom: {ok / rewrite:.1f} images/s (baseline 1.00x)")
    print(
        f"export (Secondary Capture + Segmentation): {ok / exported_seconds:.2f} images/s on one core "
        f"({(ok / exported_seconds) / (ok / rewrite):.3f}x the baseline)"
    )
    print(f"  process peak before exporting: {before:.0f} MiB")
    for limit, seconds, peak in peaks:
        print(f"  {limit} images: {seconds:.1f} s, process peak {peak:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
