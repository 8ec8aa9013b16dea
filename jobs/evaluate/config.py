"""The evaluation job's settings: one dataclass, torch-free, so the command line takes its defaults from it."""

from __future__ import annotations

from dataclasses import dataclass

from densecam_core.data.decode import DEFAULT_MAX_BYTES
from densecam_core.vocabulary import validate_metrics

EVALUATE_INPUT_CACHE_MODES = ("read", "off")


@dataclass
class EvaluateConfig:
    """An evaluation's settings; the actor and driver fields mean what they mean for ``densecam explain``."""

    store: str
    run: str = "latest"
    checkpoint: str | None = None  # None: the seeded random init (runs explained without a checkpoint)
    metrics: tuple[str, ...] = ("deletion", "insertion", "randomization", "stability")
    boxes: str | None = None
    steps: int = 16
    sample: int | None = None
    fraction: float | None = None
    seed: int = 0
    batch_size: int = 8
    input_cache: str = "read"
    force: bool = False
    workers: int | None = None
    gpus_per_worker: float = 0.0
    cpus_per_worker: float | None = None
    address: str | None = None
    retries: int = 3
    actor_start_retries: int = 3
    max_in_flight: int = 2
    start_timeout: float = 900.0
    shard_timeout: float = 3600.0
    max_image_bytes: int = DEFAULT_MAX_BYTES
    summary_json: str | None = None
    progress: bool = True
    resamples: int = 1000

    def validate(self) -> None:
        self.metrics = validate_metrics(self.metrics)
        if "localization" in self.metrics and not self.boxes:
            raise ValueError("--metrics localization needs --boxes CSV (image_id,x0,y0,x1,y1)")
        if self.steps < 1 or self.batch_size < 1 or self.resamples < 1:
            raise ValueError("--steps, --batch-size and --resamples must be >= 1")
        if self.sample is not None and self.fraction is not None:
            raise ValueError("pass --sample N or --fraction F, not both")
        if self.input_cache not in EVALUATE_INPUT_CACHE_MODES:
            raise ValueError(f"--input-cache must be read or off for an evaluation, got {self.input_cache!r}")
        if not self.start_timeout > 0 or not self.shard_timeout > 0 or self.retries < 0:
            raise ValueError("--start-timeout and --shard-timeout must be > 0 and --retries >= 0")
