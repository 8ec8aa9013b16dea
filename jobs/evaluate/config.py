"""The evaluation job's settings: one dataclass, torch-free; ``densecam evaluate``'s flags are generated from it."""

from __future__ import annotations

from dataclasses import dataclass

from densecam_core.evaluation.families import FAMILIES, validate_families
from densecam_core.options import option
from jobs.runtime.options import RuntimeOptions

EVALUATE_INPUT_CACHE_MODES = ("read", "off")
DEFAULT_METRICS = ("deletion", "insertion", "randomisation", "stability")


@dataclass(kw_only=True)
class EvaluateConfig(RuntimeOptions):
    """An evaluation's settings; the runtime's fields mean what they mean for ``densecam explain``."""

    store: str = option(help="heatmap store path or URL", positional=True)
    run: str = option("latest", "run id, model fingerprint (prefixes work) or 'latest'")
    metrics: tuple[str, ...] = option(
        DEFAULT_METRICS,
        f"comma-separated: {', '.join(FAMILIES)} (needs --boxes); a family the run already holds is kept, "
        "one it lacks is added; omitted with --boxes: the pointing game of the stored maps only",
        parse=validate_families,
        cli_default=None,
    )
    checkpoint: str | None = option(None, "the run's model weights (.pt); must match its fingerprint")
    boxes: str | None = option(None, "CSV with image_id,x0,y0,x1,y1 in original-image pixels (x1, y1 exclusive)")
    steps: int = option(16, "deletion/insertion steps K")
    sample: int | None = option(None, "score N images (stratified by body part and label)", group="sample")
    fraction: float | None = option(None, "score this fraction of the images (stratified)", group="sample")
    seed: int = option(0, "sample, random maps, noise and randomised weights")
    batch_size: int = option(8, "images scored together on an actor")
    input_cache: str = option("read", "read model inputs from the cache", choices=EVALUATE_INPUT_CACHE_MODES)
    shard_timeout: float = option(
        3600.0, "seconds an actor may hold one shard; past it the actor is stopped and the shard retried elsewhere"
    )
    resamples: int = option(1000, "bootstrap resamples of studies")
    target: str | None = option(
        None,
        "runs that explain several classes: the one to score, by class name or by position along the run's "
        "target axis (default: its first); one target's scores per run at a time (--force to switch)",
    )
    force: bool = option(
        False,
        "score the asked families afresh (every family's scores go when the others were made on another sample, "
        "model or target)",
    )

    def validate(self) -> None:
        self.metrics = validate_families(self.metrics)
        boxed = [name for name in self.metrics if "boxes" in FAMILIES[name].needs]
        if boxed and not self.boxes:
            raise ValueError(f"--metrics {','.join(boxed)} needs --boxes CSV (image_id,x0,y0,x1,y1)")
        if self.steps < 1 or self.batch_size < 1 or self.resamples < 1:
            raise ValueError("--steps, --batch-size and --resamples must be >= 1")
        if self.sample is not None and self.fraction is not None:
            raise ValueError("pass --sample N or --fraction F, not both")
        if self.input_cache not in EVALUATE_INPUT_CACHE_MODES:
            raise ValueError(f"--input-cache must be read or off for an evaluation, got {self.input_cache!r}")
        self.validate_runtime()
