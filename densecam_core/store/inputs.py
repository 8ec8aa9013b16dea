"""The input cache: uint8 model inputs decoded once, reused by every run with the same preprocessing.

Why: regenerating explanations after a model update decodes and resizes the same radiographs again
for every checkpoint, although the model inputs never change; on a GPU node decoding, not the
network, sets the pace (docs/PERFORMANCE.md).

Layout (docs/FORMAT.md): ``inputs/<key>/`` beside ``runs/``, where ``key`` names the preprocessing
(input size, resize mode, ``images.PREPROCESS_VERSION``), so a cache written by another preprocessing
is never read. Each writer adds whole *segments*: one Parquet file per explained shard, written
under a temporary name and renamed into place (on an object store: one PUT). A segment is visible
only once complete, two writers never share one, and a crash leaves at most an invisible temporary
file. Each row holds the source's identity (path, byte size, modification stamp), its original
size and its pixels ((C, size, size) uint8, C = 1 for grey sources, 3 for colour).

Why path + size + modification stamp rather than a content hash: checking it costs one ``stat``
(one HEAD request on an object store) per image, while a hash must read every byte of the file,
which on an object store is most of what decoding costs. A file rewritten in place within the
filesystem's timestamp resolution and at the same size would go unnoticed; the stamp is the
nanosecond mtime locally and the ETag (a content digest) on S3.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from densecam_core import fileio
from densecam_core.geometry import Geometry
from densecam_core.images import PREPROCESS_VERSION, ModelInput

INPUTS_DIR = "inputs"
CACHE_JSON = "cache.json"
SEGMENT_NAME = re.compile(r"^segment-[0-9a-f]{32}\.parquet$")
ROW_GROUP = 16
"""Rows per Parquet row group: a reader that needs a few images of a segment reads only their groups."""
SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("file_size", pa.int64()),
        ("file_stamp", pa.string()),
        ("orig_height", pa.int32()),
        ("orig_width", pa.int32()),
        ("channels", pa.int8()),
        ("pixels", pa.binary()),
    ]
)
IDENTITY_COLUMNS = ["path", "file_size", "file_stamp", "orig_height", "orig_width", "channels"]


@dataclass(frozen=True)
class SourceIdentity:
    """What must be unchanged for a cached input to stand for its file."""

    path: str
    size: int
    stamp: str


def cache_key(size: int, resize: str) -> str:
    return f"s{int(size)}-{resize}-p{PREPROCESS_VERSION}"


def identify(path: str) -> SourceIdentity | None:
    """The file's identity now, or None when it is missing, unreadable or not a regular file."""
    try:
        if "://" in path and not path.startswith("file://"):
            fs, inner = fileio.filesystem(path)
            info = fs.info(inner)
            if info.get("type", "file") != "file":
                return None
            stamp = next(
                (
                    str(info[k])
                    for k in ("ETag", "etag", "LastModified", "last_modified", "mtime", "created")
                    if info.get(k) is not None
                ),
                "",
            )
            return SourceIdentity(path, int(info.get("size") or 0), stamp)
        local = path.removeprefix("file://")
        info = os.stat(local)
        if not stat.S_ISREG(info.st_mode) or not os.access(local, os.R_OK):
            return None
        return SourceIdentity(path, int(info.st_size), str(info.st_mtime_ns))
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class CacheEntry:
    segment: str  # file path inside the cache's filesystem
    row: int
    identity: SourceIdentity
    orig_height: int
    orig_width: int
    channels: int


class InputCache:
    """One preprocessing's cache in one store; remembers the segments it has already read."""

    def __init__(self, store_url: str, size: int, resize: str) -> None:
        self.size, self.resize = int(size), resize
        self.url = fileio.url_join(store_url, INPUTS_DIR, cache_key(size, resize))
        self.fs, self.root = fileio.filesystem(self.url)
        self._entries: dict[SourceIdentity, CacheEntry] = {}
        self._seen: set[str] = set()

    def exists(self) -> bool:
        return bool(self.fs.exists(fileio.join(self.root, CACHE_JSON)))

    def refresh(self) -> None:
        """Read the identities of segments committed since the last call (never their pixels)."""
        if not self.fs.exists(self.root):
            return
        for path in sorted(self.fs.ls(self.root, detail=False)):
            if path in self._seen or not SEGMENT_NAME.match(path.rsplit("/", 1)[-1]):
                continue
            table = pq.read_table(path, filesystem=self.fs, columns=IDENTITY_COLUMNS)
            for row, rec in enumerate(table.to_pylist()):
                identity = SourceIdentity(rec["path"], int(rec["file_size"]), rec["file_stamp"])
                self._entries[identity] = CacheEntry(
                    path, row, identity, int(rec["orig_height"]), int(rec["orig_width"]), int(rec["channels"])
                )
            self._seen.add(path)

    def lookup(self, identities: Sequence[SourceIdentity | None]) -> dict[int, CacheEntry]:
        """Positions whose file is unchanged since it was cached -> their entry."""
        self.refresh()
        hits = {}
        for position, identity in enumerate(identities):
            entry = self._entries.get(identity) if identity is not None else None
            if entry is not None:
                hits[position] = entry
        return hits

    def read(self, hits: dict[int, CacheEntry]) -> dict[int, ModelInput]:
        """The cached model inputs of ``hits``, reading only the row groups that hold them."""
        out: dict[int, ModelInput] = {}
        by_segment: dict[str, list[int]] = {}
        for position, entry in hits.items():
            by_segment.setdefault(entry.segment, []).append(position)
        for segment, positions in by_segment.items():
            groups = sorted({hits[p].row // ROW_GROUP for p in positions})
            with self.fs.open(segment, "rb") as handle:
                table = pq.ParquetFile(handle).read_row_groups(groups, columns=["pixels"])
            first_row = {g: i * ROW_GROUP for i, g in enumerate(groups)}
            pixels = _binary_rows(table.column("pixels"))
            for position in positions:
                entry = hits[position]
                data = pixels(first_row[entry.row // ROW_GROUP] + entry.row % ROW_GROUP)
                shape = (entry.channels, self.size, self.size)
                if data.size != np.prod(shape):
                    raise ValueError(
                        f"input cache segment {segment} row {entry.row} holds {data.size} bytes, "
                        f"not {shape}: the cache is damaged; delete {self.url}"
                    )
                geometry = Geometry(entry.orig_height, entry.orig_width, self.size, self.resize)
                out[position] = ModelInput(data.reshape(shape), geometry)
        return out

    def write(self, entries: Sequence[tuple[SourceIdentity, ModelInput]]) -> str | None:
        """Commit one new segment holding ``entries``; returns its path (None when there is nothing to write)."""
        if not entries:
            return None
        self._write_description()
        columns = {name: [] for name in SCHEMA.names}  # type: dict[str, list]
        for identity, model_input in entries:
            pixels = model_input.pixels
            if pixels.dtype != np.uint8 or pixels.shape[1:] != (self.size, self.size) or pixels.shape[0] not in (1, 3):
                raise ValueError(
                    f"cache inputs must be (1 or 3, {self.size}, {self.size}) uint8, got {pixels.shape} {pixels.dtype}"
                )
            for name, value in zip(
                SCHEMA.names,
                (
                    identity.path,
                    identity.size,
                    identity.stamp,
                    model_input.geometry.orig_height,
                    model_input.geometry.orig_width,
                    pixels.shape[0],
                    pixels.tobytes(),
                ),
            ):
                columns[name].append(value)
        buffer = io.BytesIO()
        pq.write_table(pa.table(columns, schema=SCHEMA), buffer, compression="zstd", row_group_size=ROW_GROUP)
        path = fileio.join(self.root, f"segment-{uuid.uuid4().hex}.parquet")
        fileio.write_bytes_atomic(self.fs, path, buffer.getvalue())
        return path

    def _write_description(self) -> None:
        description = fileio.join(self.root, CACHE_JSON)
        if not self.fs.exists(description):
            self.fs.makedirs(self.root, exist_ok=True)
            fileio.write_json_atomic(
                self.fs,
                description,
                {
                    "size": self.size,
                    "resize": self.resize,
                    "preprocess_version": PREPROCESS_VERSION,
                    "layout": "segment-<uuid>.parquet: path, file_size, file_stamp, orig_height, orig_width, channels, "
                    "pixels ((channels, size, size) uint8, C order)",
                },
            )


def _identify_all(paths: Sequence[str]) -> list[SourceIdentity | None]:
    return [identify(path) for path in paths]


def _binary_rows(column: pa.ChunkedArray) -> Callable[[int], np.ndarray]:
    """Row ``i`` of a binary column as a uint8 view of Arrow's buffer: no copy into Python bytes."""
    starts = np.cumsum([0] + [len(chunk) for chunk in column.chunks])

    def row(i: int) -> np.ndarray:
        k = int(np.searchsorted(starts, i, side="right")) - 1
        chunk = column.chunks[k]
        _, offsets, data = chunk.buffers()
        bounds = np.frombuffer(offsets, dtype=np.int32)[chunk.offset + i - starts[k] :][:2]
        return np.frombuffer(data, dtype=np.uint8)[bounds[0] : bounds[1]] if data is not None else np.empty(0, np.uint8)

    return row


def cached_model_inputs(
    cache: InputCache | None,
    paths: Sequence[str],
    *,
    threads: int = 2,
    lock: threading.Lock | None = None,
    executor: Executor | None = None,
) -> tuple[list[SourceIdentity | None], dict[int, ModelInput]]:
    """Each file's identity (taken before decoding) and the inputs ``cache`` holds for unchanged files.

    Identities are taken on ``executor`` (a worker's persistent pool of ``threads``), else on
    ``threads`` new threads (object stores: one request each), in one task per thread: a future per
    file cost more than a local stat. ``lock`` guards the cache's view of committed segments when
    several shards share it.
    """
    if cache is None:
        return [None] * len(paths), {}
    tasks = max(1, min(len(paths), threads))
    with contextlib.ExitStack() as stack:
        pool = executor or stack.enter_context(ThreadPoolExecutor(tasks))
        parts = list(pool.map(_identify_all, [paths[i::tasks] for i in range(tasks)]))
    identities = [parts[i % tasks][i // tasks] for i in range(len(paths))]
    with lock or contextlib.nullcontext():
        hits = cache.lookup(identities)
    return identities, cache.read(hits)
