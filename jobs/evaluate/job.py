"""The evaluation job: a run's maps -> sampled shards -> Ray actors -> metrics parts -> the quality table.

    densecam evaluate STORE --run RUN --checkpoint CKPT --metrics deletion,insertion,randomisation,stability

The explanation job's sibling: the same driver loop (``jobs/runtime/dispatch.py``), actor sizing, run lock,
resume (a shard whose metrics part is committed is skipped) and ``--summary-json``; the actors run
``EvaluateWorker`` instead of ``ExplainWorker``. Every check that bad input can fail runs first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, NoReturn

import pandas as pd

from densecam_core import fileio
from densecam_core.analysis.pointing import boxes_by_image, boxes_for_target, read_boxes
from densecam_core.evaluation.families import FAMILIES, shared_settings
from densecam_core.evaluation.quality import quality_table
from densecam_core.evaluation.sampling import stratified_sample
from densecam_core.evaluation.scorer import ScoreSettings
from densecam_core.store import scores as store_metrics
from densecam_core.store.layout import RUNS_DIR, SUMMARY_CSV, SUMMARY_PNG, Shard, StoreError
from densecam_core.store.lock import RunLock, describe_holder
from densecam_core.store.reader import open_store
from densecam_core.store.run import Run
from densecam_core.store.targets import class_names, fixed_classes, target_position
from jobs.evaluate.config import EvaluateConfig
from jobs.evaluate.worker import EvaluateSettings, EvaluateWorker
from jobs.runtime.contract import ShardResult
from jobs.runtime.dispatch import DispatchCounters, JobState
from jobs.runtime.replica import load_run_model, model_actors
from jobs.runtime.resources import Resources
from jobs.runtime.skeleton import Hook, Launch, RunSummary, ShardPlan, run_shard_job, shard_work


@dataclass(frozen=True)
class PreparedEvaluation:
    config: EvaluateConfig
    run: Run
    sample: pd.DataFrame  # index rows to score
    model: Any
    settings: EvaluateSettings
    boxes: dict[str, Any] = field(default_factory=dict)

    def recorded(self) -> dict[str, Any]:
        """What the metrics parts depend on: a resume must match it (each family its part of it)."""
        c = self.config
        return {
            "fingerprint": self.run.fingerprint,
            "steps": c.steps,
            "seed": c.seed,
            "sample": c.sample,
            "fraction": c.fraction,
            "images": len(self.sample),
            "sample_digest": sample_digest(self.sample["image_id"]),
            "boxes": os.path.basename(c.boxes) if c.boxes else None,
        } | ({"target": self.settings.target} if self.settings.target_position else {})


def sample_digest(image_ids: Any) -> str:
    """Which images a sample holds (SHA-256 of the sorted ids): a run that grew draws another sample of
    the same size, and a resume must not mix the two."""
    digest = hashlib.sha256()
    for image_id in sorted(map(str, image_ids)):
        digest.update(image_id.encode() + b"\0")
    return digest.hexdigest()


@dataclass(kw_only=True)
class EvaluationSummary(RunSummary):
    """What the driver loop counted, and the size of the sample it scored."""

    images_sampled: int
    families_kept: list[str]  # asked, and already scored for the whole sample: not scored again
    families_scored: list[str]

    def render(self) -> str:
        kept = f"{', '.join(self.families_kept)} already scored (kept)" if self.families_kept else ""
        scored = f"{', '.join(self.families_scored)} scored now" if self.families_scored else ""
        return "\n".join(
            [
                f"run id           {self.run_id}",
                f"families         {'; '.join(p for p in (kept, scored) if p)}",
                f"images           {self.images_done} scored now ({self.ok} ok, {self.errors} error rows); "
                f"{self.images_sampled} in the sample",
                self.inputs_line(),
                f"shards           {self.shards_done} scored, {self.shards_skipped} already committed (skipped), "
                f"{self.shards_retried} retried, {len(self.shards_failed)} failed {self.shards_failed or ''}",
                f"time             {self.seconds:.1f} s wall, {self.explained_seconds:.1f} s of dispatch",
            ]
        )


def _target(run: Run, asked: str | None) -> tuple[int, int]:
    """The class scored and its position along the run's target axis: ``asked`` (a class name, or a
    position), else the run's first target."""
    fixed, classes = fixed_classes(run.record), run.record.num_classes
    if fixed is None:
        raise ValueError(
            f"run {run.run_id} explains each image's predicted class of a {classes}-class model, which differs per "
            "image; scoring supports runs with fixed targets (explain with --targets 0,1,... or 'all')"
        )
    if asked is None:
        return fixed[0], 0
    position = target_position(run.record, int(asked) if asked.isdigit() else asked)
    return fixed[position], position


def _refuse_other_inputs(run: Run, model: Any) -> None:
    """The faithfulness and stability metrics perturb three ImageNet-normalised channels; a model that reads
    one grey channel or another normalisation would be scored on inputs it never sees."""
    norm = run.settings.input_norm
    channels = int(model.features.conv0.in_channels)
    if norm != "imagenet" or channels != 3:
        raise ValueError(
            f"run {run.run_id} explains a model reading {channels} channel(s) normalised as {norm!r}: the "
            "evaluation job scores models with three ImageNet-normalised input channels only"
        )


def prepare(config: EvaluateConfig) -> PreparedEvaluation:
    """Every check bad input can fail, before any work: metrics, run, checkpoint, boxes, sample."""
    config.validate()
    run = open_store(config.store).run(config.run)
    ok = run.index[run.index["status"] == "ok"]
    if ok.empty:
        holder = RunLock(run.url).live_holder()
        if holder is not None:  # e.g. explain --force recomputing it
            raise StoreError(
                f"run {run.run_id}: {describe_holder(holder)} and has no committed explained images now; "
                "evaluate once that job has finished"
            )
        raise StoreError(f"run {run.run_id} has no committed shards with explained images: run densecam explain first")
    model = load_run_model(config.checkpoint, run)
    _refuse_other_inputs(run, model)
    target, position = _target(run, config.target)
    boxes: dict[str, Any] = {}
    if config.boxes:
        frame = boxes_for_target(read_boxes(config.boxes), target, class_names(run.record))
        unknown = sorted(set(frame["image_id"]) - set(run.index["image_id"]))
        if unknown:
            raise ValueError(
                f"{len(unknown)} image ids of {config.boxes} are not in run {run.run_id}, e.g. {unknown[:3]}: "
                "boxes must name the run's images (its index's image_id)"
            )
        boxes = boxes_by_image(frame)
    if config.sample is None and config.fraction is None:
        sample = ok.sort_values("row").reset_index(drop=True)
    else:
        sample = stratified_sample(ok, count=config.sample, fraction=config.fraction, seed=config.seed)
    settings = EvaluateSettings(
        score=ScoreSettings(metrics=config.metrics, steps=config.steps, seed=config.seed),
        methods=tuple(run.methods),
        size=run.settings.size,
        resize=run.settings.resize,
        dicom_window=run.settings.dicom_window,
        precision=run.settings.precision,
        target=target,
        target_position=position,
        activation=run.settings.activation,
        batch_size=config.batch_size,
        input_cache=config.input_cache,
        max_image_bytes=config.max_image_bytes,
    )
    return PreparedEvaluation(config, run, sample, model, settings, boxes)


def _settle_recorded(job: PreparedEvaluation) -> tuple[str, ...]:
    """Refuse to mix scores of other settings into the run's metrics (``--force`` replaces them), record what
    each asked family's scores depend on, and return the asked families that already hold scores."""
    run_url, recorded = job.run.url, job.recorded()
    if job.config.force:
        _clear_for_force(job, recorded)
    held = store_metrics.scored_families(run_url)
    for name, settings in held.items():
        if name in job.config.metrics:  # resumed or complete: the same settings as this evaluation's
            theirs, ours = FAMILIES[name].depends_on(settings), FAMILIES[name].depends_on(recorded)
        else:  # kept beside the asked ones: the same model, sample and target
            theirs, ours = shared_settings(settings), shared_settings(recorded)
        if theirs != ours:
            _refuse_mixing(job, name, theirs, ours)
    for name in job.config.metrics:
        if name not in held:
            store_metrics.write_evaluation(run_url, name, FAMILIES[name].depends_on(recorded))
    return tuple(name for name in job.config.metrics if name in held)


def _clear_for_force(job: PreparedEvaluation, recorded: dict[str, Any]) -> None:
    """``--force``: the asked families' scores go; every score goes when the others were made on another sample,
    model or target (or by an evaluation that kept every family in one part)."""
    held = store_metrics.scored_families(job.run.url)
    others_differ = any(shared_settings(s) != shared_settings(recorded) for s in held.values())
    if others_differ or store_metrics.holds_legacy_scores(job.run.url):
        store_metrics.clear_metrics(job.run.url)
    else:
        store_metrics.clear_metrics(job.run.url, job.config.metrics)


def _refuse_mixing(job: PreparedEvaluation, family: str, theirs: dict[str, Any], ours: dict[str, Any]) -> NoReturn:
    run_id = job.run.run_id
    differ = sorted(k for k in {*theirs, *ours} if theirs.get(k) != ours.get(k))
    if set(differ) <= {"sample_digest", "images"}:
        raise ValueError(
            f"run {run_id} holds {family} metrics of another sample of images (the run changed since: images "
            f"were added or recomputed{', or the scores predate recorded samples' if 'sample_digest' not in theirs else ''}); "
            "pass --force to score the sample drawn now afresh"
        )
    raise ValueError(
        f"run {run_id} holds {family} metrics scored with other settings ({', '.join(differ)}: "
        f"{ {k: theirs.get(k) for k in differ} }); pass the same settings to resume, or --force to replace them"
    )


class EvaluateShards:
    """The evaluation job on the runtime (``ShardJob``): plans the sample's shards that lack a part of an asked
    family, launches scoring actors for the families that are not complete."""

    description = "scoring"

    def __init__(self, job: PreparedEvaluation, hook: Hook | None = None) -> None:
        self.job, self.hook = job, hook
        self.complete: tuple[str, ...] = ()  # asked families already scored for every shard of the sample

    def plan(self) -> ShardPlan:
        _settle_recorded(self.job)
        run, asked = self.job.run, self.job.config.metrics
        size = run.record.shard_size
        shards = set((self.job.sample["row"] // size).astype(int))
        parts = {name: set(store_metrics.family_parts(run.url, name)) for name in asked}
        self.complete = tuple(name for name in asked if shards <= parts[name])
        return shard_work(self.job.sample, size, set.intersection(*parts.values()))

    def launch(self, ray: Any, resources: Resources) -> Launch:
        to_score = tuple(name for name in self.job.config.metrics if name not in self.complete)
        score = dataclasses.replace(self.job.settings.score, metrics=to_score)
        return _launch(self.job, dataclasses.replace(self.job.settings, score=score), ray, resources)

    def committed(self, state: JobState, result: ShardResult) -> None:
        if self.hook is not None:
            self.hook(state, result)

    def finish(self, counters: DispatchCounters) -> None:
        pass  # scores are read back as the shards wrote them


def run_evaluation(config: EvaluateConfig, *, hook: Hook | None = None) -> tuple[EvaluationSummary, pd.DataFrame]:
    """Score the run (resuming), then return the summary and the quality table."""
    started = time.perf_counter()
    job = prepare(config)
    run = job.run
    shards = EvaluateShards(job, hook)
    work, counters = run_shard_job(shards, run.url, config)
    summary = EvaluationSummary(
        run_id=run.run_id,
        store=config.store,
        images_sampled=len(job.sample),
        families_kept=list(shards.complete),
        families_scored=[name for name in config.metrics if name not in shards.complete],
        shards_total=work.total,
        shards_skipped=work.skipped,
        seconds=time.perf_counter() - started,
        **dataclasses.asdict(counters),
    )
    summary.write_json(config.summary_json)
    return summary, quality_table(run, resamples=config.resamples, seed=config.seed)


def _launch(job: PreparedEvaluation, settings: EvaluateSettings, ray: Any, resources: Resources) -> Launch:
    """The evaluation actors: one shard at a time each, the weights put once, a shard and its boxes per call."""
    config = job.config
    settings = dataclasses.replace(settings, decode_threads=resources.threads)
    make_actor = model_actors(
        ray,
        EvaluateWorker,
        "EvaluateActor",
        job.model,
        resources,
        settings,
        store_url=config.store,
        run_id=job.run.run_id,
    )

    def submit(actor: Any, shard: Shard, rows: pd.DataFrame) -> Any:
        boxes = {i: job.boxes[i] for i in rows["image_id"] if i in job.boxes} if job.boxes else None
        return actor.process.remote(job.run.url, shard, rows, boxes)

    return Launch(dataclasses.replace(resources, concurrency=1), make_actor, submit)


def main_job(config: EvaluateConfig, *, csv: str | None = None, plot: str | None = None) -> int:
    from densecam_core.evaluation.quality import format_grid, format_table, plot_table, summary_grid

    summary, table = run_evaluation(config)
    print(summary.render())
    print(format_table(table))
    print("\nper map: means (randomisation at its last stage), paired difference to the random map, verdicts")
    print(format_grid(summary_grid(table)))
    run_url = fileio.url_join(config.store, RUNS_DIR, summary.run_id)
    fs, directory = store_metrics.metrics_dir(run_url)
    csv_fs, csv_path = fileio.filesystem(csv) if csv else (fs, fileio.join(directory, SUMMARY_CSV))
    with csv_fs.open(csv_path, "w") as handle:
        table.to_csv(handle, index=False)
    if plot is None and fileio.protocol(fs) == "file":
        plot = os.path.join(directory, SUMMARY_PNG)
    if plot:
        plot_table(table, plot)
    print(f"table: {csv or csv_path}" + (f"; plot: {plot}" if plot else ""))
    if summary.shards_failed:
        print(f"shards {summary.shards_failed} failed: run the same command again to retry them", file=sys.stderr)
    return 1 if summary.shards_failed else 0
