"""``densecam cache MANIFEST --store STORE --size S --resize R``: fill a store's input cache ahead of time.

Decodes every manifest image whose file is not cached yet (or changed since) and commits the
model inputs in segments of ``--segment-size`` images, with threads on this machine and no GPU, so a
CPU machine can prepare the inputs while the GPUs are busy elsewhere. Explanation jobs with the same
size and resize mode then decode nothing. Safe to interrupt and rerun: committed segments are kept,
unfinished ones are invisible.
"""

from __future__ import annotations

import argparse
import sys
import time

from densecam_core.data.dicom import DEFAULT_DICOM_WINDOW, DICOM_WINDOWS
from densecam_core.data.errors import ManifestError
from densecam_core.data.loader import DEFAULT_READ_TIMEOUT
from densecam_core.store.inputs.identity import CACHE_IDENTITIES
from densecam_core.store.layout import StoreError
from densecam_core.vocabulary import RESIZE_MODES
from jobs.cache import fill_cache


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="densecam cache", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("manifest", help="MURA-v1.1 folder, its CSVs, or a CSV/Parquet manifest with a 'path' column")
    parser.add_argument("--store", required=True, help="store path or URL")
    parser.add_argument("--size", type=int, default=320, help="model input size the explanation jobs will use")
    parser.add_argument("--resize", choices=RESIZE_MODES, default="stretch")
    parser.add_argument("--image-root", default=None)
    parser.add_argument(
        "--cache-identity",
        choices=CACHE_IDENTITIES,
        default="stat",
        help="stat (path, size, modification time) or content (a digest of the bytes), as the jobs will use",
    )
    parser.add_argument(
        "--dicom-window",
        choices=DICOM_WINDOWS,
        default=DEFAULT_DICOM_WINDOW,
        help="how DICOM sources are windowed: as the explanation jobs that will read the cache",
    )
    parser.add_argument("--threads", type=int, default=None, help="decode threads (default: every CPU)")
    parser.add_argument("--segment-size", type=int, default=64, help="images per committed cache segment")
    parser.add_argument(
        "--max-image-bytes", type=int, default=None, help="larger files are left unread (default 256 MiB)"
    )
    parser.add_argument(
        "--read-timeout",
        type=float,
        default=DEFAULT_READ_TIMEOUT,
        help="seconds one image may take to read and decode before it is left unread",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        counts = fill_cache(
            args.manifest,
            args.store,
            size=args.size,
            resize=args.resize,
            image_root=args.image_root,
            threads=args.threads,
            segment_size=args.segment_size,
            max_bytes=args.max_image_bytes,
            read_timeout=args.read_timeout,
            dicom_window=args.dicom_window,
            identity=args.cache_identity,
        )
    except (ManifestError, StoreError, ValueError) as exc:
        print(f"densecam cache: error: {exc}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - started
    print(
        f"{counts['images']} images: {counts['cached_now']} cached now, {counts['already_cached']} already cached, "
        f"{counts['unreadable']} unreadable (left to the explanation job's error rows); "
        f"{counts['catalogued']} segments in the catalog; {seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
