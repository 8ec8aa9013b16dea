"""The options every job on the runtime shares (actors, Ray, limits, the summary), declared as config fields
(``densecam_core.options.option``). Torch- and Ray-free.
"""

from __future__ import annotations

from dataclasses import dataclass

from densecam_core.data.decode import DEFAULT_MAX_BYTES
from densecam_core.options import option


@dataclass(kw_only=True)
class RuntimeOptions:
    """What both jobs ask of the runtime (actors, Ray, limits, the summary), with the same flags and help."""

    force: bool = option(False, "recompute shards that are already committed")
    workers: int | None = option(None, "actors; default one per GPU, or without GPUs as many as fill the CPUs")
    gpus_per_worker: float = option(0.0, "GPUs per actor (0: CPU, unless GPUs exist)")
    cpus_per_worker: float | None = option(
        None,
        "CPUs per actor; torch and decode threads follow it (default: a GPU actor takes its node's CPUs per GPU "
        "less one for Ray; an explicit --workers N divides the CPUs by N; else up to 4)",
    )
    address: str | None = option(None, "Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    retries: int = option(3, "times a failed shard is retried before it is reported as failed (retries + 1 attempts)")
    actor_start_retries: int = option(
        3,
        "actors that fail while starting are restarted this many times in all (the first actor failing stops "
        "the job at once: the model cannot load)",
    )
    max_in_flight: int = option(2, "shards queued on one actor at a time (at least one more than it runs at once)")
    start_timeout: float = option(
        900.0, "seconds to wait for the first actor to start (autoscaling clusters add nodes slowly)"
    )
    shard_timeout: float = option(
        1800.0, "seconds an actor may hold one shard; past it the actor is stopped and the shard retried elsewhere"
    )
    max_image_bytes: int = option(
        DEFAULT_MAX_BYTES, "larger files are error rows, refused before they are read into memory"
    )
    summary_json: str | None = option(None, "also write the job summary to this JSON file")
    progress: bool = option(True, "a progress bar")

    def validate_runtime(self) -> None:
        """The shared settings' own checks (each job adds its own)."""
        if not self.start_timeout > 0 or self.retries < 0:
            raise ValueError(
                f"--start-timeout must be > 0 and --retries >= 0, got {self.start_timeout}, {self.retries}"
            )
        if not self.shard_timeout > 0 or self.max_image_bytes < 1:
            raise ValueError(
                f"--shard-timeout must be > 0 and --max-image-bytes >= 1, got {self.shard_timeout}, {self.max_image_bytes}"
            )
        if self.actor_start_retries < 0:
            raise ValueError(f"--actor-start-retries must be >= 0, got {self.actor_start_retries}")
        if self.max_in_flight < 1:
            raise ValueError(f"--max-in-flight must be >= 1, got {self.max_in_flight}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {self.workers}")
        if self.cpus_per_worker is not None and self.cpus_per_worker <= 0:
            raise ValueError(f"--cpus-per-worker must be > 0, got {self.cpus_per_worker}")
