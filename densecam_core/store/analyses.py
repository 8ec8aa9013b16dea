"""A run's analyses as files: written whole beside the run (``runs/<id>/analysis/<kind>-<digest>/``), read
back with pandas and zarr. The audit's tables are Parquet (pandas, DuckDB, Spotlight, FiftyOne read them
as they are) and its maps Zarr arrays (xarray reads them). Torch-free; nothing here computes an analysis.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import uuid
from datetime import datetime, timezone
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import zarr
from fsspec.implementations.local import LocalFileSystem

from densecam_core import fileio
from densecam_core.store import layout
from densecam_core.store.confined import zarr_store_for_reading
from densecam_core.vocabulary import MapKey

TABLES = {"images": layout.AUDIT_IMAGES, "clusters": layout.AUDIT_CLUSTERS, "atlases": layout.AUDIT_ATLASES}


def write_audit(
    run_url: str,
    *,
    settings: dict[str, Any],
    tables: dict[str, pd.DataFrame],
    arrays: dict[str, np.ndarray],
    messages: list[str],
) -> str:
    """Write an audit made with ``settings`` (``tables`` keyed images, clusters, atlases); returns its folder."""
    named = {TABLES[key]: frame for key, frame in tables.items()}
    return write_analysis(run_url, layout.AUDIT_KIND, settings=settings, tables=named, arrays=arrays, messages=messages)


def write_analysis(
    run_url: str,
    kind: str,
    *,
    settings: dict[str, Any],
    tables: dict[str, pd.DataFrame],
    arrays: dict[str, np.ndarray] | None = None,
    messages: list[str] | None = None,
) -> str:
    """Write an analysis of ``kind`` made with ``settings`` under its own folder, whole: ``tables`` (file name ->
    frame) as Parquet, ``arrays`` as Zarr, ``<kind>.json`` last. On a local disk it is built under a temporary
    name and renamed into place (a killed analysis leaves nothing that reads as one); on an object store the
    JSON is written last and readers list only folders that have it. Returns the folder."""
    fs, run_root = fileio.filesystem(run_url)
    name = layout.analysis_folder(kind, settings)
    marker = layout.analysis_json(kind)
    parent = fileio.join(run_root, layout.ANALYSIS_DIR)
    final = fileio.join(parent, name)
    local = isinstance(fs, LocalFileSystem)
    building = fileio.join(parent, f"{layout.TMP_PREFIX}{uuid.uuid4().hex}-{name}") if local else final
    try:
        fs.makedirs(building, exist_ok=True)
        if not local:
            with contextlib.suppress(FileNotFoundError):
                fs.rm(fileio.join(final, marker))  # the old analysis stops being one before it is replaced
        for file_name, frame in tables.items():
            buffer = io.BytesIO()
            frame.to_parquet(buffer, index=False)
            fs.pipe_file(fileio.join(building, file_name), buffer.getvalue())
        if arrays is not None:
            where = fileio.url_join(run_url, layout.ANALYSIS_DIR, building.rsplit("/", 1)[-1], layout.AUDIT_ARRAYS)
            _write_arrays(where, arrays)
        meta = {"kind": kind, "settings": settings, "messages": messages or [], "created": _now()}
        fileio.write_json_atomic(fs, fileio.join(building, marker), fileio.strict_json(meta))
        if local:
            _move_into_place(building, final)
    except BaseException:
        if local:
            shutil.rmtree(building, ignore_errors=True)
        raise
    return name


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _move_into_place(building: str, final: str) -> None:
    """``building`` becomes ``final`` in one rename; an older audit of the same settings is swapped out first."""
    if os.path.exists(final):
        if fileio.exchange_folders(building, final):
            shutil.rmtree(building, ignore_errors=True)  # now the old audit
            return
        old = f"{building}-old"
        os.rename(final, old)
        os.rename(building, final)
        shutil.rmtree(old, ignore_errors=True)
        return
    os.rename(building, final)


def _write_arrays(url: str, arrays: dict[str, np.ndarray]) -> None:
    group = zarr.open_group(store=url, mode="w", zarr_format=3)
    for name, values in sorted(arrays.items()):
        kind, label = name.split("/", 1)
        sub = group.require_group(kind)
        array = sub.create_array(
            label,
            shape=values.shape,
            dtype=values.dtype,
            chunks=tuple(max(1, n) for n in values.shape),
            dimension_names=_dimensions(kind, label, values.ndim),
            overwrite=True,
        )
        if values.size:
            array[...] = values


def _dimensions(kind: str, label: str, ndim: int) -> tuple[str, ...]:
    """Names xarray reads: each unique to its map within its group, so maps of other sizes can sit together."""
    rows = {"cluster_mean": "cluster", "atlas_mean": "atlas", "atlas_peaks": "atlas"}.get(kind)
    if kind == "vectors":
        return (f"{label}_target", f"{label}_image", f"{label}_cell")
    return (f"{label}_{rows}", f"{label}_y", f"{label}_x")[-ndim:]


class StoredAnalysis:
    """One analysis folder of a run: its ``settings``, ``messages`` and Parquet tables (``table(file_name)``)."""

    def __init__(self, store_url: str, run_url: str, folder: str, meta: dict[str, Any]) -> None:
        self.store_url, self.folder, self.meta = store_url, folder, meta
        self.url = fileio.url_join(run_url, layout.ANALYSIS_DIR, folder)
        self.fs, self.root = fileio.filesystem(self.url)

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.meta.get("settings", {}))

    @property
    def messages(self) -> list[str]:
        return list(self.meta.get("messages", []))

    def table(self, file_name: str) -> pd.DataFrame:
        """One of the analysis's Parquet tables, by its file name."""
        return read_table(self.store_url, self.fs, fileio.join(self.root, file_name))


class Audit(StoredAnalysis):
    """One stored audit: ``images``, ``clusters``, ``atlases`` and ``confirmations`` (DataFrames), ``messages``,
    ``settings``, and the maps behind them (``mean_map``, ``atlas``, ``vectors``)."""

    def __repr__(self) -> str:
        return f"Audit({self.folder!r}, created={self.meta.get('created')!r}, flagged clusters={int(self.clusters['flagged'].sum())})"

    @cached_property
    def images(self) -> pd.DataFrame:
        return self.table(layout.AUDIT_IMAGES)

    @cached_property
    def clusters(self) -> pd.DataFrame:
        return self.table(layout.AUDIT_CLUSTERS)

    @cached_property
    def atlases(self) -> pd.DataFrame:
        return self.table(layout.AUDIT_ATLASES)

    @cached_property
    def confirmations(self) -> pd.DataFrame:
        """The paste test's results, one row per flagged cluster confirmed (empty until one ran)."""
        if not self.fs.exists(fileio.join(self.root, layout.AUDIT_CONFIRMATIONS)):
            return pd.DataFrame(columns=["method", "block", "target", "group", "cluster", "logit_change"])
        return self.table(layout.AUDIT_CONFIRMATIONS)

    def _array(self, kind: str, label: str) -> Any:
        store = zarr_store_for_reading(fileio.url_join(self.url, layout.AUDIT_ARRAYS), self.store_url)
        return zarr.open_array(store=store, path=f"{kind}/{label}", mode="r", zarr_format=3)

    def mean_map(self, cluster: int | pd.Series) -> np.ndarray:
        """The mean normalised map of a cluster: a row of ``clusters``, or its position there."""
        row = self.clusters.iloc[cluster] if isinstance(cluster, (int, np.integer)) else cluster
        return self._row_array("cluster_mean", row)

    def atlas(self, row: int | pd.Series, *, peaks: bool = False) -> np.ndarray:
        """A group's mean normalised map (or, with ``peaks``, its histogram of peak locations): a row of
        ``atlases``, or its position there."""
        row = self.atlases.iloc[row] if isinstance(row, (int, np.integer)) else row
        return self._row_array("atlas_peaks" if peaks else "atlas_mean", row)

    def _row_array(self, kind: str, row: pd.Series) -> np.ndarray:
        """The ``kind`` array a table row points at: its map's array, at the row's ``array_index``."""
        label = layout.map_label(MapKey(row["method"], int(row["block"])))
        return np.asarray(self._array(kind, label)[int(row["array_index"])])

    def _of_map(self, key: MapKey) -> pd.DataFrame:
        return self.images[(self.images["method"] == key.method) & (self.images["block"] == key.block)]

    def has_map(self, key: MapKey) -> bool:
        """Whether this audit covered ``key`` (its method, block and target position)."""
        return bool((self._of_map(key)["target"] == key.target).any())

    def vectors(self, key: MapKey) -> tuple[pd.Series, np.ndarray]:
        """(image ids, their normalised map vectors (n, d)) of one map and target position."""
        images = self._of_map(key)
        targets = sorted(images["target"].unique())
        ids = images.loc[images["target"] == key.target, "image_id"].reset_index(drop=True)
        return ids, np.asarray(self._array("vectors", layout.map_label(key))[targets.index(key.target)])


def read_table(store_url: str, fs: Any, path: str) -> pd.DataFrame:
    """A Parquet table of an analysis, never through a link that leads out of a local store."""
    within = fileio.filesystem(store_url)[1] if isinstance(fs, LocalFileSystem) else None
    with fileio.open_regular(fs, path, within=within) as handle:
        return pd.read_parquet(handle)


def write_confirmation_part(audit_url: str, cluster: int, table: pd.DataFrame) -> None:
    """One flagged cluster's paste-test pairs, committed whole (the unit a resumed ``--confirm`` skips)."""
    fs, root = fileio.filesystem(fileio.url_join(audit_url, layout.CONFIRM_PARTS_DIR))
    fs.makedirs(root, exist_ok=True)
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    fileio.write_bytes_atomic(fs, fileio.join(root, layout.part_name(cluster)), buffer.getvalue())


def confirmation_parts(audit_url: str) -> dict[int, str]:
    """The committed paste-test parts: cluster ordinal -> path."""
    fs, root = fileio.filesystem(fileio.url_join(audit_url, layout.CONFIRM_PARTS_DIR))
    if not fs.exists(root):
        return {}
    found = {}
    for path in fs.ls(root, detail=False):
        match = layout.PART_NAME.match(path.rsplit("/", 1)[-1])
        if match:
            found[int(match.group(1))] = path
    return found


def settle_confirmation(audit_url: str, settings: dict[str, Any], *, force: bool) -> None:
    """Record the paste test's settings; parts made with other settings are refused, or cleared with ``force``."""
    fs, root = fileio.filesystem(fileio.url_join(audit_url, layout.CONFIRM_PARTS_DIR))
    path = fileio.join(root, layout.CONFIRM_JSON)
    recorded = fileio.read_json(fs, path) if fs.exists(path) else None
    wanted = fileio.strict_json(settings)
    if recorded is not None and recorded != wanted:
        if not force:
            differ = sorted(k for k in wanted if recorded.get(k) != wanted[k])
            raise ValueError(
                f"this audit's paste test ran with other settings ({', '.join(differ)}); pass the same ones to "
                "resume it, or `force` to run it afresh"
            )
        fs.rm(root, recursive=True)
    if force and recorded == wanted:
        fs.rm(root, recursive=True)
    fs.makedirs(root, exist_ok=True)
    fileio.write_json_atomic(fs, path, wanted)


def merge_confirmations(audit_url: str, summary: pd.DataFrame) -> None:
    """Write ``confirmations.parquet``: one row per confirmed cluster (``summary``), whole."""
    fs, root = fileio.filesystem(audit_url)
    buffer = io.BytesIO()
    summary.to_parquet(buffer, index=False)
    fileio.write_bytes_atomic(fs, fileio.join(root, layout.AUDIT_CONFIRMATIONS), buffer.getvalue())


def read_confirmation_pairs(audit_url: str) -> pd.DataFrame:
    """Every committed pair of the paste test, with the cluster ordinal it belongs to."""
    fs = fileio.filesystem(audit_url)[0]
    frames = []
    for cluster, path in sorted(confirmation_parts(audit_url).items()):
        with fs.open(path, "rb") as handle:
            frames.append(pd.read_parquet(handle).assign(confirmation=cluster))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def list_analyses(store_url: str, run_url: str, kind: str) -> list[tuple[str, dict[str, Any]]]:
    """(folder, metadata) of the run's complete analyses of ``kind`` (those whose ``<kind>.json`` exists),
    oldest first; a damaged one is named."""
    fs, run_root = fileio.filesystem(run_url)
    parent = fileio.join(run_root, layout.ANALYSIS_DIR)
    if not fs.exists(parent):
        return []
    within = fileio.filesystem(store_url)[1] if isinstance(fs, LocalFileSystem) else None
    pattern, marker = layout.analysis_pattern(kind), layout.analysis_json(kind)
    found = []
    for path in fs.ls(parent, detail=False):
        folder = path.rstrip("/").rsplit("/", 1)[-1]
        if not pattern.match(folder):
            continue
        try:
            meta = fileio.read_json(fs, fileio.join(path, marker), within=within)
        except FileNotFoundError:
            continue  # being written, or killed while written: not an analysis
        except (OSError, ValueError) as exc:
            raise layout.StoreError(
                f"the {kind} {folder} of {run_url} is damaged ({exc}): run `densecam {kind}` again"
            ) from None
        found.append((folder, meta))
    return sorted(found, key=lambda item: str(item[1].get("created", "")))


def list_audits(store_url: str, run_url: str) -> list[Audit]:
    """The run's complete audits, oldest first."""
    return [
        Audit(store_url, run_url, folder, meta) for folder, meta in list_analyses(store_url, run_url, layout.AUDIT_KIND)
    ]


def latest_audit(run: Any, of_map: MapKey | None = None) -> Audit:
    """The run's newest audit (of ``of_map`` when given); a ``StoreError`` naming the command that makes one when
    there is none."""
    audits = [a for a in list_audits(run.store_url, run.url) if of_map is None or a.has_map(of_map)]
    if audits:
        return audits[-1]
    if of_map is None:
        raise layout.StoreError(f"run {run.run_id} has no audit yet: run `densecam audit STORE --run {run.run_id}`")
    raise layout.StoreError(
        f"run {run.run_id} has no audit of {of_map.method} block {of_map.block} (target {of_map.target}) yet: "
        f"run `densecam audit STORE --run {run.run_id} --methods {of_map.method}`"
    )


def similar_images(ids: pd.Series, vectors: np.ndarray, image_id: str, k: int) -> pd.DataFrame:
    """The ``k`` images whose vectors are nearest ``image_id``'s by cosine similarity (exact), itself excluded."""
    where = np.flatnonzero(ids.to_numpy() == image_id)
    if where.size == 0:
        raise KeyError(f"image {image_id!r} has no map in this audit (an error row, or not in the run)")
    norms = np.linalg.norm(vectors, axis=1)
    query = vectors[where[0]] / max(float(norms[where[0]]), 1e-12)
    similarity = (vectors @ query) / np.maximum(norms, 1e-12)
    similarity[where[0]] = -np.inf
    k = min(k, len(ids) - 1)
    top = np.argpartition(-similarity, k - 1)[:k] if k > 0 else np.array([], dtype=np.int64)
    top = top[np.argsort(-similarity[top], kind="stable")]
    return pd.DataFrame({"image_id": ids.to_numpy()[top], "similarity": similarity[top]})
