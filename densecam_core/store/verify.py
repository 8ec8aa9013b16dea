"""Integrity of committed shards: what ``densecam verify`` checks, and how damage is uncommitted.

A committed shard is sound when its index part reads, every array's chunk for it reads (its CRC-32C
matches, for runs written with checksums), and every ``ok`` row has finite values in every array.
Uncommitting a damaged shard removes its index part, so readers stop showing it and the next job
recomputes it (its chunks are rewritten whole).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from densecam_core.store import format as fmt
from densecam_core.store.index_files import uncover
from densecam_core.store.reader import Run


@dataclass(frozen=True)
class Damage:
    run_id: str
    shard: int
    what: str

    def __str__(self) -> str:
        return f"{self.run_id} shard {self.shard}: {self.what}"


def verify_run(run: Run) -> list[Damage]:
    """Every problem of every committed shard of ``run`` (an empty list: the run is sound)."""
    damages: list[Damage] = []
    shard_size = int(run.meta["shard_size"])
    arrays = {}
    for name in run.meta["arrays"]:
        method, _, block = name.partition("/block")
        try:
            arrays[name] = run.array(method, int(block) if block else None)
        except Exception as exc:  # a deleted or unreadable array: every shard is damaged
            damages.append(Damage(run.run_id, -1, f"array {name!r} cannot be opened: {exc}"))
    files = run.index_files()
    frames = []
    for path in files.compacted + list(files.parts.values()):
        try:
            with run._fs.open(path, "rb") as handle:
                frame = pq.read_table(handle, columns=["row", "status", "shard"]).to_pandas()
        except Exception as exc:
            shard = next((s for s, p in files.parts.items() if p == path), -1)
            damages.append(Damage(run.run_id, shard, f"index file {path.rsplit('/', 1)[-1]} unreadable: {exc}"))
            continue
        if path in files.compacted:
            frame = frame[frame["shard"].isin(files.covered)]
        frames.append(frame)
    for shard, frame in pd.concat(frames).groupby("shard") if frames else []:
        shard = int(shard)
        ok_rows = frame.loc[frame["status"] == "ok", "row"].to_numpy(dtype=np.int64) - shard * shard_size
        for name, array in arrays.items():
            start = shard * shard_size
            if array.shape[0] < start + shard_size:
                damages.append(Damage(run.run_id, shard, f"{name}: the array ends at row {array.shape[0]}"))
                continue
            try:
                chunk = array[start : start + shard_size]
            except ValueError as exc:
                damages.append(Damage(run.run_id, shard, f"{name}: corrupt chunk ({exc})"))
                continue
            values = np.asarray(chunk)[ok_rows].reshape(len(ok_rows), -1)
            missing = int((~np.isfinite(values).all(axis=1)).sum())
            if missing:
                damages.append(
                    Damage(
                        run.run_id,
                        shard,
                        f"{name}: {missing} ok rows without finite values (a missing or damaged chunk)",
                    )
                )
    return damages


def uncommit(run: Run, shard: int) -> None:
    """The shard is no longer committed (its part removed, or left out of the compacted index); the next
    job recomputes it."""
    uncover(run._fs, run._root, {shard})
    path = f"{run._root}/{fmt.INDEX_DIR}/{fmt.part_name(shard)}"
    if run._fs.exists(path):
        run._fs.rm(path)
