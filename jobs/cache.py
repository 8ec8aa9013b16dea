"""Filling a store's input cache ahead of the jobs: every manifest image not cached yet (or changed since)
decoded on threads and committed in segments; ``densecam cache`` (``jobs/cli/cache.py``) runs it.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from densecam_core.data.dicom import DEFAULT_DICOM_WINDOW, validate_dicom_window
from densecam_core.data.loader import DEFAULT_READ_TIMEOUT, BatchLoader
from densecam_core.data.manifest import read_manifest
from densecam_core.data.preprocess import ModelInput
from densecam_core.store.inputs.cache import InputCache
from densecam_core.store.inputs.identity import identify_paths
from densecam_core.store.writer import ensure_store
from densecam_core.vocabulary import validate_resize_mode

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
                within=frame.attrs.get("walked_folder"),  # a link out of a walked folder is never read
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
