"""Zarr arrays of a local store read without following links out of it.

A chunk, an array's ``zarr.json`` or ``heatmaps.zarr`` itself replaced by a symbolic link would make zarr
read bytes from anywhere on the disk as if they were maps. ``ConfinedLocalStore`` resolves each key it
reads and refuses one that leads outside the store; object stores have no links (docs/FORMAT.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from zarr.storage import LocalStore

from densecam_core import fileio
from densecam_core.store import layout


class ConfinedLocalStore(LocalStore):
    """A read-only ``LocalStore`` whose every read stays inside ``store_root`` (the densecam store's folder)."""

    def __init__(self, root: str, *, store_root: str) -> None:
        super().__init__(root, read_only=True)
        self.store_root = store_root

    def _check(self, key: str) -> None:
        path = os.path.join(str(self.root), key)
        outside = fileio.link_outside(path, self.store_root)
        if outside:
            raise layout.StoreError(
                f"{os.path.relpath(path, self.store_root)} in store {self.store_root} leads through a symbolic "
                f"link to {outside}, outside the store: not followed; remove the link, then run `densecam verify`"
            )

    async def get(self, key: str, prototype: Any = None, byte_range: Any = None) -> Any:
        self._check(key)
        return await super().get(key, prototype, byte_range)

    async def get_partial_values(self, prototype: Any, key_ranges: Iterable[tuple[str, Any]]) -> Any:
        key_ranges = list(key_ranges)
        for key, _ in key_ranges:
            self._check(key)
        return await super().get_partial_values(prototype, key_ranges)


def zarr_store_for_reading(zarr_url: str, store_url: str) -> Any:
    """What zarr and xarray open: a confined store on a local disk, else the URL (object stores have no links)."""
    fs, root = fileio.filesystem(zarr_url)
    if fileio.protocol(fs) != "file":
        return zarr_url
    store_root = fileio.filesystem(store_url)[1]
    outside = fileio.link_outside(root, store_root)
    if outside:
        raise layout.StoreError(
            f"{os.path.relpath(root, store_root)} in store {store_root} is a symbolic link to {outside}, "
            "outside the store: not followed; remove the link, then run `densecam verify`"
        )
    return ConfinedLocalStore(root, store_root=store_root)
