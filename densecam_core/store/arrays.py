"""A run's Zarr arrays: their codecs, opening them with damage named, and keeping them open in a writing process."""

from __future__ import annotations

import functools
import threading
import warnings

import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from densecam_core import fileio
from densecam_core.store import layout

COMPRESSORS = (ZstdCodec(level=1), Crc32cCodec())
"""zstd, then a CRC-32C of the compressed chunk: a flipped bit is an error when read, never different maps.
Level 1: float maps compress as well as at level 3 in far less encoding time (docs/PERFORMANCE.md)."""


def consolidate(url: str) -> None:
    """Consolidated metadata (driver only, after creating or growing arrays); zarr warns that it is not
    in the v3 specification yet, which readers that ignore it tolerate: they read each zarr.json."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(url)


def open_array(group: zarr.Group, name: str) -> zarr.Array:
    try:
        node = group[name]
    except KeyError:
        raise layout.StoreError(
            f"array {name!r} is missing from {group.store}: the run's heatmaps.zarr is damaged; delete the run "
            "folder to explain it anew"
        ) from None
    if not isinstance(node, zarr.Array):
        raise layout.StoreError(
            f"{name!r} in {group.store} is a group, not an array: the run's heatmaps.zarr is damaged"
        )
    return node


class RunArrays:
    """One run's Zarr arrays as a process opened them: reused from shard to shard (opening ~25 arrays
    is a metadata read each), reopened when a shard needs rows they did not hold (the driver grew them)."""

    def __init__(self, run_url: str) -> None:
        self.zarr_url = fileio.url_join(run_url, layout.ZARR_DIR)
        self.arrays: dict[str, zarr.Array] = {}
        self._lock = threading.Lock()

    def covering(self, names: list[str], rows: int) -> dict[str, zarr.Array]:
        with self._lock:
            stale = [n for n in names if n not in self.arrays or self.arrays[n].shape[0] < rows]
            if stale:
                group = zarr.open_group(store=self.zarr_url, mode="r+", zarr_format=3, use_consolidated=False)
                self.arrays.update({name: open_array(group, name) for name in stale})
            return {name: self.arrays[name] for name in names}


@functools.lru_cache(maxsize=4)
def open_run_arrays(run_url: str, created: str) -> RunArrays:
    """The few runs this process writes to, keyed by URL and creation time (a run deleted and created
    again at the same URL is a different run, whose arrays must be opened anew)."""
    return RunArrays(run_url)
