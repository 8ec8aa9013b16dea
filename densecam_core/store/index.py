"""Which files hold a run's committed index: per-shard parts, and the compacted files that replace them.

Why compaction: a million-image run at 64-image shards has 15,625 parts, and every notebook open
would pay a request for each. Compaction merges committed parts into a few large Parquet files
(sorted by row, row groups sized for pushdown) and switches them in with one atomic write of
``index/_compacted.json``, which lists the compacted files and the shards they cover:

* before the switch, the parts are authoritative (a crash leaves only unreferenced files);
* after it, the compacted files hold the covered shards, and parts of covered shards are ignored
  until compaction deletes them;
* a covered shard that a later job recomputes (``--force``, ``--redo-errors``) is dropped from
  ``shards`` once its new part is committed (the driver rewrites _compacted.json, holding the run
  lock), so until then readers keep its old rows, and after it they read the new part and filter the
  compacted rows of it out; a recompute killed half-way leaves every shard either old or new.
  (``verify --repair`` drops a damaged shard at once: its old rows are what is damaged.)

A reader therefore sees every committed row exactly once, whatever moment it opens.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from densecam_core import fileio
from densecam_core.data.rows import SOURCE_ERROR
from densecam_core.store import layout
from densecam_core.store.layout import COMPACT_NAME, COMPACTED_JSON


@dataclass(frozen=True)
class IndexFiles:
    """A consistent view of a run's index: compacted files (rows of ``covered`` shards only) and parts."""

    compacted: list[str] = field(default_factory=list)
    covered: frozenset[int] = frozenset()
    parts: dict[int, str] = field(default_factory=dict)  # shard -> part file, covered shards excluded
    complete: bool = True  # the compacted files hold only covered shards (no shard was reopened since)

    @property
    def shards(self) -> set[int]:
        return set(self.covered) | set(self.parts)

    @property
    def file_count(self) -> int:
        return len(self.compacted) + len(self.parts)


def read_state(fs: Any, index_dir: str) -> dict[str, Any]:
    """_compacted.json, or an empty state (a run never compacted, or from before compaction existed).

    A state that is not what compaction writes (not JSON, files that are not ``compact-<uuid>.parquet``
    names, shards that are not non-negative integers) is a ``StoreError`` naming the file and the fix:
    it is never guessed at, since it decides which rows are committed."""
    path = fileio.join(index_dir, COMPACTED_JSON)
    try:
        state = fileio.read_json(fs, path)
        files, shards = state.get("files", []), state.get("shards", [])
        if not isinstance(files, list) or not all(isinstance(f, str) and COMPACT_NAME.match(f) for f in files):
            raise ValueError(f"'files' must list compact-<uuid>.parquet names, got {str(files)[:80]}")
        if not isinstance(shards, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shards
        ):
            raise ValueError(f"'shards' must list shard numbers, got {str(shards)[:80]}")
        reopened = state.get("reopened", [])
        if not isinstance(reopened, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in reopened
        ):
            raise ValueError(f"'reopened' must list shard numbers, got {str(reopened)[:80]}")
    except FileNotFoundError:
        return {"files": [], "shards": [], "complete": True, "reopened": []}
    except (ValueError, UnicodeDecodeError, AttributeError) as exc:
        raise layout.StoreError(
            f"{path} is damaged ({exc}): run `densecam verify STORE --repair`, which rebuilds it from the "
            "compacted files that read (the shards no file holds are then recomputed by the next job)"
        ) from None
    return {
        "files": list(files),
        "shards": list(shards),
        "complete": bool(state.get("complete", False)),
        "reopened": list(reopened),
    }


def held_by_compacted(state: dict[str, Any]) -> set[int]:
    """Shards whose rows a listed compacted file may hold: those it covers, and those reopened since (their
    old rows are still in the file, which other tools read whole)."""
    return set(state["shards"]) | set(state.get("reopened", []))


def list_index(fs: Any, run_root: str) -> IndexFiles:
    """The run's committed index files, as one consistent view.

    The state is read before and after listing the parts: a compaction deletes parts only after it
    switched the state, so an unchanged state means the listing saw every part it does not cover.
    """
    index_dir = fileio.join(run_root, layout.INDEX_DIR)
    if not fs.exists(index_dir):
        return IndexFiles()
    state = read_state(fs, index_dir)
    for _ in range(10):
        covered = frozenset(state["shards"])
        parts: dict[int, str] = {}
        fs.invalidate_cache(index_dir)
        # visible parts first, then pending ones: a pending part is the newer (a recompute of a shard whose
        # old rows a compacted file holds, and whose visible part, if any, predates the compaction)
        for path in sorted(fs.ls(index_dir, detail=False), reverse=True):
            shard = layout.part_shard(path.rsplit("/", 1)[-1])
            if shard is not None and shard not in covered:
                parts[shard] = path
        again = read_state(fs, index_dir)
        if again == state:
            break
        state = again
    compacted = [fileio.join(index_dir, name) for name in state["files"] if COMPACT_NAME.match(name)]
    return IndexFiles(compacted, covered, dict(sorted(parts.items())), bool(state["complete"]))


def uncover(fs: Any, run_root: str, shards: set[int]) -> None:
    """Drop ``shards`` from the compacted state before they are recomputed (driver, holding the run lock)."""
    index_dir = fileio.join(run_root, layout.INDEX_DIR)
    state = read_state(fs, index_dir)
    if not set(state["shards"]) & shards:
        return
    state["reopened"] = sorted(set(state["reopened"]) | (set(state["shards"]) & shards))
    state["shards"] = sorted(set(state["shards"]) - shards)
    state["complete"] = False  # the compacted files now hold rows of shards they no longer cover
    fileio.write_json_atomic(fs, fileio.join(index_dir, COMPACTED_JSON), state)


def index_table(index: pd.DataFrame, extra_types: dict[str, pa.DataType] | None = None) -> pa.Table:
    """The index DataFrame as Arrow: the documented types for the core columns, and for extra manifest
    columns the type the run recorded when it was created (one schema for every part of a run)."""
    fields = {f.name: f for f in (*layout.INDEX_FIELDS, layout.PROBS_FIELD, *layout.SOURCE_FIELDS)}
    extra_types = extra_types or {}
    missing = [c for c in layout.CORE_INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise ValueError(f"index rows lack columns {missing}")
    columns, names = [], []
    for name in index.columns:
        values = index[name]
        if name in fields:
            columns.append(_core_column(values, fields[name].type))
        elif name in extra_types:
            columns.append(cast_extra(name, values, extra_types[name]))
        else:
            columns.append(pa.Array.from_pandas(values))
        names.append(name)
    return pa.Table.from_arrays(columns, names=names)


def _core_column(values: pd.Series, kind: pa.DataType) -> pa.Array:
    """A core column in its documented type, missing values (None, NaN, NA) as nulls: converted by Arrow
    directly where it can (far cheaper than going through Python objects, docs/PERFORMANCE.md), else value by value."""
    try:
        return pa.Array.from_pandas(values, type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return pa.array(values.astype(object).where(values.notna(), None).tolist(), type=kind)


def cast_extra(name: str, values: pd.Series, target: pa.DataType) -> pa.Array:
    array = pa.Array.from_pandas(values)
    if array.type == target or array.type == pa.null():
        return array.cast(target)
    try:
        return array.cast(target)  # safe cast: 3.0 -> 3 passes, 3.5 -> 3 is refused
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise layout.StoreError(
            f"manifest column {name!r} was {target} when this run was created and is now {array.type} with values "
            f"that do not fit ({exc}); rename the column, fix its values, or write a new run (another `store`)"
        ) from None


def recorded_extra_types(aliases: Mapping[str, str]) -> dict[str, pa.DataType]:
    """The extra columns' types a run recorded at creation (``RunRecord.index_extra_types``; types that carry no
    constraint left out)."""
    out = {}
    for name, alias in aliases.items():
        try:
            kind = pa.type_for_alias(alias)
        except ValueError:
            continue
        if kind != pa.null():
            out[name] = kind
    return out


def extra_index_types(manifest: pd.DataFrame) -> dict[str, pa.DataType]:
    """Arrow types of a manifest's extra columns (not core index columns), as an index part would hold them."""
    left_out = {*layout.CORE_INDEX_COLUMNS, SOURCE_ERROR}  # a source's reason becomes the row's error
    return {str(c): pa.Array.from_pandas(manifest[c]).type for c in manifest.columns if c not in left_out}


def write_parquet_atomic(fs: Any, path: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    fileio.write_bytes_atomic(fs, path, buffer.getvalue())
