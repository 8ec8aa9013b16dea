"""Merge a run's committed index parts into a few large Parquet files (see ``index_files`` for the protocol).

Steps, each safe to interrupt: (1) read what is committed now; (2) write the merged rows, sorted by
row, to new ``compact-<uuid>.parquet`` files (temporary name, then rename: whole files only);
(3) switch: one atomic write of ``_compacted.json`` naming the new files and the shards they cover;
(4) delete the parts and older compacted files the switch made redundant; (5) record the counts in
run.json. Before (3) the old files are authoritative; after it the new ones are. The run lock keeps a
job and a compaction of the same run apart.

On a local store whose filesystem can exchange two folders in one step, (2) and (3) build a whole new
index folder beside ``index/`` and the switch exchanges the two: tools other than densecam, which read
every file of ``index/``, then see the old index or the new, never the parts beside the merged file
that a kill during (4) would leave them.
"""

from __future__ import annotations

import contextlib
import io
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from densecam_core import fileio
from densecam_core.store import layout
from densecam_core.store.index import IndexFiles, read_state
from densecam_core.store.index_reader import IndexReader
from densecam_core.store.layout import COMPACT_NAME, COMPACTED_JSON
from densecam_core.store.lock import RunLock
from densecam_core.store.run import Run
from densecam_core.store.writer import record_counts

ROW_GROUP_ROWS = 65_536
"""Rows per row group: large enough for fast scans, small enough that row-group statistics skip most of
a million-row file for a filter on row, shard or a sorted column."""
FILE_ROWS = 4_000_000


@dataclass(frozen=True)
class Compaction:
    run_id: str
    rows: int
    files_before: int
    files_after: int
    parts_merged: int


def compact_run(
    run: Run, *, row_group_rows: int = ROW_GROUP_ROWS, file_rows: int = FILE_ROWS, stop_after: str | None = None
) -> Compaction:
    """Compact ``run``'s index under its run lock (a job writing the run makes this refuse, and the other way
    round); ``stop_after`` ("write" or "switch", for tests) ends the work early after that step."""
    lock = RunLock(run.url)
    lock.acquire()
    try:
        return compact_locked(run, row_group_rows=row_group_rows, file_rows=file_rows, stop_after=stop_after)
    finally:
        lock.release()


def compact_locked(
    run: Run, *, row_group_rows: int = ROW_GROUP_ROWS, file_rows: int = FILE_ROWS, stop_after: str | None = None
) -> Compaction:
    """Compact a run whose lock the caller holds (the explanation job, when it finishes)."""
    fs, index_dir = run.fs, fileio.join(run.root, layout.INDEX_DIR)
    _sweep_swaps(run)
    files = run.index_files()
    before = files.file_count
    if not files.parts:  # nothing new since the last compaction: finish what an interrupted one left
        _clean(fs, index_dir, read_state(fs, index_dir))
        counts = record_counts(run)
        return Compaction(run.run_id, counts["images"], before, run.index_files().file_count, 0)
    reader = IndexReader(run.run_id, fs, run.root, run.store_url)
    table = reader.tables(files, None, None)  # every committed row, Arrow types as written
    assert table is not None
    table = table.sort_by("row")
    if isinstance(fs, LocalFileSystem):
        swapped = _swap_in(run, table, files, row_group_rows, file_rows, stop_after)
        if swapped is not None:
            return swapped
    new_names = _write_merged(fs, index_dir, table, row_group_rows, file_rows)
    if stop_after == "write":
        return Compaction(run.run_id, table.num_rows, before, before, 0)
    shards = sorted(files.shards)
    fileio.write_json_atomic(
        fs,
        fileio.join(index_dir, COMPACTED_JSON),
        {"files": new_names, "shards": shards, "complete": True, "reopened": []},
    )
    if stop_after == "switch":
        return Compaction(run.run_id, table.num_rows, before, len(new_names), 0)
    _clean(fs, index_dir, {"files": new_names, "shards": shards, "complete": True, "reopened": []})
    record_counts(run)
    return Compaction(run.run_id, table.num_rows, before, len(new_names), len(files.parts))


def _write_merged(fs: Any, folder: str, table: Any, row_group_rows: int, file_rows: int) -> list[str]:
    """The sorted rows as whole ``compact-<uuid>.parquet`` files in ``folder``; their names."""
    names = []
    for start in range(0, max(table.num_rows, 1), file_rows):
        name = layout.compact_file_name()
        buffer = io.BytesIO()
        pq.write_table(table.slice(start, file_rows), buffer, compression="zstd", row_group_size=row_group_rows)
        fileio.write_bytes_atomic(fs, fileio.join(folder, name), buffer.getvalue())
        names.append(name)
    return names


def _swap_in(
    run: Run, table: Any, files: IndexFiles, row_group_rows: int, file_rows: int, stop_after: str | None
) -> Compaction | None:
    """The merged files and their state in a folder beside ``index/``, then the two folders exchanged in one
    step and the old one removed; None where the filesystem cannot exchange folders (nothing changed)."""
    fs, index_dir = run.fs, fileio.join(run.root, layout.INDEX_DIR)
    swap = fileio.join(run.root, f"{layout.INDEX_SWAP_PREFIX}{uuid.uuid4().hex}")
    fs.makedirs(swap)
    names = _write_merged(fs, swap, table, row_group_rows, file_rows)
    state = {"files": names, "shards": sorted(files.shards), "complete": True, "reopened": []}
    fileio.write_json_atomic(fs, fileio.join(swap, COMPACTED_JSON), state)
    if stop_after == "write":
        return Compaction(run.run_id, table.num_rows, files.file_count, files.file_count, 0)
    if not fileio.exchange_folders(swap, index_dir):
        fs.rm(swap, recursive=True)
        return None
    if stop_after == "switch":
        return Compaction(run.run_id, table.num_rows, files.file_count, len(names), 0)
    fs.rm(swap, recursive=True)  # the old index, now under the swap folder's name
    record_counts(run)
    return Compaction(run.run_id, table.num_rows, files.file_count, len(names), len(files.parts))


def _sweep_swaps(run: Run) -> None:
    """Remove the swap folders a killed compaction left (a next index never switched in, or an old one
    switched out): the caller holds the run lock, so no compaction is using them."""
    for path in run.fs.ls(run.root, detail=False):
        if path.rstrip("/").rsplit("/", 1)[-1].startswith(layout.INDEX_SWAP_PREFIX):
            run.fs.rm(path, recursive=True)


def _clean(fs: Any, index_dir: str, state: dict[str, Any]) -> None:
    """Delete what the switched-in ``state`` made redundant: parts of covered shards, compacted files it does
    not name, and temporary files of writes that crashed (the caller holds the run lock: nothing is writing)."""
    covered = set(state["shards"])
    for path in fs.ls(index_dir, detail=False):
        name = path.rsplit("/", 1)[-1]
        shard = layout.part_shard(name)
        if (
            (shard is not None and shard in covered)
            or (COMPACT_NAME.match(name) and name not in state["files"])
            or name.startswith(layout.TMP_PREFIX)
        ):
            _remove(fs, path)


def _remove(fs: Any, path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path)
