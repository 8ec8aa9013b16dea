"""Runs whose maps are constructed, for the audit's tests: every image's map at every block is a function of
the image (a blob at a known place), written to a real store without a model."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from densecam_core import block_grid, open_store
from densecam_core.store.layout import plan_shards
from densecam_core.store.record import RunSettings
from densecam_core.store.run import Run
from densecam_core.store.shard import ShardCommit, commit_shard
from densecam_core.store.writer import RunSpec, RunWriter

MapOf = Callable[[int, int, int], np.ndarray]
"""(image number, grid height, grid width) -> that image's (h, w) map."""


def blob(h: int, w: int, y: float, x: float, sigma: float = 0.12) -> np.ndarray:
    """A Gaussian bump centred at fractions (y, x) of the grid, ``sigma`` a fraction of its side."""
    yy, xx = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
    return np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2)).astype(np.float32)


def bumps_near(where: np.ndarray, h: int, w: int, sigma: float = 0.08) -> np.ndarray:
    """(n, h, w) Gaussian bumps centred at fractions ``where`` (n, 2: y, x) of the grid."""
    yy, xx = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
    cy, cx = where[:, 0, None, None], where[:, 1, None, None]
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2)).astype(np.float32)


def write_constructed_run(
    store: str,
    labels: list[int] | np.ndarray,
    arrays_for: Callable[[np.ndarray, dict[str, tuple[int, ...]]], dict[str, np.ndarray]],
    *,
    size: int,
    fingerprint: str,
    probs: np.ndarray,
    body_parts: list[str] | np.ndarray,
    shard_size: int,
    studies: np.ndarray | None = None,
) -> Run:
    """A committed run (cam and gradcam at every block) whose arrays for the rows of each shard are
    ``arrays_for(rows, shapes)`` (map arrays only; logits and targets are filled here)."""
    grid = block_grid(size)
    spec = RunSpec(fingerprint, "constructed.pt", RunSettings(("gradcam",), size), 1, 1, grid, shard_size)
    n = len(labels)
    digits = max(5, len(str(n)))
    manifest = pd.DataFrame(
        {
            "image_id": [f"img{i:0{digits}d}.png" for i in range(n)],
            "path": [f"/nowhere/img{i:0{digits}d}.png" for i in range(n)],
            "split": "valid",
            "body_part": body_parts,
            "patient_id": [f"p{i}" for i in range(n)],
            "study_id": [f"s{i}" for i in (range(n) if studies is None else studies)],
            "view": 1,
            "label": labels,
        }
    )
    writer = RunWriter(store, spec)
    writer.create_or_open("constructed", manifest)
    shapes = spec.array_shapes()
    maps = {name: shape for name, shape in shapes.items() if name not in ("logits", "targets")}
    for _, rows in writer.plan(manifest).groupby("shard"):
        numbers = rows["row"].to_numpy()
        arrays = {"logits": np.zeros((len(rows), 1), np.float32), "targets": np.zeros((len(rows), 1), np.int32)}
        arrays |= arrays_for(numbers, maps)
        index = rows.copy()
        index["orig_height"], index["orig_width"], index["resize_mode"] = size, size, "stretch"
        index["logit"], index["prob"] = np.log(probs[numbers] / (1 - probs[numbers])), probs[numbers]
        index["status"], index["error"], index["run_id"] = "ok", None, spec.run_id
        shard = plan_shards(len(rows), shard_size, int(numbers.min()))[0]
        commit_shard(ShardCommit(writer.run_url, shard, shard_size, index, None), arrays)
    return open_store(store).run(spec.run_id)


def run_with_maps(
    store: str,
    labels: list[int],
    map_of: MapOf,
    *,
    size: int = 192,
    fingerprint: str = "a" * 64,
    probs: list[float] | None = None,
    body_parts: list[str] | None = None,
    shard_size: int = 16,
) -> Run:
    """A committed run of ``len(labels)`` images whose cam and gradcam maps at every block are ``map_of``."""

    def arrays_for(numbers: np.ndarray, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        return {
            name: np.stack([map_of(int(i), *shape[-2:])[None] for i in numbers]).astype(np.float32)
            for name, shape in shapes.items()
        }

    n = len(labels)
    return write_constructed_run(
        store,
        labels,
        arrays_for,
        size=size,
        fingerprint=fingerprint,
        probs=np.asarray(probs if probs is not None else [0.5] * n, dtype=np.float64),
        body_parts=body_parts or ["WRIST"] * n,
        shard_size=shard_size,
    )
