"""A run of DICOM sources explained for real (the seeded-init model, no Ray), shared by the export tests and
benchmarks/export.py."""

from __future__ import annotations

from pathlib import Path

from densecam_core import load_densenet169, read_manifest
from densecam_core.data.pseudonyms import load_identifiers
from densecam_core.model.checkpoint import model_fingerprint, state_dict_bytes
from densecam_core.store.writer import RunSpec, RunWriter
from densecam_core.vocabulary import block_grid
from jobs.explain.settings import ExplainSettings
from jobs.explain.worker import ExplainWorker
from jobs.runtime.skeleton import shard_work

SIZE = 64


def explain(
    sources: Path | str,
    store: Path,
    key: str | None,
    methods: tuple[str, ...] = ("gradcam",),
    *,
    pacs_cache: Path | None = None,
) -> str:
    """Explain every image of the DICOM folder (or DICOMweb query) ``sources`` into ``store`` (pseudonyms under
    ``key``); the run id."""
    model = load_densenet169(seed=0)
    settings = ExplainSettings(methods=methods, size=SIZE, batch_size=4, input_cache="readwrite")
    identifiers = load_identifiers(key) if key else None
    spec = RunSpec(
        model_fingerprint(model),
        "x.pt",
        settings.run_settings(),
        1,
        1,
        block_grid(SIZE),
        4,
        identifiers.as_json() if identifiers else None,
    )
    manifest = read_manifest(sources, identifiers=identifiers, pacs_cache=pacs_cache)
    writer = RunWriter(str(store), spec)
    writer.create_or_open(manifest.attrs["source"], manifest)
    worker = ExplainWorker(state_dict_bytes(model), settings, warm_up=False, store_url=str(store))
    for shard, rows in shard_work(writer.plan(manifest), 4).todo:
        worker.process_shard(writer.run_url, spec.run_id, shard, 4, rows)
    return spec.run_id
