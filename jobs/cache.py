"""``densecam cache MANIFEST --store STORE --size S --resize R``: fill a store's input cache ahead of time.

Decodes every manifest image whose file is not cached yet (or changed since) and commits the
model inputs in segments of ``--segment-size`` images, with threads on this machine and no GPU, so a
CPU machine can prepare the inputs while the GPUs are busy elsewhere. Explanation jobs with the same
size and resize mode then decode nothing. Safe to interrupt and rerun: committed segments are kept,
unfinished ones are invisible.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from densecam_core.data.dicom import DEFAULT_DICOM_WINDOW, DICOM_WINDOWS, validate_dicom_window
from densecam_core.data.errors import ManifestError
from densecam_core.data.loader import DEFAULT_READ_TIMEOUT, BatchLoader
from densecam_core.data.manifest import read_manifest
from densecam_core.data.preprocess import ModelInput
from densecam_core.store.inputs.cache import InputCache
from densecam_core.store.inputs.identity import CACHE_IDENTITIES, identify_paths
from densecam_core.store.layout import StoreError
from densecam_core.store.writer import ensure_store
from densecam_core.vocabulary import RESIZE_MODES, validate_resize_mode

WINDOW_SEGMENTS = 16
"""Segments whose files are identified (a stat or HEAD each) and looked up together before decoding."""


def fill_cache(
    manifest: str,
    store: str,
    *,
    size: int = 320,
    resize: str = "stretch",
    image_root: str | None = None,
    threads: int | None = None,
    segment_size: int = 64,
    max_bytes: int | None = None,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    dicom_window: str = DEFAULT_DICOM_WINDOW,
    identity: str = "stat",
) -> dict[str, int]:
    """Cache every image not cached yet; returns counts (cached now, already cached, unreadable).

    Decoding goes through the explanation job's loader: the same per-image deadline, size limits and
    reasons, and the next segment decodes while the last one is written."""
    if size < 32 or segment_size < 1:
        raise ValueError(f"--size must be >= 32 and --segment-size >= 1, got {size}, {segment_size}")
    if not read_timeout > 0:
        raise ValueError(f"--read-timeout must be > 0 seconds, got {read_timeout}")
    validate_resize_mode(resize)
    validate_dicom_window(dicom_window)
    frame = read_manifest(manifest, image_root=image_root, dicom_metadata=False)  # pixels only: no identifiers
    ensure_store(store)
    cache = InputCache(store, size, resize, dicom_window, identity=identity)
    paths = frame["path"].astype(str).tolist()
    counts = {"images": len(paths), "cached_now": 0, "already_cached": 0, "unreadable": 0}
    workers = threads or os.cpu_count() or 1
    window = segment_size * WINDOW_SEGMENTS
    with ThreadPoolExecutor(workers, thread_name_prefix="densecam-stat") as stat:
        for start in range(0, len(paths), window):
            part = paths[start : start + window]
            identities = identify_paths(part, workers, stat, content=identity == "content")
            hits = cache.lookup(identities)
            todo = [i for i, identity in enumerate(identities) if identity is not None and i not in hits]
            counts["already_cached"] += len(hits)
            counts["unreadable"] += sum(identity is None for identity in identities)
            loader = BatchLoader(
                [part[i] for i in todo],
                size=size,
                mode=resize,
                batch_size=segment_size,
                num_threads=workers,
                max_bytes=max_bytes,
                read_timeout=read_timeout,
                dicom_window=dicom_window,
            )
            for batch in loader:
                entries = [
                    (identities[todo[r.position]], ModelInput(r.pixels, r.geometry))  # type: ignore[arg-type]
                    for r in batch.ok_records
                ]
                counts["unreadable"] += len(batch.records) - len(entries)
                cache.write(entries)  # type: ignore[arg-type]
                counts["cached_now"] += len(entries)
    counts["catalogued"] = cache.write_catalog()
    return counts


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
