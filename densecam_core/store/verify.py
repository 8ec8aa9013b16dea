"""Integrity of committed shards: what ``densecam verify`` checks, and how damage is uncommitted.

A committed shard is sound when its index part reads, every array's chunk for it reads (its CRC-32C
matches, for runs written with checksums), and every ``ok`` row has finite values in every array.
Uncommitting a damaged shard removes its index part, so readers stop showing it and the next job
recomputes it (its chunks are rewritten whole).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from densecam_core import fileio
from densecam_core.store import layout
from densecam_core.store.index import read_state, uncover
from densecam_core.store.layout import COMPACT_NAME, COMPACTED_JSON
from densecam_core.store.run import Run
from densecam_core.vocabulary import MapKey


@dataclass(frozen=True)
class Damage:
    """A problem of a run. ``shard`` >= 0: that shard's data (repair: uncommit it). ``file``: an index file
    or the index state (repair: ``repair_index_files``). Neither: named only, repaired by hand."""

    run_id: str
    shard: int
    what: str
    file: str | None = None

    def __str__(self) -> str:
        where = f"shard {self.shard}" if self.shard >= 0 else (self.file or "run").rsplit("/", 1)[-1]
        return f"{self.run_id} {where}: {self.what}"


def verify_run(run: Run) -> list[Damage]:
    """Every problem of every committed shard of ``run`` (an empty list: the run is sound)."""
    damages: list[Damage] = _links_out(run)
    shard_size = run.record.shard_size
    arrays = {}
    for name, shape in run.record.arrays.items():
        key = None if name in ("logits", layout.TARGETS_ARRAY) else MapKey.from_array_name(name)
        try:
            arrays[name] = run.array(name) if key is None else run.array(key.method, key.block)
        except Exception as exc:  # a deleted or unreadable array: every shard is damaged
            damages.append(Damage(run.run_id, -1, f"array {name!r} cannot be opened: {exc}"))
            continue
        problem = _array_problem(arrays[name], shape, shard_size)
        if problem:
            damages.append(Damage(run.run_id, -1, f"array {name!r}: {problem}"))
            del arrays[name]
    index_dir = fileio.join(run.root, layout.INDEX_DIR)
    try:
        files = run.index_files()
    except layout.StoreError as exc:  # a damaged _compacted.json
        damages.append(Damage(run.run_id, -1, str(exc).split(": run `")[0], fileio.join(index_dir, COMPACTED_JSON)))
        return damages
    frames = []
    for path in files.compacted + list(files.parts.values()):
        name = path.rsplit("/", 1)[-1]
        try:
            frame = _read_index_file(run, path)
        except FileNotFoundError:
            damages.append(Damage(run.run_id, -1, f"listed in {COMPACTED_JSON} but missing", path))
            continue
        except Exception as exc:
            shard = next((s for s, p in files.parts.items() if p == path), -1)
            damages.append(Damage(run.run_id, shard, f"index file {name} unreadable: {exc}", path))
            continue
        if path in files.compacted:
            frame = frame[frame["shard"].isin(files.covered)]
        frames.append(frame)
    for shard, frame in pd.concat(frames).groupby("shard") if frames else []:
        damages += _shard_damage(run, int(shard), frame, arrays, shard_size)
    return damages


def _read_index_file(run: Run, path: str) -> pd.DataFrame:
    with fileio.open_regular(run.fs, path) as handle:  # a FIFO named like a part would block forever
        return pq.read_table(handle, columns=["row", "status", "shard"]).to_pandas()


def _shard_damage(run: Run, shard: int, frame: pd.DataFrame, arrays: dict, shard_size: int) -> list[Damage]:
    """Every array's chunk of the shard reads (checksums) and holds finite values in its ok rows, whatever
    its rows (a shard of missing files has no ok row, and its chunks are still read)."""
    damages = []
    ok_rows = frame.loc[frame["status"] == "ok", "row"].to_numpy(dtype=np.int64) - shard * shard_size
    start = shard * shard_size
    for name, array in arrays.items():
        if array.shape[0] < start + shard_size:
            damages.append(Damage(run.run_id, shard, f"{name}: the array ends at row {array.shape[0]}"))
            continue
        try:
            chunk = np.asarray(array[start : start + shard_size])
        except ValueError as exc:
            damages.append(Damage(run.run_id, shard, f"{name}: corrupt chunk ({exc})"))
            continue
        if not len(ok_rows):
            continue
        values = chunk[ok_rows].reshape(len(ok_rows), -1)
        missing = int((~np.isfinite(values).all(axis=1)).sum())
        if missing:
            damages.append(
                Damage(
                    run.run_id, shard, f"{name}: {missing} ok rows without finite values (a missing or damaged chunk)"
                )
            )
    return damages


def _array_problem(array: Any, shape: tuple[int, ...], shard_size: int) -> str | None:
    """The Zarr metadata against run.json: a zarr.json edited to another dtype would read bit patterns as maps."""
    expected = np.dtype("int32") if array.path.endswith("targets") else np.dtype("float32")
    if np.dtype(array.dtype) != expected:
        return f"data type {array.dtype}, run.json implies {expected} (zarr.json edited or damaged)"
    if list(array.shape[1:]) != list(shape):
        return f"per-image shape {list(array.shape[1:])}, run.json says {list(shape)}"
    if tuple(array.chunks) != (shard_size, *shape):
        return f"chunks {tuple(array.chunks)}, run.json implies {(shard_size, *shape)}"
    codecs = [type(c).__name__ for c in getattr(array.metadata, "codecs", ())]
    if codecs and not any("Crc32c" in name for name in codecs) and not any("Sharding" in name for name in codecs):
        return f"codecs {codecs} lack the crc32c checksum the store writes"
    return None


def _links_out(run: Run) -> list[Damage]:
    """Symbolic links in the run that lead outside the store (local stores): named, never followed."""
    if not isinstance(run.fs, LocalFileSystem):
        return []
    store = fileio.filesystem(run.store_url)[1]
    outside = fileio.link_outside(run.root, store)
    if outside:
        return [Damage(run.run_id, -1, f"the run folder leads through a symbolic link to {outside}, outside the store")]
    return [
        Damage(run.run_id, -1, f"{path} is a symbolic link to {target}, outside the store")
        for path, target in fileio.links_out(run.root)
    ]


def repair_index_files(run: Run, damages: list[Damage]) -> list[str]:
    """Drop damaged or missing compacted files from the index state (rebuilding a damaged state from the
    compacted files that read), so the shards only they held are uncommitted and the next job recomputes
    them; remove damaged parts. Returns what was done, in words."""
    index_dir = fileio.join(run.root, layout.INDEX_DIR)
    files = {d.file for d in damages if d.file}
    done = []
    state_path = fileio.join(index_dir, COMPACTED_JSON)
    if state_path in files:
        candidates = [p.rsplit("/", 1)[-1] for p in run.fs.ls(index_dir, detail=False)]
        state: dict[str, Any] = {
            "files": sorted(n for n in candidates if COMPACT_NAME.match(n)),
            "shards": [],
            "complete": False,
        }
        done.append(f"rebuilt {COMPACTED_JSON} from the compacted files that read")
    else:
        state = read_state(run.fs, index_dir)
    bad = {f.rsplit("/", 1)[-1] for f in files if COMPACT_NAME.match(f.rsplit("/", 1)[-1])}
    kept: list[str] = []
    held: set[int] = set()
    parts = {
        s for n in run.fs.ls(index_dir, detail=False) if (s := layout.part_shard(n.rsplit("/", 1)[-1])) is not None
    }
    for name in state["files"]:
        path = fileio.join(index_dir, name)
        try:
            shards = set(_read_index_file(run, path)["shard"].astype(int)) if name not in bad else None
        except Exception:
            shards = None
        if shards is None:
            done.append(f"dropped {name} from {COMPACTED_JSON}: the shards only it held are recomputed by the next job")
            continue
        kept.append(name)
        held |= shards
    covered = held - parts if state_path in files else set(state["shards"]) & held
    new_state = {"files": kept, "shards": sorted(covered), "complete": False, "reopened": sorted(held - covered)}
    if new_state != state:
        fileio.write_json_atomic(run.fs, state_path, new_state)
    for damage in damages:
        if damage.file and layout.part_shard(damage.file.rsplit("/", 1)[-1]) is not None:
            _remove(run, damage.file)
    return done


def _remove(run: Run, path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        run.fs.rm(path)


def uncommit(run: Run, shard: int) -> None:
    """The shard is no longer committed (its part removed, or left out of the compacted index); the next
    job recomputes it."""
    uncover(run.fs, run.root, {shard})
    for pending in (False, True):
        path = f"{run.root}/{layout.INDEX_DIR}/{layout.part_name(shard, pending)}"
        if run.fs.exists(path):
            run.fs.rm(path)
