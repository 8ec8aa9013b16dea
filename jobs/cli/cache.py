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
from dataclasses import dataclass

from densecam_core.data.dicom import DEFAULT_DICOM_WINDOW, DICOM_WINDOWS
from densecam_core.data.errors import ManifestError
from densecam_core.data.loader import DEFAULT_READ_TIMEOUT
from densecam_core.options import option
from densecam_core.store.inputs.identity import CACHE_IDENTITIES
from densecam_core.store.layout import StoreError
from densecam_core.vocabulary import RESIZE_MODES
from jobs.cache import fill_cache
from jobs.cli.generated import DefaultsFormatter, add_config_arguments, config_from_args, on_the_command_line


@dataclass(kw_only=True)
class CacheConfig:
    """What to decode and how, as the explanation jobs that will read the cache: one field per flag."""

    manifest: str = option(
        help="MURA-v1.1 folder, its CSVs, or a CSV/Parquet manifest with a 'path' column", positional=True
    )
    store: str = option(help="store path or URL")
    size: int = option(320, help="model input size the explanation jobs will use")
    resize: str = option("stretch", help="how images become square", choices=RESIZE_MODES)
    image_root: str | None = option(None, help="folder relative image paths are resolved against")
    cache_identity: str = option(
        "stat",
        help="stat (path, size, modification time) or content (a digest of the bytes), as the jobs will use",
        choices=CACHE_IDENTITIES,
    )
    dicom_window: str = option(
        DEFAULT_DICOM_WINDOW,
        help="how DICOM sources are windowed: as the explanation jobs that will read the cache",
        choices=DICOM_WINDOWS,
    )
    threads: int | None = option(None, help="decode threads (default: every CPU)")
    segment_size: int = option(64, help="images per committed cache segment")
    max_image_bytes: int | None = option(None, help="larger files are left unread (default 256 MiB)")
    read_timeout: float = option(
        DEFAULT_READ_TIMEOUT, help="seconds one image may take to read and decode before it is left unread"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="densecam cache", description=__doc__, formatter_class=DefaultsFormatter)
    add_config_arguments(parser, CacheConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = config_from_args(CacheConfig, build_parser().parse_args(argv))
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
        print(f"densecam cache: error: {on_the_command_line(exc, CacheConfig)}", file=sys.stderr)
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
