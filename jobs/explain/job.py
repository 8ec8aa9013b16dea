"""The explanation job: manifest -> shards -> Ray actors (GPU or CPU) -> heatmap store.

Its command line is ``densecam explain`` (``jobs/cli/explain.py``).

Without a manifest it explains a generated synthetic MURA tree; without --address (or RAY_ADDRESS)
it starts a local Ray on this machine. The runtime (``jobs/runtime``) sizes the actors and runs the
driver loop; this module prepares a job (every check that bad input can fail, before any work),
launches its actors and summarises it.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa

from densecam_core.cam.explainer import Explainer
from densecam_core.data.folders import skipped_summary
from densecam_core.data.manifest import read_manifest
from densecam_core.data.pseudonyms import Identifiers, in_clear, load_identifiers
from densecam_core.data.sources.locations import is_url
from densecam_core.model.checkpoint import load_densenet, model_fingerprint, state_dict_bytes
from densecam_core.model.precision import SlowPrecisionWarning
from densecam_core.store.compact import compact_locked
from densecam_core.store.inputs.cache import InputCache
from densecam_core.store.layout import Shard, StoreError
from densecam_core.store.writer import RunSpec, RunWriter, ensure_store
from densecam_core.vocabulary import block_grid, validate_methods, validate_resize_mode
from jobs.explain.classes import resolve_classes
from jobs.explain.config import ExplainConfig, batch_size_for, decode_processes_for
from jobs.explain.settings import ExplainSettings
from jobs.explain.worker import ExplainWorker
from jobs.runtime.contract import ShardResult
from jobs.runtime.dispatch import DispatchCounters, JobState, make_actor_class
from jobs.runtime.resources import Resources
from jobs.runtime.skeleton import Hook, Launch, RunSummary, ShardPlan, run_shard_job, shard_work

__all__ = ["ExplainConfig", "ExplainSummary", "JobState", "PreparedExplain", "prepare", "run_explain"]


@dataclass(frozen=True)
class PreparedExplain:
    """A job whose inputs all passed their checks: nothing has been written yet."""

    config: ExplainConfig
    manifest: pd.DataFrame
    manifest_source: str
    model: Any  # torch.nn.Module
    settings: ExplainSettings
    spec: RunSpec


@dataclass(kw_only=True)
class ExplainSummary(RunSummary):
    """What the driver loop counted, and what the explanation job as a whole knows."""

    images_total: int
    new_run: bool

    @property
    def images_per_second(self) -> float:
        return self.images_done / self.explained_seconds if self.explained_seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        return {**super().as_json(), "images_per_second": self.images_per_second}

    def render(self) -> str:
        lines = [
            f"run id           {self.run_id}",
            f"store            {self.store}",
            f"images           {self.images_done} explained now ({self.ok} ok, {self.errors} error rows); "
            f"{self.images_total} in the manifest",
            self.inputs_line(),
            f"shards           {self.shards_done} written, {self.shards_skipped} already committed (skipped), "
            f"{self.shards_retried} retried, {len(self.shards_failed)} failed {self.shards_failed or ''}",
            f"actors replaced  {self.actors_replaced}",
            f"throughput       {self.images_per_second:.2f} images/s over {self.explained_seconds:.1f} s of dispatch "
            f"({self.seconds:.1f} s wall; before it, Ray and {self.actor_startup_seconds:.1f} s until the first actor had its "
            f"model ready; after it, {self.actor_shutdown_seconds:.1f} s to stop the actors)",
        ]
        if self.stage_seconds:
            lines.append(
                "actor time       " + ", ".join(f"{k} {v:.1f} s" for k, v in self.stage_seconds.items() if k != "total")
            )
        return "\n".join(lines)


def prepare(config: ExplainConfig) -> PreparedExplain:
    """Everything that can fail on bad input, before any work: settings, manifest, checkpoint."""
    config.validate()
    validate_resize_mode(config.resize)
    methods = validate_methods(config.methods)
    manifest_source = config.manifest if config.manifest is not None else _synthetic_tree(config)
    resolved: list[Identifiers] = []  # the key is loaded only when a DICOM header is found

    def identifiers_once() -> Identifiers:
        if not resolved:
            resolved.append(identifiers_for(config))
        return resolved[0]

    manifest = read_manifest(
        manifest_source,
        image_root=config.image_root,
        identifiers=identifiers_once,
        dicom_window=config.dicom_window,
        pacs_cache=config.pacs_cache,
        pacs_studies=config.pacs_studies,
    )
    skipped = skipped_summary(manifest)
    if skipped:
        print(f"the folder walk skipped files that are not explained: {skipped}", file=sys.stderr)
    identifiers = resolved[0] if resolved else None
    if identifiers is not None:
        _say_identifiers(int(manifest.attrs.get("dicom_images", 0)), identifiers)
    model = load_densenet(config.checkpoint)
    classes = resolve_classes(config, model)
    # the probe validates targets and precision against this model and tells the array shapes;
    # fp16 is CUDA-only, and the driver may have no GPU, so the probe checks it as fp32
    with warnings.catch_warnings():  # bf16 speed is the actors' device's business: they warn themselves
        warnings.simplefilter("ignore", SlowPrecisionWarning)
        probe = Explainer(
            model,
            methods=methods,
            targets=classes.targets,
            precision="fp32" if config.precision == "fp16" else config.precision,
            input_norm=config.input_norm,
        )
    _say_model(probe, config.input_norm)
    same_names = {
        f.name: getattr(config, f.name) for f in dataclasses.fields(ExplainSettings) if hasattr(config, f.name)
    }
    settings = ExplainSettings(
        **same_names
        | {  # what the checks above resolved; batch size and threads are set per device at dispatch
            "methods": methods,
            "targets": classes.targets,
            "batch_size": batch_size_for(config, gpus_per_worker=0.0),
            "input_norm": probe.input_norm,
            "activation": classes.recorded_activation,
            "class_names": classes.names,
            "source_root": manifest.attrs.get("walked_folder"),
        }
    )
    spec = RunSpec(
        fingerprint=model_fingerprint(model),
        checkpoint=os.path.basename(config.checkpoint) if config.checkpoint else "<random init>",
        settings=settings.run_settings(),
        num_classes=probe.num_classes,
        num_targets=probe.num_targets,
        grid=block_grid(config.size),
        shard_size=config.shard_size,
        identifiers=identifiers.as_json() if identifiers is not None else None,
        architecture=probe.architecture.name,
    )
    return PreparedExplain(config, manifest, str(manifest.attrs.get("source", manifest_source)), model, settings, spec)


def _say_model(probe: Explainer, asked: str | None) -> None:
    """What the job explains, and how its input is normalised when that was inferred, not asked for."""
    channels = (
        "1 input channel (RGB sources are read as their grey)"
        if probe.in_channels == 1
        else f"{probe.in_channels} input channels"
    )
    how = "" if asked else " (inferred from its stem; --input-norm to choose)"
    print(
        f"model: {probe.architecture.title}, {channels}, {probe.num_classes} outputs; input normalisation "
        f"{probe.input_norm}{how}",
        file=sys.stderr,
    )


def identifiers_for(config: ExplainConfig) -> Identifiers:
    """How DICOM identifiers reach the index: in clear with --keep-identifiers, else pseudonyms under the
    key (asked for only once a DICOM header is found: PNG archives need no key)."""
    if config.keep_identifiers:
        return in_clear()
    return load_identifiers(config.pseudonym_key, store=config.store)


def _say_identifiers(count: int, identifiers: Identifiers) -> None:
    if identifiers.key is None:
        said = "written in clear (--keep-identifiers)"
    else:
        created = " (created now: keep it, outside every store; pseudonyms under another key differ)"
        said = f"pseudonymised with the key {identifiers.key_path}{created if identifiers.created else ''}"
    print(f"DICOM: {count} files; patient, study and instance identifiers {said}", file=sys.stderr)


def _synthetic_tree(config: ExplainConfig) -> str:
    from densecam_core.data.synth import generate_mura

    if is_url(config.store):
        raise ValueError(
            f"no manifest given and the store {config.store!r} is a URL: the synthetic tree is written to "
            "a local folder beside a local store only; pass a manifest (or a local --store)"
        )
    root = os.path.abspath(config.store.rstrip("/")) + "-synthetic-mura"
    if not os.path.exists(os.path.join(root, "MURA-v1.1", "train_image_paths.csv")):
        print(f"no manifest given: writing {config.synthetic_images} synthetic MURA images to {root}", flush=True)
        generate_mura(root, images=config.synthetic_images, seed=0)
    return root


class ExplainShards:
    """The explain job on the runtime (``ShardJob``): plans the manifest's rows into shards, launches explain
    actors, reopens the index as each shard commits, compacts at the end."""

    description = "explaining"

    def __init__(self, job: PreparedExplain, writer: RunWriter, hook: Hook | None = None) -> None:
        self.job, self.writer, self.hook = job, writer, hook
        self.new_run = False

    def plan(self) -> ShardPlan:
        config, writer = self.job.config, self.writer
        self.new_run = writer.create_or_open(self.job.manifest_source, self.job.manifest)
        committed = set() if config.force else writer.committed_shards()
        if config.redo_errors:
            committed -= writer.shards_with_errors()
        return shard_work(writer.plan(self.job.manifest), config.shard_size, committed)

    def launch(self, ray: Any, resources: Resources) -> Launch:
        return _launch(self.job, self.writer, ray, resources)

    def committed(self, state: JobState, result: ShardResult) -> None:
        # a recomputed shard leaves the compacted index once its new part is committed, not before:
        # until then readers keep its old rows, so a killed recompute loses nothing committed
        self.writer.reopen({result.shard})
        if self.hook is not None:
            self.hook(state, result)

    def finish(self, counters: DispatchCounters) -> None:
        run = self.writer.open_run()
        if counters.shards_done or not run.record.counts:
            compact_locked(run)  # a few large index files; run.json gets the counts


def run_explain(config: ExplainConfig, *, hook: Hook | None = None) -> ExplainSummary:
    """Run the whole job and return its summary; raises before any work on bad input."""
    started = time.perf_counter()
    job = prepare(config)
    writer = RunWriter(config.store, job.spec)
    ensure_store(config.store)
    shards = ExplainShards(job, writer, hook)
    work, counters = run_shard_job(shards, writer.run_url, config)
    if config.input_cache == "readwrite":  # even when this job cached nothing: one killed before may have
        _catalog_input_cache(config)
    summary = ExplainSummary(
        run_id=job.spec.run_id,
        store=config.store,
        images_total=len(job.manifest),
        shards_total=work.total,
        shards_skipped=work.skipped,
        new_run=shards.new_run,
        seconds=time.perf_counter() - started,
        **dataclasses.asdict(counters),
    )
    summary.write_json(config.summary_json)
    return summary


def _launch(job: PreparedExplain, writer: RunWriter, ray: Any, resources: Resources) -> Launch:
    """The explain actors for these resources: settings per device, the weights put once, a shard per call."""
    config, spec = job.config, job.spec
    settings = dataclasses.replace(
        job.settings,
        batch_size=batch_size_for(config, resources.gpus_per_worker),
        decode_threads=resources.threads,
        decode_processes=decode_processes_for(config, resources.gpus_per_worker, resources.threads),
        concurrency=resources.concurrency,
        max_batch=spec.shard_size,
    )
    _say_input_cache(config)
    actor_class = make_actor_class(ray, ExplainWorker, "ExplainActor")
    weights_ref = ray.put(state_dict_bytes(job.model))

    def make_actor() -> Any:
        return actor_class.options(
            num_cpus=resources.cpus_per_worker,
            num_gpus=resources.gpus_per_worker,
            max_concurrency=resources.concurrency,
        ).remote(
            weights_ref,
            settings,
            device="cuda" if resources.gpus_per_worker > 0 else "cpu",
            threads=resources.threads,
            expected_fingerprint=spec.fingerprint,
            store_url=config.store,
        )

    def submit(actor: Any, shard: Shard, rows: pd.DataFrame) -> Any:
        return actor.process.remote(writer.run_url, spec.run_id, shard, spec.shard_size, rows)

    return Launch(resources, make_actor, submit)


def _input_cache(config: ExplainConfig) -> InputCache:
    """The input cache this job's preprocessing reads and writes (size, resize mode, DICOM window)."""
    return InputCache(config.store, config.size, config.resize, config.dicom_window, identity=config.cache_identity)


def _say_input_cache(config: ExplainConfig) -> None:
    """Tell the user when there is no cache to read yet (every image is then decoded)."""
    if config.input_cache == "off":
        return
    cache = _input_cache(config)
    if not cache.exists():
        then = "and caching them" if config.input_cache == "readwrite" else "(--input-cache read: nothing is written)"
        print(
            f"input cache: none yet for {config.size} px / {config.resize} in this store; decoding every image {then}",
            file=sys.stderr,
        )


def _catalog_input_cache(config: ExplainConfig) -> None:
    """Catalog the segments committed since the last catalog (this job's, or a killed job's), so the next
    job's actors find them in one read (store/inputs/catalog.py). Writes nothing when the catalog is
    current. The work is done: a catalog that cannot be written only costs speed."""
    try:
        _input_cache(config).write_catalog()
    except (OSError, pa.ArrowException, StoreError) as exc:
        print(
            f"input cache: the catalog was not updated ({exc}); the next job reads the segments instead",
            file=sys.stderr,
        )
