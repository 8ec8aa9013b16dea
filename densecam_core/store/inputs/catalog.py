"""The input cache's catalog: the identities of many committed segments in one Parquet file.

Why: a process's first cache lookup must know every committed segment's identities. Read one
segment at a time, a 400,000-image cache (6,250 segments of 64) costs each actor thousands of
requests to an object store before its first batch. The catalog holds those identities in one file,
and the segments committed after it are read concurrently.

Protocol (docs/FORMAT.md, "The input cache"):

* A writer (the explanation job's driver when it finishes, ``densecam cache``) writes
  ``catalog-<uuid32>.parquet`` whole (temporary name, then rename), switches it in with one atomic
  write of ``_catalog.json``, then deletes the catalog file the switch replaced.
* A reader reads ``_catalog.json`` and the file it names. If that file has just been replaced and
  deleted, it reads ``_catalog.json`` again. It keeps only rows whose segment is in the folder's
  listing, so a catalog never leads it outside the cache's folder or to a deleted segment.
* The catalog only speeds up the first lookup; the segments hold the data. A damaged catalog is
  reported with a warning naming it, and the segments are read instead. Pages carry CRC checksums,
  and ``InputCache.read`` checks that each row it reads holds the path the catalog gave.
"""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from densecam_core import fileio
from densecam_core.store.layout import (
    CATALOG_JSON,
    CATALOG_NAME,
    CATALOG_SCHEMA,
    IDENTITY_COLUMNS,
    TMP_PREFIX,
    catalog_file_name,
)

READ_THREADS = 16
"""Segments read at once: on an object store each read is a few requests of mostly latency."""
ATTEMPTS = 3
"""Times a reader follows ``_catalog.json`` when the file it names was replaced meanwhile."""


class CatalogWarning(UserWarning):
    """A catalog could not be used; the segments were read instead (slower, same result)."""


class CatalogProblem(ValueError):
    """``_catalog.json`` cannot be read, or names no catalog file of its folder."""


def catalog_pointer(fs: Any, root: str) -> str | None:
    """The catalog file name ``_catalog.json`` names (None: there is no catalog); raises CatalogProblem."""
    pointer = fileio.join(root, CATALOG_JSON)
    try:
        name = fileio.read_json(fs, pointer).get("file")
    except FileNotFoundError:
        return None
    except (ValueError, OSError) as exc:
        raise CatalogProblem(f"{pointer} is damaged ({exc})") from exc
    if not isinstance(name, str) or not CATALOG_NAME.match(name):
        raise CatalogProblem(f"{pointer} names {name!r}, not a catalog file of this folder")
    return name


def read_catalog(fs: Any, root: str, within: str | None = None) -> tuple[str, pa.Table] | None:
    """The current catalog's file name and rows (segment, row and identity columns), or None when there is
    none usable."""
    for _ in range(ATTEMPTS):
        try:
            name = catalog_pointer(fs, root)
        except CatalogProblem as exc:
            _warn(str(exc))
            return None
        if name is None:
            return None
        path = fileio.join(root, name)
        try:
            with fileio.open_regular(fs, path, within=within) as handle:
                table = pq.read_table(handle, page_checksum_verification=True)
        except FileNotFoundError:
            continue  # replaced by a newer catalog since the pointer was read
        except (OSError, pa.ArrowException) as exc:
            _warn(f"{path} is damaged ({exc})")
            return None
        missing = [c for c in CATALOG_SCHEMA.names if c not in table.column_names]
        if missing:
            _warn(f"{path} lacks the columns {missing}")
            return None
        try:
            return name, table.select(CATALOG_SCHEMA.names).cast(CATALOG_SCHEMA)
        except (pa.ArrowException, ValueError) as exc:
            _warn(f"{path} holds columns of other types ({exc})")
            return None
    _warn(f"{fileio.join(root, CATALOG_JSON)} kept naming catalog files that no longer exist")
    return None


def keep_segments(table: pa.Table, names: Iterable[str]) -> pa.Table:
    """Only the rows of segments in ``names`` (those the folder's listing shows)."""
    return table.filter(pc.is_in(table["segment"], value_set=pa.array(sorted(names), pa.string())))


def read_segments(
    fs: Any, root: str, names: list[str], threads: int = READ_THREADS, within: str | None = None
) -> tuple[list[pa.Table], dict[str, str]]:
    """Each named segment's identity columns with its name and row numbers, read ``threads`` at a time;
    and the segments that could not be read (name -> why). Segments deleted since the listing are skipped."""

    def one(name: str) -> pa.Table | str | None:
        try:
            with fileio.open_regular(
                fs, fileio.join(root, name), within=within
            ) as handle:  # one open: read_table(path) opens twice
                table = pq.read_table(handle, columns=IDENTITY_COLUMNS, page_checksum_verification=True)
        except FileNotFoundError:
            return None  # deleted since the listing (densecam verify --repair): not damage, just gone
        except (OSError, pa.ArrowException) as exc:
            return f"unreadable ({exc})"
        return table.add_column(0, "segment", pa.array([name] * table.num_rows, pa.string())).add_column(
            1, "row", pa.array(range(table.num_rows), pa.int32())
        )

    if len(names) <= 1 or threads <= 1:
        results = [one(name) for name in names]
    else:
        with ThreadPoolExecutor(min(threads, len(names)), thread_name_prefix="densecam-catalog") as pool:
            results = list(pool.map(one, names))
    tables = [r for r in results if isinstance(r, pa.Table)]
    return tables, {name: r for name, r in zip(names, results) if isinstance(r, str)}


def write_catalog(fs: Any, root: str, table: pa.Table) -> str:
    """Commit ``table`` as the catalog; returns its file name. The replaced catalog file is deleted."""
    replaced = None
    with contextlib.suppress(CatalogProblem):  # a damaged pointer is overwritten; nothing to delete
        replaced = catalog_pointer(fs, root)
    name = catalog_file_name()
    buffer = io.BytesIO()
    pq.write_table(
        table.select(CATALOG_SCHEMA.names).cast(CATALOG_SCHEMA),
        buffer,
        compression="zstd",
        write_page_checksum=True,
    )
    fileio.write_bytes_atomic(fs, fileio.join(root, name), buffer.getvalue())
    segments = pc.count_distinct(table["segment"]).as_py()
    fileio.write_json_atomic(
        fs, fileio.join(root, CATALOG_JSON), {"file": name, "segments": segments, "rows": table.num_rows}
    )
    if replaced is not None:
        with contextlib.suppress(FileNotFoundError):
            fs.rm(fileio.join(root, replaced))
    return name


LEFTOVER_SECONDS = 3600.0
"""A temporary file or unreferenced catalog this old is a crashed writer's leftover (a segment or
catalog is written in seconds), so the next catalog writer and ``verify --inputs --repair`` delete it."""


def sweep_leftovers(fs: Any, root: str, older_than: float = LEFTOVER_SECONDS) -> list[str]:
    """Delete ``_tmp-*`` files of killed writes and catalog files ``_catalog.json`` does not name, once
    ``older_than`` seconds old (younger ones may belong to a writer at work); returns their names."""
    try:
        current = catalog_pointer(fs, root)
    except CatalogProblem:
        return []  # which catalog is current is unknown: delete none
    removed = []
    now = time.time()
    for info in fs.ls(root, detail=True):
        name = str(info["name"]).rsplit("/", 1)[-1]
        leftover = name.startswith(TMP_PREFIX) or (CATALOG_NAME.match(name) and name != current)
        if leftover and now - _modified(info, now) > older_than:
            with contextlib.suppress(FileNotFoundError):
                fs.rm(fileio.join(root, name))
                removed.append(name)
    return removed


def _modified(info: dict[str, Any], default: float) -> float:
    """A listing entry's modification time as a Unix time (local: mtime; object stores: LastModified)."""
    value: Any = info.get("mtime", info.get("LastModified", info.get("last_modified")))
    if value is None:
        return default  # unknown age: treated as young, never deleted
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    try:
        return float(value)
    except (TypeError, ValueError):
        return default  # unknown age: treated as young, never deleted


def _warn(problem: str) -> None:
    warnings.warn(
        f"input cache catalog: {problem}; reading the segments instead (the next job or `densecam cache` writes a "
        "new catalog)",
        CatalogWarning,
        stacklevel=3,
    )
