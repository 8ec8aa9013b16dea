"""What an explain worker is told: the settings of the run (hashed into its id) and of the host it runs on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from densecam_core.data.decode import DEFAULT_MAX_PIXELS
from densecam_core.data.dicom import DEFAULT_DICOM_WINDOW
from densecam_core.vocabulary import DEFAULT_INPUT_NORM

NON_FINITE = "non-finite model output (NaN or inf in the logits or maps): check the checkpoint's weights"


@dataclass(frozen=True)
class ExplainSettings:
    methods: tuple[str, ...]
    size: int = 320
    resize: str = "stretch"
    precision: str = "fp32"
    targets: str | tuple[int, ...] | None = None
    batch_size: int | None = 8  # None: CPU_BATCH on a CPU; on a GPU the largest that fits (auto_batch_size)
    decode_threads: int = 2
    decode_processes: int = 0  # > 0: decode in a persistent pool of this many processes instead of threads
    input_cache: str = "off"  # readwrite | read | off
    max_image_bytes: int | None = None
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    concurrency: int = 1  # shards one worker processes at once (threads; GPU actors overlap input, compute, write)
    max_batch: int | None = None  # the run's shard size: a batch larger than a shard would only be padding
    cuda_graphs: bool = False  # GPU actors replay the pass as a CUDA graph (Explainer(cuda_graphs=True))
    dicom_window: str = DEFAULT_DICOM_WINDOW  # how DICOM sources are windowed (data/dicom.py)
    input_norm: str | None = None  # None: the model's own convention (vocabulary.INPUT_NORMS)
    cache_identity: str = "stat"  # how cached inputs are matched to files (store/inputs/cache.py)
    activation: str | None = None  # sigmoid | softmax; None: sigmoid for one output, else softmax
    class_names: tuple[str, ...] | None = None  # the classifier's outputs by name (--labels), recorded in run.json
    source_root: str | None = None  # a walked folder: files a link leads out of it are error rows (not in the run id)

    def for_run_id(self) -> dict[str, Any]:
        """The settings that change what a run holds. The DICOM window, the input normalisation, the
        activation and class names enter only when they are not the defaults, so the ids of runs made
        before them stay what they were."""
        targets = list(self.targets) if isinstance(self.targets, tuple) else self.targets
        settings: dict[str, Any] = {
            "methods": list(self.methods),
            "size": self.size,
            "resize": self.resize,
            "precision": self.precision,
            "targets": targets,
        }
        if self.dicom_window != DEFAULT_DICOM_WINDOW:
            settings["dicom_window"] = self.dicom_window
        if self.input_norm not in (None, DEFAULT_INPUT_NORM):
            settings["input_norm"] = self.input_norm
        if self.activation is not None:
            settings["activation"] = self.activation
        if self.class_names is not None:
            settings["class_names"] = list(self.class_names)
        return settings
