"""Runs whose maps are constructed, for the audit's tests: every image's map at every block is a function of
the image (a blob at a known place), written to a real store without a model."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from densecam_core import block_grid, open_store
from densecam_core.store.layout import plan_shards
from densecam_core.store.run import Run
from densecam_core.store.shard import ShardCommit, commit_shard
from densecam_core.store.writer import RunSpec, RunWriter

MapOf = Callable[[int, int, int], np.ndarray]
"""(image number, grid height, grid width) -> that image's (h, w) map."""


def blob(h: int, w: int, y: float, x: float, sigma: float = 0.12) -> np.ndarray:
    """A Gaussian bump centred at fractions (y, x) of the grid, ``sigma`` a fraction of its side."""
    yy, xx = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
    return np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2)).astype(np.float32)


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
    grid = block_grid(size)
    settings = {"methods": ["gradcam"], "size": size, "resize": "stretch", "precision": "fp32", "targets": None}
    spec = RunSpec(fingerprint, "constructed.pt", settings, 1, 1, grid, shard_size)
    n = len(labels)
    manifest = pd.DataFrame(
        {
            "image_id": [f"img{i:05d}.png" for i in range(n)],
            "path": [f"/nowhere/img{i:05d}.png" for i in range(n)],
            "split": "valid",
            "body_part": body_parts or ["WRIST"] * n,
            "patient_id": [f"p{i}" for i in range(n)],
            "study_id": [f"s{i}" for i in range(n)],
            "view": 1,
            "label": labels,
        }
    )
    writer = RunWriter(store, spec)
    writer.create_or_open("constructed", manifest)
    planned = writer.plan(manifest)
    shapes = spec.array_shapes()
    for _, rows in planned.groupby("shard"):
        start = int(rows["row"].min())
        shard = plan_shards(len(rows), shard_size, start)[0]
        numbers = rows["row"].to_numpy()
        arrays: dict[str, np.ndarray] = {}
        for name, shape in shapes.items():
            if name in ("logits", "targets"):
                arrays[name] = np.zeros((len(rows), *shape), np.float32 if name == "logits" else np.int32)
                continue
            h, w = shape[-2:]
            arrays[name] = np.stack([map_of(int(i), h, w)[None] for i in numbers]).astype(np.float32)
        index = rows.copy()
        index["orig_height"], index["orig_width"], index["resize_mode"] = size, size, "stretch"
        p = np.asarray(probs if probs is not None else [0.5] * n)[numbers]
        index["logit"], index["prob"] = np.log(p / (1 - p)), p
        index["status"], index["error"], index["run_id"] = "ok", None, spec.run_id
        commit_shard(ShardCommit(writer.run_url, shard, shard_size, index, None), arrays)
    return open_store(store).run(spec.run_id)
