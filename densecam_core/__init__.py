"""densecam_core: dataset-scale CAM / Grad-CAM explanations of DenseNet radiograph classifiers (121, 161, 169, 201).

Exports are resolved lazily so that ``densecam_core.open_store`` (notebooks) never imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_densenet": "densecam_core.model.checkpoint",
    "load_densenet169": "densecam_core.model.checkpoint",
    "ARCHITECTURES": "densecam_core.vocabulary",
    "taps_for": "densecam_core.vocabulary",
    "model_fingerprint": "densecam_core.model.checkpoint",
    "CheckpointError": "densecam_core.model.checkpoint",
    "Explainer": "densecam_core.cam.explainer",
    "Explanation": "densecam_core.cam.explainer",
    "METHODS": "densecam_core.vocabulary",
    "BLOCKS": "densecam_core.vocabulary",
    "PRECISIONS": "densecam_core.vocabulary",
    "BLOCK_TAPS": "densecam_core.vocabulary",
    "block_grid": "densecam_core.vocabulary",
    "read_manifest": "densecam_core.data.manifest",
    "ManifestError": "densecam_core.data.errors",
    "plan_shards": "densecam_core.store.layout",
    "decode_image": "densecam_core.data.decode",
    "read_image": "densecam_core.data.decode",
    "DICOM_WINDOWS": "densecam_core.data.dicom",
    "Identifiers": "densecam_core.data.pseudonyms",
    "load_identifiers": "densecam_core.data.pseudonyms",
    "in_clear": "densecam_core.data.pseudonyms",
    "preprocess": "densecam_core.data.preprocess",
    "ImageError": "densecam_core.data.decode",
    "Geometry": "densecam_core.data.geometry",
    "BatchLoader": "densecam_core.data.loader",
    "generate_mura": "densecam_core.data.synth",
    "open_store": "densecam_core.store.reader",
    "compare_runs": "densecam_core.analysis.comparison",
    "StoreError": "densecam_core.store.layout",
    "pointing_game": "densecam_core.analysis.pointing",
    "quality_table": "densecam_core.evaluation.quality",
    "verdicts": "densecam_core.evaluation.quality",
    "deletion_insertion": "densecam_core.evaluation.faithfulness",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'densecam_core' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
