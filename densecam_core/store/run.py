"""One run of a store: its index (pandas), maps, heatmaps on the source's grid, overlays, metrics and an xarray view."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import zarr

from densecam_core import fileio
from densecam_core.data.geometry import Geometry
from densecam_core.data.sources.locations import is_remote
from densecam_core.store import layout
from densecam_core.store.analyses import Audit, latest_audit, similar_images
from densecam_core.store.confined import zarr_store_for_reading
from densecam_core.store.format1 import format1_dataset
from densecam_core.store.index import IndexFiles, list_index
from densecam_core.store.index_reader import IndexReader
from densecam_core.store.localisations import Localisation, latest_localisation
from densecam_core.store.record import RunRecord, RunSettings
from densecam_core.store.targets import class_names, target_labels, target_position
from densecam_core.vocabulary import BLOCKS, MapKey


class Run:
    """One run: a model fingerprint + settings, its arrays and its committed index."""

    def __init__(self, store_url: str, run_id: str, meta: dict[str, Any]) -> None:
        self.store_url = store_url
        self.run_id = run_id
        self.meta = meta  # run.json as written (fields this version does not know included)
        self.record = RunRecord.parse(meta)
        self.url = fileio.url_join(store_url, layout.RUNS_DIR, run_id)
        self.fs, self.root = fileio.filesystem(self.url)

    def __repr__(self) -> str:
        counts = self.record.counts
        images = f", images={counts['images']} ({counts['ok']} ok)" if counts else ""
        settings = self.settings.recorded()
        return f"Run({self.run_id!r}, fingerprint={self.fingerprint[:12]}…{images}, settings={settings})"

    @property
    def fingerprint(self) -> str:
        return self.record.model_fingerprint

    @property
    def settings(self) -> RunSettings:
        return self.record.settings

    @property
    def methods(self) -> list[str]:
        return list(self.settings.methods)

    def index_files(self) -> IndexFiles:
        """The committed index files: compacted ones (and the shards they cover) and per-shard parts."""
        return list_index(self.fs, self.root)

    def read_index(self, filters: Any = None, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Committed index rows; ``filters`` (a pyarrow expression or DNF list) are pushed down.

        Each index file is opened once (its schema comes from the first file); compacted files are
        read only for the shards they cover, with row-group statistics skipping the rest.
        """
        return IndexReader(self.run_id, self.fs, self.root, self.store_url).read(filters, columns)

    @cached_property
    def index(self) -> pd.DataFrame:
        """All committed rows (cached; ``read_index`` for filtered reads)."""
        return self.read_index()

    @cached_property
    def _by_id(self) -> pd.DataFrame:
        """The index keyed by image_id, built once: per-image lookups stay O(1) in notebook loops."""
        return self.index.set_index("image_id", drop=False)

    def _record(self, image_id: str) -> pd.Series:
        if image_id not in self._by_id.index:
            raise KeyError(f"image id {image_id!r} is not committed in run {self.run_id}")
        return self._by_id.loc[image_id]

    def _rows_for(self, image_ids: Sequence[str] | str | None, rows: Sequence[int] | np.ndarray | None) -> np.ndarray:
        if (image_ids is None) == (rows is None):
            raise ValueError("pass exactly one of image_ids or rows")
        if rows is not None:
            return np.asarray(rows, dtype=np.int64)
        ids = [image_ids] if isinstance(image_ids, str) else list(image_ids or [])
        unknown = [i for i in ids if i not in self._by_id.index]
        if unknown:
            raise KeyError(f"image ids not committed in run {self.run_id}: {unknown[:5]}")
        return self._by_id.loc[ids, "row"].to_numpy(dtype=np.int64)

    def array(self, method: str, block: int | None = None) -> zarr.Array:
        name = layout.array_name(method, block)
        if name not in ("cam", "logits", layout.TARGETS_ARRAY) and method not in self.methods:
            raise ValueError(f"method {method!r} is not in run {self.run_id}; it has cam, {', '.join(self.methods)}")
        store = zarr_store_for_reading(fileio.url_join(self.url, layout.ZARR_DIR), self.store_url)
        return zarr.open_array(store=store, path=name, mode="r", zarr_format=3)

    def maps(
        self,
        method: str,
        block: int | None = 4,
        image_ids: Sequence[str] | str | None = None,
        rows: Sequence[int] | np.ndarray | None = None,
        target: int | str | None = None,
    ) -> np.ndarray:
        """Raw maps ``(n, K, h, w)`` in the order asked, reading only the chunks that hold them; with
        ``target`` (a class name, or a position along the target axis) that target's ``(n, h, w)``.

        Damage is named, never returned as data: a chunk whose checksum fails, or a committed ``ok``
        row whose values are missing (a deleted chunk reads as the NaN fill value), raises a
        ``StoreError`` naming the run, the array and the rows (``densecam verify --repair`` uncommits
        such shards so the next job recomputes them).
        """
        wanted = self._rows_for(image_ids, rows)
        array = self.array(method, None if method in ("cam", "logits") else block)
        if wanted.size == 0:
            return np.empty((0, *array.shape[1:]), dtype=np.float32)
        order = np.argsort(wanted, kind="stable")
        try:
            values = array.get_orthogonal_selection((wanted[order],) + (slice(None),) * (array.ndim - 1))
        except ValueError as exc:  # zarr's crc32c codec: "Stored and computed checksum do not match"
            raise layout.StoreError(
                f"run {self.run_id}: array {array.path!r} is corrupt in the chunks holding rows "
                f"{_ranges(wanted)} ({exc}); run `densecam verify {self.store_url} --repair`, then the job again"
            ) from None
        out = np.empty_like(values)
        out[order] = values
        self._check_ok_rows_finite(array.path, wanted, out)
        return out if target is None else out[:, target_position(self.record, target)]

    def read_maps(
        self, key: MapKey, image_ids: Sequence[str] | str | None = None, rows: Sequence[int] | np.ndarray | None = None
    ) -> np.ndarray:
        """One map per image asked, ``(n, h, w)``: ``key``'s method and block at its target position."""
        return self.maps(key.method, key.block, image_ids=image_ids, rows=rows, target=key.target)

    @cached_property
    def _ok_rows(self) -> np.ndarray:
        return np.sort(self.index.loc[self.index["status"] == "ok", "row"].to_numpy(dtype=np.int64))

    def _check_ok_rows_finite(self, name: str, rows: np.ndarray, values: np.ndarray) -> None:
        is_ok = np.isin(rows, self._ok_rows)
        if not is_ok.any():
            return
        bad = is_ok & ~np.isfinite(values.reshape(len(rows), -1)).all(axis=1)
        if bad.any():
            raise layout.StoreError(
                f"run {self.run_id}: array {name!r} has no values for committed ok rows {_ranges(rows[bad])} "
                f"(a missing or damaged chunk); run `densecam verify {self.store_url} --repair`, then the job again"
            )

    def geometry(self, image_id: str) -> Geometry:
        record = self._record(image_id)
        if record["status"] != "ok":
            raise ValueError(f"image {image_id!r} has no maps: {record['error']}")
        return Geometry(
            int(record["orig_height"]),
            int(record["orig_width"]),
            self.settings.size,
            str(record["resize_mode"]),
        )

    def heatmap(
        self,
        image_id: str,
        method: str = "gradcam",
        block: int | None = 4,
        *,
        target: int | str = 0,
        normalise: bool = True,
        **former: bool,
    ) -> np.ndarray:
        """A map resampled (bilinear) onto the original image's pixel grid, resize mode undone exactly, scaled to
        [0, 1] unless ``normalise=False``; ``target``: a class name, or a position along the target axis."""
        normalise = _former_normalise(former, normalise)
        raw = self.maps(method, block, image_ids=[image_id], target=target)[0]
        mapped = self.geometry(image_id).to_original(raw)
        if normalise:
            low, high = float(np.nanmin(mapped)), float(np.nanmax(mapped))
            mapped = (mapped - low) / (high - low) if high > low else np.zeros_like(mapped)
        return mapped

    def overlay(
        self,
        image_id: str,
        method: str = "gradcam",
        block: int | None = 4,
        *,
        target: int | str = 0,
        alpha: float = 0.45,
        colormap: str = "jet",
        allow_remote: bool = False,
    ) -> np.ndarray:
        """The radiograph with the normalised heatmap blended on top, as an (H, W, 3) uint8 image.

        The radiograph is read from the index's ``path``; a URL there (``http://``, ``s3://``...) is
        only fetched with ``allow_remote=True``: a store's data never sends the reader elsewhere unasked.
        """
        from densecam_core.data.overlay import blend

        image = self.image(image_id, allow_remote=allow_remote)
        return blend(image, self.heatmap(image_id, method, block, target=target, normalise=True), alpha, colormap)

    def image(self, image_id: str, *, allow_remote: bool = False) -> np.ndarray:
        """The 8-bit image the model input was made from (``read_image`` with this run's DICOM window):
        uint8, (H, W) grey or (H, W, 3) colour, on the grid ``heatmap`` maps onto."""
        from densecam_core.data.decode import read_image

        path = self.source_path(image_id, allow_remote=allow_remote)
        return read_image(path, dicom_window=self.settings.dicom_window)

    def source_path(self, image_id: str, *, allow_remote: bool = False) -> str:
        """The image file an index row names; URLs only with ``allow_remote=True``."""
        path = str(self._record(image_id)["path"])
        if is_remote(path) and not allow_remote:
            raise layout.StoreError(
                f"image {image_id!r} lives at {path!r}, outside this machine; pass allow_remote=True to fetch it"
            )
        return path

    def metrics(self, filters: Any = None) -> pd.DataFrame:
        """The run's committed quality scores, long form (``densecam evaluate``; docs/METRICS.md)."""
        from densecam_core.store.scores import read_metrics

        return read_metrics(self.url, filters)

    @property
    def class_names(self) -> list[str] | None:
        """The classifier's outputs by name, when the run was given them (``labels``)."""
        return class_names(self.record)

    @property
    def format_version(self) -> int:
        return self.record.format_version

    def targets(
        self, image_ids: Sequence[str] | str | None = None, rows: Sequence[int] | np.ndarray | None = None
    ) -> np.ndarray:
        """The class ids each map explains, ``(n, K)`` int (-1 where a row has no maps)."""
        if self.format_version >= 2:
            return self.maps(layout.TARGETS_ARRAY, image_ids=image_ids, rows=rows).astype(np.int64)
        if self.settings.targets is None and self.record.num_classes == 1:
            count = len(self._rows_for(image_ids, rows))
            return np.zeros((count, 1), dtype=np.int64)  # one output, one target: class 0
        raise layout.StoreError(f"run {self.run_id} is format 1, which did not record the explained class ids")

    def to_xarray(
        self,
        methods: Sequence[str] | None = None,
        blocks: Sequence[int] = BLOCKS,
        image_ids: Sequence[str] | None = None,
    ) -> Any:
        """A lazy xarray Dataset of the committed ``ok`` images: nothing is read until values are asked for.

        Variables ``logits`` (image, class), ``targets`` (image, target), ``cam`` and
        ``<method>_block<b>`` (image, target, y_b<b>, x_b<b>); the index columns are coordinates along
        ``image``. Each is a view of the store's own Zarr groups (``xarray.open_zarr``), so a selection
        reads only the chunks it needs.
        """
        import xarray as xr

        index = self.index[self.index["status"] == "ok"]
        if image_ids is not None:
            index = index.set_index("image_id").loc[list(image_ids)].reset_index()
        rows = index["row"].to_numpy()
        if self.format_version < 2:
            return format1_dataset(self, xr, index, rows, methods, blocks)
        url = zarr_store_for_reading(fileio.url_join(self.url, layout.ZARR_DIR), self.store_url)
        options: dict[str, Any] = {"chunks": None, "mask_and_scale": False, "zarr_format": 3}
        parts = [xr.open_zarr(url, **options)[["logits", layout.TARGETS_ARRAY, "cam"]]]
        for method in methods or self.methods:
            if method not in self.methods:
                raise ValueError(f"method {method!r} is not in run {self.run_id}; it has {', '.join(self.methods)}")
            group = xr.open_zarr(url, group=method, **options)
            parts.append(
                group[[f"block{b}" for b in blocks]].rename({f"block{b}": f"{method}_block{b}" for b in blocks})
            )
        dataset = xr.merge(parts, compat="override", join="override").isel(image=rows)
        coords: dict[str, Any] = {"image": index["image_id"].to_numpy()}
        for column in index.columns:
            if column != "image_id":
                coords[column] = ("image", index[column].to_numpy())
        labels = target_labels(self.record)
        if labels is not None:  # a class name (or id) per target position: ds.sel(target="Effusion")
            coords["target"] = labels
        dataset = dataset.assign_coords(coords)
        dataset.attrs = {"run_id": self.run_id, "model_fingerprint": self.fingerprint, "format_version": 2}
        return dataset

    def audit(self) -> Audit:
        """The latest audit of this run (``densecam audit``): ``.images``, ``.clusters``, ``.confirmations``,
        ``.atlases`` (DataFrames), ``.mean_map(cluster)``."""
        return latest_audit(self)

    def localisation(self) -> Localisation:
        """The newest weak-label scores of this run (``densecam localise``): metrics per map, per size band, per
        image."""
        return latest_localisation(self)

    def similar(self, image_id: str, method: str = "gradcam", block: int | None = 4, k: int = 10, target: int = 0):
        """The ``k`` images whose maps are most like ``image_id``'s (a DataFrame: ``image_id``, ``similarity``):
        exact cosine similarity of the normalised maps (pooled to at most 16x16) the latest audit keeps."""
        key = MapKey.of(method, block, target)
        return similar_images(*latest_audit(self, key).vectors(key), image_id, k)


def _ranges(rows: np.ndarray) -> str:
    """Rows as compact ranges, e.g. '0-63, 128-130' (at most 5 ranges shown)."""
    values = np.unique(np.asarray(rows, dtype=np.int64))
    if values.size == 0:
        return "none"
    breaks = np.flatnonzero(np.diff(values) > 1)
    starts = np.concatenate([[values[0]], values[breaks + 1]])
    stops = np.concatenate([values[breaks], [values[-1]]])
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in zip(starts, stops)]
    return ", ".join(parts[:5]) + (f", … ({len(parts)} ranges)" if len(parts) > 5 else "")


def _former_normalise(former: dict[str, bool], normalise: bool) -> bool:
    """``normalize=``, the keyword's spelling before the house's one spelling, still works (with a warning)."""
    unknown = set(former) - {"normalize"}
    if unknown:
        raise TypeError(f"heatmap() got unexpected keyword arguments {sorted(unknown)}")
    if "normalize" in former:
        warnings.warn("`normalize` is now spelt `normalise`", DeprecationWarning, stacklevel=3)
        return bool(former["normalize"])
    return normalise
