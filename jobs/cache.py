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

from densecam_core.images import ImageError, load_model_input
from densecam_core.manifest import ManifestError, read_manifest
from densecam_core.spec import RESIZE_MODES, validate_resize_mode
from densecam_core.store.format import StoreError
from densecam_core.store.inputs import InputCache, identify
from densecam_core.store.writer import ensure_store


def fill_cache(
    manifest: str,
    store: str,
    *,
    size: int = 320,
    resize: str = "stretch",
    image_root: str | None = None,
    threads: int | None = None,
    segment_size: int = 64,
) -> dict[str, int]:
    """Cache every image not cached yet; returns counts (cached now, already cached, unreadable)."""
    if size < 32 or segment_size < 1:
        raise ValueError(f"--size must be >= 32 and --segment-size >= 1, got {size}, {segment_size}")
    validate_resize_mode(resize)
    frame = read_manifest(manifest, image_root=image_root)
    ensure_store(store)
    cache = InputCache(store, size, resize)
    paths = frame["path"].astype(str).tolist()
    counts = {"images": len(paths), "cached_now": 0, "already_cached": 0, "unreadable": 0}
    with ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool:
        for start in range(0, len(paths), segment_size):
            chunk = paths[start : start + segment_size]
            identities = list(pool.map(identify, chunk))
            hits = cache.lookup(identities)
            todo = [i for i in range(len(chunk)) if i not in hits and identities[i] is not None]
            counts["already_cached"] += len(hits)
            counts["unreadable"] += sum(identity is None for identity in identities)

            def load(i: int, chunk: list[str] = chunk) -> object:
                try:
                    return load_model_input(chunk[i], size, resize)
                except ImageError as exc:
                    return exc

            entries = []
            for i, loaded in zip(todo, pool.map(load, todo)):
                if isinstance(loaded, ImageError):
                    counts["unreadable"] += 1
                else:
                    entries.append((identities[i], loaded))
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
    parser.add_argument("--threads", type=int, default=None, help="decode threads (default: every CPU)")
    parser.add_argument("--segment-size", type=int, default=64, help="images per committed cache segment")
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
