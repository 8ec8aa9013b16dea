"""The explanation job's settings: one dataclass, and the command line built from its defaults."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from densecam_core.data.decode import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from densecam_core.data.dicom import DEFAULT_DICOM_WINDOW, DICOM_WINDOWS, validate_dicom_window
from densecam_core.store.inputs.identity import CACHE_IDENTITIES, validate_cache_identity
from densecam_core.store.layout import StoreError
from densecam_core.vocabulary import CPU_BATCH, METHODS, PRECISIONS, RESIZE_MODES, validate_methods

INPUT_CACHE_MODES = ("readwrite", "read", "off")
DECODE_MODES = ("auto", "threads", "processes")


@dataclass
class JobConfig:
    """Everything a job run depends on. ``None`` means: derived (see each field's comment)."""

    manifest: str | None = None  # None: a generated synthetic MURA tree beside the store
    store: str = "densecam-out/store"
    checkpoint: str | None = None  # None: seeded random init
    image_root: str | None = None
    size: int = 320
    resize: str = "stretch"
    methods: tuple[str, ...] = METHODS
    targets: str | tuple[int, ...] | None = None
    precision: str = "fp32"
    batch_size: int | None = None  # None: CPU_BATCH on CPU actors; GPU actors pick the largest that fits
    shard_size: int = 64
    workers: int | None = None  # None: one per GPU, or as many CPU actors as fill the CPUs
    gpus_per_worker: float = 0.0
    cpus_per_worker: float | None = None  # None: see jobs/runtime/resources.py
    address: str | None = None  # None: RAY_ADDRESS, else a local Ray
    force: bool = False
    redo_errors: bool = False  # committed shards with error rows are explained again
    retries: int = 3  # a failed shard is retried this many times (retries + 1 attempts in all)
    actor_start_retries: int = 3  # actors that fail while starting, after the first was ready
    max_in_flight: int = 2
    start_timeout: float = 900.0
    shard_timeout: float = 1800.0  # an actor that holds a shard longer is stopped and the shard retried elsewhere
    max_image_bytes: int = DEFAULT_MAX_BYTES
    max_image_pixels: int = DEFAULT_MAX_PIXELS  # larger images (the padded square with --resize pad) are error rows
    input_cache: str = "readwrite"
    cache_identity: str = "stat"  # how cached inputs are matched to files (store/inputs/cache.py CACHE_IDENTITIES)
    decode: str = "auto"  # auto: processes in GPU actors (off the compute thread's GIL), threads in CPU actors
    cuda_graphs: bool = True  # GPU actors replay each batch's pass as a CUDA graph (docs/PERFORMANCE.md)
    summary_json: str | None = None
    progress: bool = True
    synthetic_images: int = 200
    dicom_window: str = DEFAULT_DICOM_WINDOW  # how DICOM sources are windowed (densecam_core/data/dicom.py)
    pseudonym_key: str | None = None  # None: the default key, created on first use (data/pseudonyms.py)
    keep_identifiers: bool = False  # DICOM patient/study/instance identifiers in clear instead of pseudonyms

    def validate(self) -> None:
        """Cheap checks of settings alone, before the manifest or the checkpoint is touched."""
        if self.size < 32:
            raise ValueError(f"--size must be at least 32 pixels, got {self.size}")
        if self.shard_size < 1 or (self.batch_size is not None and self.batch_size < 1):
            raise ValueError("--shard-size and --batch-size must be >= 1")
        if not self.start_timeout > 0 or self.retries < 0:
            raise ValueError(
                f"--start-timeout must be > 0 and --retries >= 0, got {self.start_timeout}, {self.retries}"
            )
        if not self.shard_timeout > 0 or self.max_image_bytes < 1:
            raise ValueError(
                f"--shard-timeout must be > 0 and --max-image-bytes >= 1, got {self.shard_timeout}, {self.max_image_bytes}"
            )
        if self.max_image_pixels < 1:
            raise ValueError(f"--max-image-pixels must be >= 1, got {self.max_image_pixels}")
        if self.actor_start_retries < 0:
            raise ValueError(f"--actor-start-retries must be >= 0, got {self.actor_start_retries}")
        validate_cache_identity(self.cache_identity)
        if self.input_cache not in INPUT_CACHE_MODES:
            raise ValueError(f"--input-cache must be one of {INPUT_CACHE_MODES}, got {self.input_cache!r}")
        if self.decode not in DECODE_MODES:
            raise ValueError(f"--decode must be one of {DECODE_MODES}, got {self.decode!r}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {self.workers}")
        if self.cpus_per_worker is not None and self.cpus_per_worker <= 0:
            raise ValueError(f"--cpus-per-worker must be > 0, got {self.cpus_per_worker}")
        validate_dicom_window(self.dicom_window)
        if self.keep_identifiers and self.pseudonym_key is not None:
            raise ValueError("--keep-identifiers writes identifiers in clear: it takes no --pseudonym-key")


def decode_processes_for(config: JobConfig, gpus_per_worker: float, threads: int) -> int:
    """How many decode processes each actor keeps (0: it decodes with threads)."""
    if config.decode == "processes" or (config.decode == "auto" and gpus_per_worker > 0):
        return max(1, threads)
    return 0


def batch_size_for(config: JobConfig, gpus_per_worker: float) -> int | None:
    """--batch-size, or the default for the actors' device (None: each GPU actor measures its own)."""
    if config.batch_size is not None:
        return config.batch_size
    return None if gpus_per_worker > 0 else CPU_BATCH


def build_parser() -> argparse.ArgumentParser:
    d = JobConfig()
    parser = argparse.ArgumentParser(
        prog="densecam explain",
        description="Explain every image of a manifest into a heatmap store (Ray).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "manifest",
        nargs="?",
        default=d.manifest,
        help="MURA-v1.1 folder, its CSVs, or a CSV/Parquet manifest with a 'path' column; "
        "omitted: a generated synthetic MURA tree beside the store",
    )
    parser.add_argument("--store", default=d.store, help="store path or URL (s3://, gs://, ...)")
    parser.add_argument("--checkpoint", default=d.checkpoint, help="model weights (.pt); omitted: seeded random init")
    parser.add_argument(
        "--image-root", default=d.image_root, help="folder (or URL) that relative manifest paths start from"
    )
    parser.add_argument("--size", type=int, default=d.size, help="model input size in pixels (square)")
    parser.add_argument(
        "--resize",
        choices=RESIZE_MODES,
        default=d.resize,
        help="stretch to a square (MURA paper) or reflect-pad to a square first",
    )
    parser.add_argument("--methods", default=",".join(d.methods), help="comma-separated gradient methods")
    parser.add_argument(
        "--targets", default=None, help="multi-class models: 'predicted', 'all' or comma-separated class ids"
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=d.precision,
        help="bf16: CUDA (Ampere+) or a CPU with AVX512-BF16/AMX, else slow; fp16: CUDA only",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=d.batch_size,
        help=f"images per forward/backward pass (default {CPU_BATCH} on CPU actors; a GPU actor takes the largest "
        "of 128/64/32/16/8, at most the shard size, whose measured memory fits its GPU)",
    )
    parser.add_argument(
        "--shard-size",
        type=int,
        default=None,
        help=f"images per shard = Zarr chunk = unit of work and resume (default {d.shard_size}, or the run's)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=d.workers,
        help="actors; default one per GPU, or without GPUs as many as fill the CPUs",
    )
    parser.add_argument(
        "--gpus-per-worker", type=float, default=d.gpus_per_worker, help="GPUs per actor (0: CPU, unless GPUs exist)"
    )
    parser.add_argument(
        "--cpus-per-worker",
        type=float,
        default=d.cpus_per_worker,
        help="CPUs per actor; torch and decode threads follow it (default: a GPU actor takes its "
        "node's CPUs per GPU less one for Ray; an explicit --workers N divides the CPUs by N; "
        "else up to 4)",
    )
    parser.add_argument(
        "--address", default=d.address, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)"
    )
    parser.add_argument("--force", action="store_true", help="recompute shards that are already committed")
    parser.add_argument(
        "--redo-errors",
        action="store_true",
        help="explain again the committed shards that hold error rows (a file that was missing and is back)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=d.retries,
        help="times a failed shard is retried before it is reported as failed (retries + 1 attempts)",
    )
    parser.add_argument(
        "--actor-start-retries",
        type=int,
        default=d.actor_start_retries,
        help="actors that fail while starting are restarted this many times in all "
        "(the first actor failing stops the job at once: the model cannot load)",
    )
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=d.start_timeout,
        help="seconds to wait for the first actor to start (autoscaling clusters add nodes slowly)",
    )
    parser.add_argument(
        "--shard-timeout",
        type=float,
        default=d.shard_timeout,
        help="seconds an actor may hold one shard; past it the actor is stopped and the shard retried elsewhere",
    )
    parser.add_argument(
        "--max-image-bytes",
        type=int,
        default=d.max_image_bytes,
        help="larger files are error rows, refused before they are read into memory",
    )
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        default=d.max_image_pixels,
        help="larger images are error rows, refused from their header before any pixel is decoded "
        "(with --resize pad the padded square counts)",
    )
    parser.add_argument(
        "--input-cache",
        choices=INPUT_CACHE_MODES,
        default=d.input_cache,
        help="model inputs decoded once into the store and reused by later runs with the same "
        "preprocessing: readwrite, read (never write), off",
    )
    parser.add_argument(
        "--cache-identity",
        choices=CACHE_IDENTITIES,
        default=d.cache_identity,
        help="how a cached input is matched to its file: stat (path, size, modification time: one stat per "
        "file) or content (a digest of the bytes: reads every file, but sees files rewritten in place with "
        "their time restored, as cp -p and rsync -t do)",
    )
    parser.add_argument(
        "--decode",
        choices=DECODE_MODES,
        default=d.decode,
        help="where actors decode images: threads, or a pool of processes (auto: processes in GPU actors, whose "
        "compute thread needs the GIL to launch kernels; threads in CPU actors)",
    )
    parser.add_argument(
        "--cuda-graphs",
        action=argparse.BooleanOptionalAction,
        default=d.cuda_graphs,
        help="GPU actors record the forward and backward pass once as a CUDA graph and replay it for every "
        "batch: the same maps, one launch instead of about a thousand (default on; CPU actors ignore it)",
    )
    parser.add_argument(
        "--dicom-window",
        choices=DICOM_WINDOWS,
        default=d.dicom_window,
        help="the VOI transform of DICOM sources: first (the file's first window, else its VOI LUT, else "
        "min-max), lut (its VOI LUT first), minmax or percentile (0.5-99.5 %%) of the image's values",
    )
    parser.add_argument(
        "--pseudonym-key",
        default=d.pseudonym_key,
        help="key file for the pseudonyms of DICOM patient, study and instance identifiers (default: "
        "$DENSECAM_PSEUDONYM_KEY, else ~/.config/densecam/pseudonym.key, created on first use; never in a store)",
    )
    parser.add_argument(
        "--keep-identifiers",
        action="store_true",
        help="write DICOM PatientID, StudyInstanceUID and SOPInstanceUID in clear (only for data you may share)",
    )
    parser.add_argument("--summary-json", default=d.summary_json, help="also write the job summary to this JSON file")
    parser.add_argument(
        "--synthetic-images", type=int, default=d.synthetic_images, help="size of the generated tree without a manifest"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def config_from_args(args: argparse.Namespace) -> JobConfig:
    targets: str | tuple[int, ...] | None = args.targets
    if isinstance(targets, str) and targets not in ("predicted", "all"):
        try:
            targets = tuple(int(t) for t in targets.split(","))
        except ValueError:
            raise ValueError(
                f"--targets must be 'predicted', 'all' or comma-separated class ids, got {args.targets!r}"
            ) from None
    shard_size = args.shard_size or _existing_shard_size(args.store) or JobConfig.shard_size
    return JobConfig(
        manifest=args.manifest,
        store=args.store,
        checkpoint=args.checkpoint,
        image_root=args.image_root,
        size=args.size,
        resize=args.resize,
        methods=validate_methods(args.methods),
        targets=targets,
        precision=args.precision,
        batch_size=args.batch_size,
        shard_size=shard_size,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker,
        address=args.address,
        force=args.force,
        redo_errors=args.redo_errors,
        retries=args.retries,
        actor_start_retries=args.actor_start_retries,
        start_timeout=args.start_timeout,
        shard_timeout=args.shard_timeout,
        max_image_bytes=args.max_image_bytes,
        max_image_pixels=args.max_image_pixels,
        input_cache=args.input_cache,
        cache_identity=args.cache_identity,
        decode=args.decode,
        cuda_graphs=args.cuda_graphs,
        summary_json=args.summary_json,
        progress=not args.no_progress,
        synthetic_images=args.synthetic_images,
        dicom_window=args.dicom_window,
        pseudonym_key=args.pseudonym_key,
        keep_identifiers=args.keep_identifiers,
    )


def _existing_shard_size(store: str) -> int | None:
    """Without --shard-size, adopt the shard size of the store's runs (resume without surprises)."""
    try:
        from densecam_core.store.reader import open_store

        runs = open_store(store).run_metadata()
    except (StoreError, FileNotFoundError, OSError):
        return None
    sizes = {meta["shard_size"] for meta in runs.values()}
    return sizes.pop() if len(sizes) == 1 else None
