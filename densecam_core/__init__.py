"""densecam_core: dataset-scale CAM / Grad-CAM explanations of DenseNet169 radiograph classifiers.

Exports are resolved lazily so that ``densecam_core.open_store`` (notebooks) never imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_densenet169": "densecam_core.model",
    "model_fingerprint": "densecam_core.model",
    "CheckpointError": "densecam_core.model",
    "Explainer": "densecam_core.explain",
    "Explanation": "densecam_core.explain",
    "METHODS": "densecam_core.spec",
    "BLOCKS": "densecam_core.spec",
    "PRECISIONS": "densecam_core.spec",
    "BLOCK_TAPS": "densecam_core.spec",
    "block_grid": "densecam_core.spec",
    "read_manifest": "densecam_core.manifest",
    "ManifestError": "densecam_core.manifest",
    "plan_shards": "densecam_core.store.format",
    "decode_image": "densecam_core.images",
    "read_image": "densecam_core.images",
    "DICOM_WINDOWS": "densecam_core.data.dicom",
    "Identifiers": "densecam_core.data.pseudonyms",
    "load_identifiers": "densecam_core.data.pseudonyms",
    "in_clear": "densecam_core.data.pseudonyms",
    "preprocess": "densecam_core.images",
    "ImageError": "densecam_core.images",
    "Geometry": "densecam_core.geometry",
    "BatchLoader": "densecam_core.loader",
    "generate_mura": "densecam_core.synth",
    "open_store": "densecam_core.store.reader",
    "compare_runs": "densecam_core.compare",
    "StoreError": "densecam_core.store.format",
    "pointing_game": "densecam_core.evaluate",
    "quality_table": "densecam_core.quality_report",
    "verdicts": "densecam_core.quality_report",
    "deletion_insertion": "densecam_core.quality",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'densecam_core' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
