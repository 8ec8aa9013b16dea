"""What an explain worker is told: the settings of the run (hashed into its id) and of the host it runs on."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from densecam_core.data.decode import DEFAULT_MAX_PIXELS
from densecam_core.store.record import RunSettings

NON_FINITE = "non-finite model output (NaN or inf in the logits or maps): check the checkpoint's weights"


@dataclass(frozen=True)
class ExplainSettings(RunSettings):
    """What an explain worker is told: the run's settings (``RunSettings``: what the run id hashes) and the host's."""

    input_norm: str | None = None  # type: ignore[assignment]  # None: the model's own (vocabulary.INPUT_NORMS)
    batch_size: int | None = 8  # None: CPU_BATCH on a CPU; on a GPU the largest that fits (auto_batch_size)
    decode_threads: int = 2
    decode_processes: int = 0  # > 0: decode in a persistent pool of this many processes instead of threads
    input_cache: str = "off"  # readwrite | read | off
    max_image_bytes: int | None = None
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    concurrency: int = 1  # shards one worker processes at once (threads; GPU actors overlap input, compute, write)
    max_batch: int | None = None  # the run's shard size: a batch larger than a shard would only be padding
    cuda_graphs: bool = False  # GPU actors replay the pass as a CUDA graph (Explainer(cuda_graphs=True))
    cache_identity: str = "stat"  # how cached inputs are matched to files (store/inputs/cache.py)
    source_root: str | None = None  # a walked folder: files a link leads out of it are error rows (not in the run id)

    def run_settings(self) -> RunSettings:
        """The run's settings alone (``None``: the run setting's default; an input normalisation of None is the
        model's own, resolved before a run)."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(RunSettings)}
        return RunSettings(**{k: v for k, v in shared.items() if v is not None})
