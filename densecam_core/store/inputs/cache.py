"""The input cache: uint8 model inputs decoded once, reused by every run with the same preprocessing.

Why: regenerating explanations after a model update decodes and resizes the same radiographs again
for every checkpoint, although the model inputs never change; on a GPU node decoding, not the
network, sets the pace (docs/PERFORMANCE.md).

Layout (docs/FORMAT.md): ``inputs/<key>/`` beside ``runs/``, where ``key`` names the preprocessing
(input size, resize mode, ``preprocess.PREPROCESS_VERSION``), so a cache written by another preprocessing
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

import io
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from densecam_core import fileio
from densecam_core.data.dicom import DEFAULT_DICOM_WINDOW, validate_dicom_window
from densecam_core.data.geometry import Geometry
from densecam_core.data.preprocess import PREPROCESS_VERSION, ModelInput
from densecam_core.store.inputs.catalog import (
    READ_THREADS,
    keep_segments,
    read_catalog,
    read_segments,
    sweep_leftovers,
    write_catalog,
)
from densecam_core.store.inputs.identity import (
    CONTENT_PREFIX,
    SourceIdentity,
    identify,
    validate_cache_identity,
)
from densecam_core.store.layout import (
    CACHE_JSON,
    IDENTITY_COLUMNS,
    INPUT_SEGMENT_SCHEMA,
    INPUTS_DIR,
    SEGMENT_NAME,
    StoreError,
    cache_folder_name,
    input_segment_name,
)

REFRESH_SECONDS = 30.0
"""A lookup that misses lists the folder again only when the last listing is this old: a missed image
costs one decode, a listing of a large cache on an object store several requests per shard."""
ROW_GROUP = 16
"""Rows per Parquet row group: a reader that needs a few images of a segment reads only their groups."""


class CacheDamageWarning(UserWarning):
    """A cached input could not be read back as written; the image was decoded again."""


def cache_key(size: int, resize: str, dicom_window: str = DEFAULT_DICOM_WINDOW) -> str:
    """The cache folder of one preprocessing. A DICOM window other than the default adds ``-w<window>``
    (it changes DICOM pixels), so caches written before DICOM support keep their names."""
    window = None if dicom_window == DEFAULT_DICOM_WINDOW else validate_dicom_window(dicom_window)
    return cache_folder_name(size, resize, PREPROCESS_VERSION, window)


@dataclass(frozen=True)
class CacheEntry:
    segment: str  # file path inside the cache's filesystem
    row: int
    identity: SourceIdentity
    orig_height: int
    orig_width: int
    channels: int
    source: str = field(default="", compare=False)  # where it was learnt: the segment (""), or a catalog file


@dataclass(frozen=True)
class _Rows:
    """Identity rows of one read (a catalog, or a batch of segments), kept columnar: an actor of a
    400,000-image cache holds a dict entry per image, not Python objects per column."""

    segment_names: list[str]
    segment_ids: np.ndarray
    rows: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    channels: np.ndarray
    table: pa.Table  # kept for the catalog a driver writes
    source: str  # "" (segments) or the catalog file's name

    @classmethod
    def of(cls, table: pa.Table, source: str = "") -> _Rows:
        table = table.combine_chunks()
        segments = pc.dictionary_encode(table.column("segment")).combine_chunks()
        return cls(
            segments.dictionary.to_pylist(),
            segments.indices.to_numpy(),
            table.column("row").to_numpy(),
            table.column("orig_height").to_numpy(),
            table.column("orig_width").to_numpy(),
            table.column("channels").to_numpy(),
            table,
            source,
        )

    def entry(self, root: str, i: int, identity: SourceIdentity) -> CacheEntry:
        return CacheEntry(
            fileio.join(root, self.segment_names[self.segment_ids[i]]),
            int(self.rows[i]),
            identity,
            int(self.heights[i]),
            int(self.widths[i]),
            int(self.channels[i]),
            self.source,
        )


class InputCache:
    """One preprocessing's cache in one store; remembers the segments it has already read.

    The first lookup reads the catalog (``input_catalog``) and the segments committed after it,
    concurrently; later lookups read only segments committed since."""

    def __init__(
        self,
        store_url: str,
        size: int,
        resize: str,
        dicom_window: str = DEFAULT_DICOM_WINDOW,
        *,
        identity: str = "stat",
        read_threads: int = READ_THREADS,
        refresh_seconds: float = REFRESH_SECONDS,
    ) -> None:
        self.size, self.resize, self.dicom_window = int(size), resize, dicom_window
        self.identity = validate_cache_identity(identity)  # how lookups identify files (CACHE_IDENTITIES)
        self.url = fileio.url_join(store_url, INPUTS_DIR, cache_key(size, resize, dicom_window))
        self.fs, self.root = fileio.filesystem(self.url)
        # a local store's reads stay inside it: a segment linked out of the store is damage, never read
        self.within = fileio.filesystem(store_url)[1] if fileio.protocol(self.fs) == "file" else None
        self.read_threads, self.refresh_seconds = read_threads, refresh_seconds
        self._refreshed: float | None = None  # time.monotonic() of the last listing
        # identity -> read << 32 | row in it: one int object per image instead of a tuple of two
        self._where: dict[tuple[str, int, str], int] = {}
        self._reads: list[_Rows] = []
        self._seen: set[str] = set()  # segment names read
        self._catalogued: set[str] | None = None  # segments the catalog covered, once it has been read
        self._listed: set[str] = set()
        self.damaged: dict[str, str] = {}  # segment name -> why it could not be read

    def exists(self) -> bool:
        return bool(self.fs.exists(fileio.join(self.root, CACHE_JSON)))

    def refresh(self) -> None:
        """Read the identities of segments committed since the last call (never their pixels)."""
        self._refreshed = time.monotonic()
        try:
            listing = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:  # no cache yet (or deleted)
            self._listed = set()
            return
        self._listed = {name for name in (p.rsplit("/", 1)[-1] for p in listing) if SEGMENT_NAME.match(name)}
        if self._catalogued is None:
            found = read_catalog(self.fs, self.root, self.within)
            catalog = keep_segments(found[1], self._listed) if found is not None else None
            self._catalogued = set(catalog.column("segment").unique().to_pylist()) if catalog is not None else set()
            self._add(catalog, found[0] if found is not None else "")
            self._seen |= self._catalogued
        new = sorted(self._listed - self._seen)
        for start in range(0, len(new), 4 * self.read_threads):  # memory stays bounded by a batch's tables
            batch, failed = read_segments(
                self.fs, self.root, new[start : start + 4 * self.read_threads], self.read_threads, self.within
            )
            self._add(pa.concat_tables(batch) if batch else None)
            for name, why in failed.items():
                self._damage(name, f"{why}; the images it held are decoded again")
        self._seen |= set(new)

    def _add(self, table: pa.Table | None, source: str = "") -> None:
        if table is None or table.num_rows == 0:
            return
        read = len(self._reads)
        self._reads.append(_Rows.of(table, source))
        keys = zip(
            table.column("path").to_pylist(),
            table.column("file_size").to_pylist(),
            table.column("file_stamp").to_pylist(),
        )
        self._where.update(zip(keys, range(read << 32, (read << 32) + table.num_rows)))

    def lookup(self, identities: Sequence[SourceIdentity | None]) -> dict[int, CacheEntry]:
        """Positions whose file is unchanged since it was cached -> their entry.

        The folder is listed again only when some image is not known yet and the last listing is
        ``refresh_seconds`` old: on an object store a listing costs a request per 1,000 segments, and
        a shard whose every image is known (the common case once cached) needs none. A segment
        deleted since the listing is found when it is read (``read`` leaves it out)."""
        hits = self._known(identities)
        stale = self._refreshed is None or time.monotonic() - self._refreshed >= self.refresh_seconds
        if stale and len(hits) < sum(identity is not None for identity in identities):
            self.refresh()
            hits = self._known(identities)
        return hits

    def _known(self, identities: Sequence[SourceIdentity | None]) -> dict[int, CacheEntry]:
        hits = {}
        for position, identity in enumerate(identities):
            where = self._where.get((identity.path, identity.size, identity.stamp)) if identity is not None else None
            if where is None or identity is None:
                continue
            entry = self._reads[where >> 32].entry(self.root, where & 0xFFFFFFFF, identity)
            name = entry.segment.rsplit("/", 1)[-1]
            if name in self._listed and name not in self.damaged:  # not deleted when last listed, nor damaged
                hits[position] = entry
        return hits

    def stale_sources(self, threads: int = READ_THREADS) -> tuple[int, list[str]]:
        """(cached inputs known, paths whose file no longer matches its entry: changed, moved or gone),
        each file identified as its entry was (stat or content). Jobs never read such entries; this
        tells how much of the cache a re-run would decode again."""
        self.refresh()
        keys = list(self._where)
        with ThreadPoolExecutor(max(1, threads)) as pool:
            now = list(pool.map(lambda k: identify(k[0], content=k[2].startswith(CONTENT_PREFIX)), keys))
        stale = [k[0] for k, identity in zip(keys, now) if identity is None or (identity.size, identity.stamp) != k[1:]]
        return len(keys), stale

    def write_catalog(self) -> int:
        """Commit a catalog of every segment committed now, unless the current one already covers them;
        returns how many segments the catalog covers."""
        self.refresh()
        catalogued = self._catalogued or set()
        if self._listed and not self._listed <= catalogued:
            # each segment once: two fills at once may each have read a segment the other catalogued
            seen: set[str] = set()
            parts = []
            for read in self._reads:
                names = (set(pc.unique(read.table["segment"]).to_pylist()) & self._listed) - seen
                parts.append(keep_segments(read.table, names))
                seen |= names
            write_catalog(self.fs, self.root, pa.concat_tables(parts))
            catalogued = self._catalogued = set(self._listed)
        sweep_leftovers(self.fs, self.root)
        return len(catalogued)

    def read(self, hits: dict[int, CacheEntry]) -> dict[int, ModelInput]:
        """The cached model inputs of ``hits``, reading only the row groups that hold them.

        A segment that cannot be read whole and right (a page failing its checksum, a row of another
        size or path than its entry) is named in a warning and left out: its images are missing from
        the result, so the caller decodes them again, and this cache never uses it again."""
        out: dict[int, ModelInput] = {}
        by_segment: dict[str, list[int]] = {}
        for position, entry in hits.items():
            by_segment.setdefault(entry.segment, []).append(position)
        for segment, positions in by_segment.items():
            try:
                out.update(self._read_segment(segment, {p: hits[p] for p in positions}))
            except (OSError, pa.ArrowException, StoreError) as exc:
                self._damage(segment.rsplit("/", 1)[-1], f"{exc}; {len(positions)} of its images are decoded again")
        return out

    def _damage(self, name: str, why: str) -> None:
        """Name a damaged segment once, and never use it again in this process."""
        self.damaged[name] = why
        warnings.warn(
            f"input cache segment {fileio.join(self.root, name)} is damaged: {why}. "
            "`densecam verify STORE --inputs --repair` removes it",
            CacheDamageWarning,
            stacklevel=3,
        )

    def _read_segment(self, segment: str, hits: dict[int, CacheEntry]) -> dict[int, ModelInput]:
        groups = sorted({entry.row // ROW_GROUP for entry in hits.values()})
        with fileio.open_regular(self.fs, segment, within=self.within) as handle:
            table = pq.ParquetFile(handle, page_checksum_verification=True).read_row_groups(
                groups, columns=["path", "pixels"]
            )
        first_row = {g: i * ROW_GROUP for i, g in enumerate(groups)}
        pixels, paths = _binary_rows(table.column("pixels")), table.column("path")
        out = {}
        for position, entry in hits.items():
            at = first_row[entry.row // ROW_GROUP] + entry.row % ROW_GROUP
            data = pixels(at)
            shape = (entry.channels, self.size, self.size)
            if data.size != np.prod(shape) or paths[at].as_py() != entry.identity.path:
                learnt = f"the catalog {entry.source}" if entry.source else "its identity columns"
                raise StoreError(
                    f"row {entry.row} holds {data.size} bytes of {paths[at].as_py()!r}, where {learnt} "
                    f"promised {shape} of {entry.identity.path!r}"
                )
            geometry = Geometry(entry.orig_height, entry.orig_width, self.size, self.resize)
            out[position] = ModelInput(data.reshape(shape), geometry)
        return out

    def write(self, entries: Sequence[tuple[SourceIdentity, ModelInput]]) -> str | None:
        """Commit one new segment holding ``entries``; returns its path (None when there is nothing to write)."""
        if not entries:
            return None
        self._write_description()
        columns = {name: [] for name in INPUT_SEGMENT_SCHEMA.names}  # type: dict[str, list]
        for identity, model_input in entries:
            pixels = model_input.pixels
            if pixels.dtype != np.uint8 or pixels.shape[1:] != (self.size, self.size) or pixels.shape[0] not in (1, 3):
                raise ValueError(
                    f"cache inputs must be (1 or 3, {self.size}, {self.size}) uint8, got {pixels.shape} {pixels.dtype}"
                )
            for name, value in zip(
                INPUT_SEGMENT_SCHEMA.names,
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
        table = pa.table(columns, schema=INPUT_SEGMENT_SCHEMA)
        pq.write_table(
            table,
            buffer,
            compression="zstd",
            row_group_size=ROW_GROUP,
            write_page_checksum=True,
            # pixels: no dictionary and no min/max statistics (never useful; with them, small inputs'
            # pages held bytes no checksum covered)
            use_dictionary=IDENTITY_COLUMNS,
            write_statistics=IDENTITY_COLUMNS,
        )
        name = input_segment_name()
        fileio.write_bytes_atomic(self.fs, fileio.join(self.root, name), buffer.getvalue())
        rows = len(entries)  # this process knows its own segment without listing the folder again
        self._add(
            table.select(IDENTITY_COLUMNS)
            .add_column(0, "segment", pa.array([name] * rows, pa.string()))
            .add_column(1, "row", pa.array(range(rows), pa.int32()))
        )
        self._listed.add(name)
        self._seen.add(name)
        return fileio.join(self.root, name)

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
                    "dicom_window": self.dicom_window,
                    "preprocess_version": PREPROCESS_VERSION,
                    "layout": "segment-<uuid>.parquet: path, file_size, file_stamp, orig_height, orig_width, channels, "
                    "pixels ((channels, size, size) uint8, C order)",
                },
            )


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
