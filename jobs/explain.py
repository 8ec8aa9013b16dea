"""The explanation job: manifest -> shards -> Ray actors (GPU or CPU) -> heatmap store.

    python -m jobs.explain MANIFEST --store STORE [--checkpoint CKPT] [...]
    ray job submit --working-dir . -- python -m jobs.explain s3://bucket/manifest.parquet --store s3://bucket/store ...

Without a manifest it explains a generated synthetic MURA tree; without --address (or RAY_ADDRESS)
it starts a local Ray on this machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import traceback
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from densecam_core.explain import METHODS, Explainer, block_grid, validate_methods
from densecam_core.geometry import validate_resize_mode
from densecam_core.hardware import SlowPrecisionWarning
from densecam_core.manifest import ManifestError, Shard, read_manifest
from densecam_core.model import CheckpointError, load_densenet169, model_fingerprint, state_dict_bytes
from densecam_core.store.format import StoreError
from densecam_core.store.writer import RunLock, RunSpec, RunWriter, ensure_store
from densecam_core.worker import ExplainSettings, ExplainWorker, ShardResult
from jobs.actor_pool import ActorPool, ActorStartError


CPU_BATCH = 8
# On a GPU, batch 8 leaves it waiting on kernel launches: on an H200, fp16, 320 px, the Explainer
# ran 145 images/s at batch 8, 716 at 32 and 1265 at 64. 32 leaves room on smaller GPUs (peak
# memory not measured there); --batch-size sets it.
GPU_BATCH = 32


@dataclass
class JobConfig:
    manifest: str | None
    store: str
    checkpoint: str | None = None
    image_root: str | None = None
    size: int = 320
    resize: str = "stretch"
    methods: tuple[str, ...] = METHODS
    targets: str | tuple[int, ...] | None = None
    precision: str = "fp32"
    batch_size: int | None = None  # None: 8 on CPU actors, 32 on GPU actors
    shard_size: int = 64
    workers: int | None = None
    gpus_per_worker: float = 0.0
    cpus_per_worker: float | None = None
    address: str | None = None
    force: bool = False
    retries: int = 3
    max_in_flight: int = 2
    start_timeout: float = 900.0
    progress: bool = True
    synthetic_images: int = 200


@dataclass
class JobSummary:
    run_id: str
    store: str
    images_total: int
    images_done: int
    ok: int
    errors: int
    shards_total: int
    shards_skipped: int
    shards_done: int
    shards_retried: int
    shards_failed: list[int]
    actors_replaced: int
    seconds: float
    explained_seconds: float
    actor_startup_seconds: float
    new_run: bool
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.images_done / self.explained_seconds if self.explained_seconds > 0 else 0.0

    def render(self) -> str:
        lines = [
            f"run id           {self.run_id}",
            f"store            {self.store}",
            f"images           {self.images_done} explained now ({self.ok} ok, {self.errors} error rows); "
            f"{self.images_total} in the manifest",
            f"shards           {self.shards_done} written, {self.shards_skipped} already committed (skipped), "
            f"{self.shards_retried} retried, {len(self.shards_failed)} failed {self.shards_failed or ''}",
            f"actors replaced  {self.actors_replaced}",
            f"throughput       {self.images_per_second:.2f} images/s over {self.explained_seconds:.1f} s of dispatch "
            f"({self.seconds:.1f} s wall; before it, Ray and {self.actor_startup_seconds:.1f} s until the first actor had its model ready)",
        ]
        if self.stage_seconds:
            lines.append("actor time       " + ", ".join(f"{k} {v:.1f} s" for k, v in self.stage_seconds.items() if k != "total"))
        return "\n".join(lines)


@dataclass
class JobState:
    """What the dispatch loop knows; hooks (tests) may look at it, e.g. to kill an actor."""

    actors: list[Any] = field(default_factory=list)
    results: list[ShardResult] = field(default_factory=list)


def prepare(config: JobConfig) -> tuple[pd.DataFrame, Any, ExplainSettings, RunSpec, str]:
    """Everything that can fail on bad input, before any work: settings, manifest, checkpoint."""
    if config.size < 32:
        raise ValueError(f"--size must be at least 32 pixels, got {config.size}")
    if config.shard_size < 1 or (config.batch_size is not None and config.batch_size < 1):
        raise ValueError("--shard-size and --batch-size must be >= 1")
    if not config.start_timeout > 0 or config.retries < 0:
        raise ValueError(f"--start-timeout must be > 0 and --retries >= 0, got {config.start_timeout}, {config.retries}")
    validate_resize_mode(config.resize)
    methods = validate_methods(config.methods)
    manifest_source = config.manifest if config.manifest is not None else _synthetic_tree(config)
    manifest = read_manifest(manifest_source, image_root=config.image_root)
    model = load_densenet169(config.checkpoint)
    # the probe validates targets and precision against this model and tells the array shapes;
    # fp16 is CUDA-only, and the driver may have no GPU, so the probe checks it as fp32
    with warnings.catch_warnings():  # bf16 speed is the actors' device's business: they warn themselves
        warnings.simplefilter("ignore", SlowPrecisionWarning)
        probe = Explainer(model, methods=methods, targets=config.targets,
                          precision="fp32" if config.precision == "fp16" else config.precision)
    settings = ExplainSettings(methods=methods, size=config.size, resize=config.resize, precision=config.precision,
                               targets=config.targets, batch_size=batch_size_for(config, gpus_per_worker=0.0))  # set per device in _dispatch
    spec = RunSpec(
        fingerprint=model_fingerprint(model), checkpoint=os.path.basename(config.checkpoint) if config.checkpoint else "<random init>",
        settings=settings.for_run_id(), num_classes=probe.num_classes, num_targets=probe.num_targets,
        grid=block_grid(config.size), shard_size=config.shard_size,
    )
    return manifest, model, settings, spec, str(manifest_source)


def _synthetic_tree(config: JobConfig) -> str:
    from densecam_core.synth import generate_mura

    root = os.path.join(os.path.abspath(config.store.rstrip("/")) + "-synthetic-mura")
    if not os.path.exists(os.path.join(root, "MURA-v1.1", "train_image_paths.csv")):
        print(f"no manifest given: writing {config.synthetic_images} synthetic MURA images to {root}", flush=True)
        generate_mura(root, images=config.synthetic_images, seed=0)
    return root


def _make_actor_class(ray: Any) -> Any:
    @ray.remote(max_restarts=0)
    class ExplainActor:
        """A Ray actor around the plain ExplainWorker: one model replica on its own device."""

        def __init__(self, weights: bytes, settings: ExplainSettings, use_gpu: bool, threads: int, fingerprint: str) -> None:
            device = "cuda" if use_gpu else "cpu"
            self.worker = ExplainWorker(weights, settings, device=device, threads=threads, expected_fingerprint=fingerprint)

        def pid(self) -> int:
            return os.getpid()

        def process(self, run_url: str, run_id: str, shard: Shard, shard_size: int, rows: pd.DataFrame) -> ShardResult:
            return self.worker.process_shard(run_url, run_id, shard, shard_size, rows)

    return ExplainActor


def _start_ray(ray: Any, config: JobConfig) -> bool:
    """Connect to the cluster, or start a local Ray; True when this job started Ray on this machine."""
    address = config.address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=True)
        return False
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=True)
    return True


def _resources(ray: Any, config: JobConfig, *, can_grow: bool = True) -> tuple[int, float, float, int]:
    """(workers, cpus per worker, gpus per worker, torch threads per worker).

    Defaults fill the cluster as it is now. An explicit ``--workers`` may ask for more than it has
    now when the cluster ``can_grow``: pending actors make an autoscaler add nodes. The local Ray
    this job started itself cannot grow, so asking it for more is refused at once.
    """
    total = ray.cluster_resources()
    gpus, cpus = float(total.get("GPU", 0)), float(total.get("CPU", 0))
    gpus_per_worker = config.gpus_per_worker or (1.0 if gpus >= 1 else 0.0)
    if gpus_per_worker > 0:
        workers = config.workers or int(gpus // gpus_per_worker)
        cpus_per_worker = config.cpus_per_worker or max(1.0, min(4.0, cpus // max(workers, 1)))
    else:
        cpus_per_worker = config.cpus_per_worker or max(1.0, min(cpus, 4.0))
        workers = config.workers or int(cpus // cpus_per_worker)
    if workers < 1:
        raise ValueError(
            f"the cluster has {_describe(total)} now, too few for one actor ({gpus_per_worker:g} GPU, "
            f"{cpus_per_worker:g} CPU); on an autoscaling cluster pass --workers N (and --gpus-per-worker) "
            "so that the autoscaler adds nodes for N actors")
    short = workers * gpus_per_worker > gpus or workers * cpus_per_worker > cpus
    if short and not can_grow:
        raise ValueError(
            f"{workers} actors of {gpus_per_worker:g} GPU and {cpus_per_worker:g} CPU do not fit the local Ray on this "
            f"machine ({_describe(total)}); lower --workers, --gpus-per-worker or --cpus-per-worker, or pass --address")
    if short:
        print(f"note: {workers} actors need {workers * gpus_per_worker:g} GPUs and {workers * cpus_per_worker:g} CPUs; "
              f"the cluster has {_describe(total)} now. Actors start as nodes join (autoscaler); "
              f"work starts with the first, and the job stops if none starts within --start-timeout "
              f"{config.start_timeout:g} s", file=sys.stderr)
    return workers, cpus_per_worker, gpus_per_worker, max(1, int(cpus_per_worker))


def batch_size_for(config: JobConfig, gpus_per_worker: float) -> int:
    """--batch-size, or the default for the actors' device."""
    if config.batch_size is not None:
        return config.batch_size
    return GPU_BATCH if gpus_per_worker > 0 else CPU_BATCH


def _describe(resources: dict[str, float]) -> str:
    return f"{float(resources.get('GPU', 0)):g} GPUs and {float(resources.get('CPU', 0)):g} CPUs"


def _warn_local_store_on_cluster(ray: Any, store: str) -> None:
    alive = [n for n in ray.nodes() if n.get("Alive")]
    if len(alive) > 1 and "://" not in store:
        print(f"warning: the store {store!r} is a local path but the cluster has {len(alive)} nodes; every node "
              "must see it (shared file system) or use an object-store URL such as s3://bucket/store", file=sys.stderr)


def run_job(config: JobConfig, *, hook: Callable[[JobState, ShardResult], None] | None = None) -> JobSummary:
    """Run the whole job and return its summary; raises before any work on bad input."""
    started = time.perf_counter()
    manifest, model, settings, spec, manifest_source = prepare(config)
    writer = RunWriter(config.store, spec)
    ensure_store(config.store)
    lock = RunLock(writer.run_url)
    lock.acquire()
    try:
        new_run = writer.create_or_open(manifest_source)
        planned = writer.plan(manifest)
        committed = set() if config.force else writer.committed_shards()
        groups = {int(k): g for k, g in planned.groupby("shard", sort=True)}
        todo = deque((Shard(k, int(g["row"].min()), int(g["row"].max()) + 1), g) for k, g in groups.items() if k not in committed)
        skipped = len(groups) - len(todo)
        if todo:
            import ray

            own_local_ray = _start_ray(ray, config)
            _warn_local_store_on_cluster(ray, config.store)
            summary = _dispatch(ray, config, settings, spec, writer, model, todo, lock, hook, can_grow=not own_local_ray)
        else:
            summary = {"images_done": 0, "ok": 0, "errors": 0, "shards_done": 0, "shards_retried": 0,
                       "shards_failed": [], "actors_replaced": 0, "explained_seconds": 0.0, "actor_startup_seconds": 0.0}
    finally:
        lock.release()
    summary.update(run_id=spec.run_id, store=config.store, images_total=len(manifest), shards_total=len(groups),
                   shards_skipped=skipped, seconds=time.perf_counter() - started, new_run=new_run)
    return JobSummary(**summary)


def _dispatch(ray: Any, config: JobConfig, settings: ExplainSettings, spec: RunSpec, writer: RunWriter, model: Any,
              todo: deque, lock: RunLock, hook: Callable | None, can_grow: bool = True) -> dict[str, Any]:
    """Dynamic dispatch: bounded work per actor, results in completion order, dead actors replaced."""
    from ray.exceptions import RayActorError, RayTaskError

    try:
        from ray.exceptions import ActorDiedError, ActorUnavailableError
        actor_errors: tuple[type, ...] = (RayActorError, ActorDiedError, ActorUnavailableError)
    except ImportError:  # older Ray
        actor_errors = (RayActorError,)
    from tqdm import tqdm

    workers, cpus_per_worker, gpus_per_worker, threads = _resources(ray, config, can_grow=can_grow)
    settings = dataclasses.replace(settings, batch_size=batch_size_for(config, gpus_per_worker))
    actor_class = _make_actor_class(ray)
    weights_ref = ray.put(state_dict_bytes(model))

    def new_actor() -> Any:
        return actor_class.options(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker).remote(
            weights_ref, settings, gpus_per_worker > 0, threads, spec.fingerprint)

    started = time.perf_counter()
    pool = ActorPool(ray, new_actor, min(workers, max(len(todo), 1)), max_start_failures=config.retries)
    state = JobState(actors=pool.actors)
    in_flight: dict[Any, tuple[int, Shard, pd.DataFrame]] = {}
    load = [0] * len(pool.actors)
    attempts: dict[int, int] = {}
    failed: list[int] = []
    retried, replaced, ok, errors, done_images = 0, 0, 0, 0, 0
    total_images = sum(len(g) for _, g in todo)
    bar = tqdm(total=total_images, unit="img", desc="explaining", disable=not config.progress, smoothing=0.1)
    last_beat = time.monotonic()
    try:
        while todo or in_flight:
            for slot in sorted(pool.ready):
                while todo and load[slot] < config.max_in_flight:
                    shard, rows = todo.popleft()
                    ref = pool.actors[slot].process.remote(writer.run_url, spec.run_id, shard, spec.shard_size, rows)
                    in_flight[ref] = (slot, shard, rows)
                    load[slot] += 1
            waiting_on = list(in_flight) + list(pool.pending)
            if not waiting_on:  # cannot happen: a slot is always ready, starting, or has raised
                raise RuntimeError(f"{len(todo)} shards left but no actor is running or starting")
            ready, _ = ray.wait(waiting_on, num_returns=1, timeout=min(10.0, max(config.start_timeout, 0.1)))
            if time.monotonic() - last_beat > 30:  # also while actors wait for nodes: the lock must stay ours
                lock.heartbeat()
                last_beat = time.monotonic()
            if pool.first_ready_at is None and time.perf_counter() - started > config.start_timeout:
                raise ActorStartError(
                    f"no explain actor started within {config.start_timeout:g} s: each needs {gpus_per_worker:g} GPU and "
                    f"{cpus_per_worker:g} CPU, and the cluster has {_describe(ray.cluster_resources())}. On an "
                    "autoscaling cluster allow longer (--start-timeout); on a fixed one lower --workers, "
                    "--gpus-per-worker or --cpus-per-worker")
            for ref in ready:
                if pool.is_probe(ref):
                    pool.settle(ref, actor_errors)
                    continue
                slot, shard, rows = in_flight.pop(ref)
                load[slot] -= 1
                try:
                    result: ShardResult = ray.get(ref)
                except actor_errors as exc:
                    # the actor is gone: replace it, give its shards back to the queue (front)
                    replaced += 1
                    pool.start(slot)
                    for other, (other_slot, other_shard, other_rows) in list(in_flight.items()):
                        if other_slot == slot:  # its other shards died with it: back to the queue, no attempt counted
                            in_flight.pop(other)
                            todo.appendleft((other_shard, other_rows))
                    load[slot] = 0
                    retried += 1
                    _requeue(todo, shard, rows, attempts, config.retries, failed, f"actor died: {exc}")
                    continue
                except RayTaskError as exc:
                    retried += 1
                    _requeue(todo, shard, rows, attempts, config.retries, failed, str(exc).splitlines()[0])
                    continue
                state.results.append(result)
                ok += result.ok
                errors += result.errors
                done_images += result.images
                bar.update(result.images)
                if hook is not None:
                    hook(state, result)
    finally:
        bar.close()
        pool.kill_all()
    first_ready = pool.first_ready_at or started
    actor_startup = first_ready - started
    elapsed = time.perf_counter() - first_ready
    stages: dict[str, float] = {}
    for result in state.results:
        for stage, seconds in result.seconds.items():
            stages[stage] = stages.get(stage, 0.0) + seconds
    return {"stage_seconds": stages, "images_done": done_images, "ok": ok, "errors": errors, "shards_done": len(state.results),
            "shards_retried": retried, "shards_failed": sorted(failed), "actors_replaced": replaced + pool.start_failures,
            "explained_seconds": elapsed, "actor_startup_seconds": actor_startup}


def _requeue(todo: deque, shard: Shard, rows: pd.DataFrame, attempts: dict[int, int], retries: int,
             failed: list[int], reason: str) -> None:
    attempts[shard.index] = attempts.get(shard.index, 0) + 1
    if attempts[shard.index] > retries:
        print(f"shard {shard.index} failed {attempts[shard.index]} times, giving up: {reason}", file=sys.stderr)
        failed.append(shard.index)
    else:
        print(f"shard {shard.index}: attempt {attempts[shard.index]} failed ({reason}); re-queued", file=sys.stderr)
        todo.appendleft((shard, rows))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="densecam explain", description="Explain every image of a manifest into a heatmap store (Ray).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("manifest", nargs="?", default=None,
                        help="MURA-v1.1 folder, its CSVs, or a CSV/Parquet manifest with a 'path' column; "
                             "omitted: a generated synthetic MURA tree beside the store")
    parser.add_argument("--store", default="densecam-out/store", help="store path or URL (s3://, gs://, ...)")
    parser.add_argument("--checkpoint", default=None, help="model weights (.pt); omitted: seeded random init")
    parser.add_argument("--image-root", default=None, help="folder (or URL) that relative manifest paths start from")
    parser.add_argument("--size", type=int, default=320, help="model input size in pixels (square)")
    parser.add_argument("--resize", choices=("stretch", "pad"), default="stretch",
                        help="stretch to a square (MURA paper) or reflect-pad to a square first")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated gradient methods")
    parser.add_argument("--targets", default=None,
                        help="multi-class models: 'predicted', 'all' or comma-separated class ids")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                        help="bf16: CUDA (Ampere+) or a CPU with AVX512-BF16/AMX, else slow; fp16: CUDA only")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"images per forward/backward pass (default {CPU_BATCH} on CPU actors, {GPU_BATCH} on GPU actors)")
    parser.add_argument("--shard-size", type=int, default=None,
                        help="images per shard = Zarr chunk = unit of work and resume (default 64, or the run's)")
    parser.add_argument("--workers", type=int, default=None,
                        help="actors; default one per GPU, or without GPUs as many as fill the CPUs")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per actor (0: CPU, unless GPUs exist)")
    parser.add_argument("--cpus-per-worker", type=float, default=None,
                        help="CPUs per actor; torch threads follow it (default: up to 4)")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--force", action="store_true", help="recompute shards that are already committed")
    parser.add_argument("--retries", type=int, default=3, help="attempts per shard before it is reported as failed")
    parser.add_argument("--start-timeout", type=float, default=900.0,
                        help="seconds to wait for the first actor to start (autoscaling clusters add nodes slowly)")
    parser.add_argument("--synthetic-images", type=int, default=200, help="size of the generated tree without a manifest")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def config_from_args(args: argparse.Namespace) -> JobConfig:
    targets: str | tuple[int, ...] | None = args.targets
    if targets and targets not in ("predicted", "all"):
        targets = tuple(int(t) for t in targets.split(","))
    shard_size = args.shard_size or _existing_shard_size(args) or 64
    return JobConfig(
        manifest=args.manifest, store=args.store, checkpoint=args.checkpoint, image_root=args.image_root,
        size=args.size, resize=args.resize, methods=validate_methods(args.methods), targets=targets,
        precision=args.precision, batch_size=args.batch_size, shard_size=shard_size, workers=args.workers,
        gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker, address=args.address,
        force=args.force, retries=args.retries, start_timeout=args.start_timeout, progress=not args.no_progress,
        synthetic_images=args.synthetic_images,
    )


def _existing_shard_size(args: argparse.Namespace) -> int | None:
    """Without --shard-size, adopt the shard size of the store's runs (resume without surprises)."""
    try:
        from densecam_core.store.reader import open_store

        runs = open_store(args.store).run_metadata()
    except (StoreError, FileNotFoundError, OSError):
        return None
    sizes = {meta["shard_size"] for meta in runs.values()}
    return sizes.pop() if len(sizes) == 1 else None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        summary = run_job(config)
    except (ManifestError, CheckpointError, StoreError, ValueError, TypeError) as exc:
        print(f"densecam explain: error: {exc}", file=sys.stderr)
        return 2
    except ActorStartError as exc:
        print(f"densecam explain: error: {exc}", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        return 1
    print(summary.render())
    return 1 if summary.shards_failed else 0


if __name__ == "__main__":
    sys.exit(main())
