"""Merge a run's committed index parts into a few large Parquet files (see ``index_files`` for the protocol).

Steps, each safe to interrupt: (1) read what is committed now; (2) write the merged rows, sorted by
row, to new ``compact-<uuid>.parquet`` files (temporary name, then rename: whole files only);
(3) switch: one atomic write of ``_compacted.json`` naming the new files and the shards they cover;
(4) delete the parts and older compacted files the switch made redundant; (5) record the counts in
run.json. Before (3) the old files are authoritative; after it the new ones are. The run lock keeps a
job and a compaction of the same run apart.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq

from densecam_core import fileio
from densecam_core.store import layout as fmt
from densecam_core.store.index import read_state
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
    fs, index_dir = run.fs, fileio.join(run.root, fmt.INDEX_DIR)
    files = run.index_files()
    before = files.file_count
    if not files.parts:  # nothing new since the last compaction: finish what an interrupted one left
        _clean(fs, index_dir, read_state(fs, index_dir))
        counts = record_counts(run)
        return Compaction(run.run_id, counts["images"], before, run.index_files().file_count, 0)
    table = run._read_tables(files, None, None)  # every committed row, Arrow types as written
    assert table is not None
    table = table.sort_by("row")
    new_names = []
    for start in range(0, max(table.num_rows, 1), file_rows):
        name = fmt.compact_file_name()
        buffer = io.BytesIO()
        pq.write_table(table.slice(start, file_rows), buffer, compression="zstd", row_group_size=row_group_rows)
        fileio.write_bytes_atomic(fs, fileio.join(index_dir, name), buffer.getvalue())
        new_names.append(name)
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


def _clean(fs: Any, index_dir: str, state: dict[str, Any]) -> None:
    """Delete what the switched-in ``state`` made redundant: parts of covered shards, compacted files it does
    not name, and temporary files of writes that crashed (the caller holds the run lock: nothing is writing)."""
    covered = set(state["shards"])
    for path in fs.ls(index_dir, detail=False):
        name = path.rsplit("/", 1)[-1]
        shard = fmt.part_shard(name)
        if (
            (shard is not None and shard in covered)
            or (COMPACT_NAME.match(name) and name not in state["files"])
            or name.startswith(fmt.TMP_PREFIX)
        ):
            _remove(fs, path)


def _remove(fs: Any, path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path)
