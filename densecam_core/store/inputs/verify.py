"""Integrity of a store's input caches: what ``densecam verify --inputs`` checks, and how damage is removed.

A segment is sound when every page reads (its CRC-32 matches, for segments written with checksums)
and every row holds a ``(channels, size, size)`` uint8 input with 1 or 3 channels and a positive
original size. A catalog is sound when ``_catalog.json`` names a catalog file that reads.

Why removal is the repair: a cache segment is derived from the source files. Jobs already decode the
images of a damaged segment again (and cache them anew), so deleting it loses nothing and stops every
later job from paying the detour. A damaged catalog is removed the same way; the next job or
``densecam cache`` writes a new one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from densecam_core import fileio
from densecam_core.store.inputs.catalog import CatalogProblem, catalog_pointer
from densecam_core.store.layout import (
    CACHE_FOLDER,
    CACHE_JSON,
    CATALOG_JSON,
    INPUT_SEGMENT_SCHEMA,
    INPUTS_DIR,
    SEGMENT_NAME,
)


@dataclass(frozen=True)
class InputDamage:
    cache: str  # the cache folder's name, e.g. s320-stretch-p1
    file: str  # a segment, the catalog, or "" for the folder itself
    what: str

    def __str__(self) -> str:
        return f"inputs/{self.cache}/{self.file}: {self.what}" if self.file else f"inputs/{self.cache}: {self.what}"


@dataclass(frozen=True)
class CacheReport:
    cache: str
    segments: int
    damages: list[InputDamage]


def verify_input_caches(store_url: str) -> list[CacheReport]:
    """Every input cache folder of the store, each segment and catalog read whole and checked."""
    fs, root = fileio.filesystem(fileio.url_join(store_url, INPUTS_DIR))
    if not fs.exists(root):
        return []
    reports = []
    within = fileio.filesystem(store_url)[1] if fileio.protocol(fs) == "file" else None
    for folder in sorted(p for p in fs.ls(root, detail=False) if fs.isdir(p)):
        name = folder.rsplit("/", 1)[-1]
        size = _input_size(fs, folder, name)
        if size is None:
            reports.append(CacheReport(name, 0, [InputDamage(name, "", "not an input cache folder (no size known)")]))
            continue
        segments = sorted(n for n in _names(fs, folder) if SEGMENT_NAME.match(n))
        paths: dict[str, list[str]] = {}  # sound segment -> the path of each row
        damages = []
        for segment in segments:
            problem = _segment_problem(fs, folder, segment, size, paths, within)
            damages += [InputDamage(name, segment, problem)] if problem else []
        catalog = _catalog_problem(fs, folder, paths)
        damages += [InputDamage(name, CATALOG_JSON, catalog)] if catalog else []
        reports.append(CacheReport(name, len(segments), damages))
    return reports


def remove(store_url: str, damage: InputDamage) -> None:
    """Delete a damaged segment, or a damaged catalog's pointer; jobs decode those images again."""
    fs, folder = fileio.filesystem(fileio.url_join(store_url, INPUTS_DIR, damage.cache))
    if damage.file and (SEGMENT_NAME.match(damage.file) or damage.file == CATALOG_JSON):
        with contextlib.suppress(FileNotFoundError):
            fs.rm(fileio.join(folder, damage.file))


def _names(fs: Any, folder: str) -> Iterator[str]:
    return (p.rsplit("/", 1)[-1] for p in fs.ls(folder, detail=False))


def _input_size(fs: Any, folder: str, name: str) -> int | None:
    """The model input size: cache.json's, else the folder name's (``s<size>-<resize>-p<v>``)."""
    with contextlib.suppress(FileNotFoundError, ValueError, OSError, TypeError):
        return int(fileio.read_json(fs, fileio.join(folder, CACHE_JSON))["size"])
    match = CACHE_FOLDER.match(name)
    return int(match.group(1)) if match else None


def _segment_problem(
    fs: Any, folder: str, name: str, size: int, paths: dict[str, list[str]], within: str | None
) -> str | None:
    """What is wrong with the segment ``name``, or None (its rows' paths then go into ``paths``); a segment
    that leads out of the store (``within``) through a link is named, never read."""
    try:
        with fileio.open_regular(fs, fileio.join(folder, name), within=within) as handle:
            table = pq.read_table(handle, page_checksum_verification=True)
    except (OSError, pa.ArrowException) as exc:
        return f"unreadable ({exc})"
    missing = [c for c in INPUT_SEGMENT_SCHEMA.names if c not in table.column_names]
    if missing:
        return f"lacks the columns {missing}"
    channels = table.column("channels").to_numpy()
    lengths = pc.binary_length(table.column("pixels")).to_numpy(zero_copy_only=False)
    heights, widths = table.column("orig_height").to_numpy(), table.column("orig_width").to_numpy()
    bad = ~np.isin(channels, (1, 3)) | (lengths != channels.astype(np.int64) * size * size)
    bad |= (heights < 1) | (widths < 1)
    if bad.any():
        return f"{int(bad.sum())} of {table.num_rows} rows are not a (1 or 3, {size}, {size}) input (first: row {int(np.argmax(bad))})"
    paths[name] = table.column("path").to_pylist()
    return None


def _catalog_problem(fs: Any, folder: str, paths: dict[str, list[str]]) -> str | None:
    """What is wrong with the current catalog, checking each row against the sound segments' ``paths``."""
    try:
        name = catalog_pointer(fs, folder)
    except CatalogProblem as exc:
        return str(exc)
    if name is None:
        return None
    try:
        with fileio.open_regular(fs, fileio.join(folder, name)) as handle:
            table = pq.read_table(handle, columns=["segment", "row", "path"], page_checksum_verification=True)
    except (OSError, pa.ArrowException) as exc:
        return f"its catalog {name} is unreadable ({exc})"
    for k, (segment, row, path) in enumerate(zip(*(table.column(c).to_pylist() for c in ("segment", "row", "path")))):
        held = paths.get(segment)
        if held is not None and (not 0 <= row < len(held) or held[row] != path):
            return f"its catalog {name} row {k} says {segment} row {row} holds {path!r}, which it does not"
    return None
