"""Runs explained for real (the seeded-init model, no Ray) and checks of what a job left."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from densecam_core import load_densenet169, open_store, read_manifest
from densecam_core.model.checkpoint import model_fingerprint, state_dict_bytes
from densecam_core.store.writer import RunSpec, RunWriter
from densecam_core.vocabulary import block_grid
from jobs.explain.settings import ExplainSettings
from jobs.explain.worker import ExplainWorker
from jobs.runtime.skeleton import shard_work

SIZE = 64
METHODS = ("gradcam",)


def explain_tree(tree: Path, store: Path, *, shards: bool = True) -> str:
    """The seeded-init model (no checkpoint) explains the tree into ``store``, shard size 4; returns the run id."""
    model = load_densenet169()
    settings = ExplainSettings(methods=METHODS, size=SIZE, batch_size=4, input_cache="readwrite")
    spec = RunSpec(model_fingerprint(model), "<random init>", settings.run_settings(), 1, 1, block_grid(SIZE), 4)
    writer = RunWriter(str(store), spec)
    writer.create_or_open("test")
    planned = writer.plan(read_manifest(tree))
    if shards:
        worker = ExplainWorker(state_dict_bytes(model), settings, warm_up=False, store_url=str(store))
        for shard, rows in shard_work(planned, 4).todo:
            worker.process_shard(writer.run_url, spec.run_id, shard, 4, rows)
    return spec.run_id


def assert_every_row_once(store: Path, tree: Path) -> pd.DataFrame:
    run = open_store(str(store)).run("latest")
    index = run.index
    manifest = read_manifest(tree)
    assert sorted(index["image_id"]) == sorted(manifest["image_id"])
    assert index["image_id"].is_unique and index["row"].is_unique
    return index
