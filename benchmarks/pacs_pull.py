"""Pulling radiographs from a PACS over DICOMweb (a local Orthanc, Debian's, with its DICOMweb plugin) into the
pseudonymous cache, against reading the same files from a local folder in the same run: images per second at
1, 2, 4 and 8 retrieval threads, and a second pull of the same query (the cache: nothing retrieved).

    python benchmarks/pacs_pull.py --images 120
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO))

from machine import describe_cpu  # noqa: E402 - benchmarks/ on the path first

SOURCES = ("RG3_UNCR.dcm", "RG1_J2KR.dcm", "RG3_J2KI.dcm")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=120, help="instances in the PACS (copies of NEMA CRs)")
    parser.add_argument("--threads", default="1,2,4,8")
    return parser


def seed(folder: Path, count: int) -> list[Path]:
    """``count`` CR instances (uncompressed and JPEG 2000 NEMA radiographs, each with its own UIDs), one study
    per ten images on the days of August 2004."""
    import pydicom
    from pydicom.uid import generate_uid

    from tests.support.pacs_seed import NEMA

    folder.mkdir()
    datasets = [pydicom.dcmread(NEMA / name) for name in SOURCES]
    paths = []
    for number in range(count):
        ds = datasets[number % len(datasets)]
        if number % 10 == 0:
            study = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, study + ".1"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyDate = f"200408{1 + (number // 10) % 28:02d}"
        paths.append(folder / f"image{number:05d}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def main(argv: list[str] | None = None) -> int:
    from densecam_core import read_manifest
    from densecam_core.data.pseudonyms import create_key
    from densecam_core.data.sources.dicomweb.source import DicomwebSource
    from tests.support.orthanc import running_orthanc

    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        files = seed(root / "files", args.images)
        megabytes = sum(p.stat().st_size for p in files) / 1e6
        print(f"machine: {describe_cpu()}; {args.images} CR instances, {megabytes:.0f} MB (uncompressed and JPEG 2000)")
        os.environ["DENSECAM_PSEUDONYM_KEY"] = str(create_key(root / "key" / "key"))
        with running_orthanc(root / "pacs") as pacs:
            for path in files:
                pacs.upload(path)
            os.environ.update(pacs.env())
            query = pacs.source + "?StudyDate=20040801-20040831&Modality=CR"
            started = time.perf_counter()
            for path in files:  # the baseline: the same bytes read from a local folder (page cache warm)
                path.read_bytes()
            folder = read_manifest(root / "files")
            baseline = args.images / (time.perf_counter() - started)
            assert len(folder) == args.images
            print(f"read from a folder (headers and bytes): {baseline:.0f} images/s (baseline 1.00x)")
            for threads in (int(t) for t in args.threads.split(",")):
                DicomwebSource.threads = threads
                started = time.perf_counter()
                frame = read_manifest(query, pacs_cache=root / f"cache{threads}")
                rate = args.images / (time.perf_counter() - started)
                assert frame.attrs["pacs"]["pulled"] == args.images
                print(
                    f"pull, {threads} threads: {rate:.1f} images/s, {rate * megabytes / args.images:.0f} MB/s ({rate / baseline:.3f}x)"
                )
            started = time.perf_counter()
            again = read_manifest(query, pacs_cache=root / f"cache{threads}")
            seconds = time.perf_counter() - started
            assert again.attrs["pacs"] == {"pulled": 0, "cached": args.images, "failed": 0}
            print(f"second pull of the same query: {seconds:.2f} s, 0 instances retrieved (queries only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
