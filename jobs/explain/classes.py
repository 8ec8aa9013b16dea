"""Which of a model's outputs the job explains, their names, and how their probabilities are read."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from densecam_core.model.conventions import default_input_norm
from densecam_core.model.labels import default_activation, labels_for, read_labels, targets_from_names
from jobs.explain.config import ExplainConfig


@dataclass(frozen=True)
class Classes:
    """The explained classes as the Explainer takes them, the model's class names, the activation."""

    targets: str | tuple[int, ...] | None
    names: tuple[str, ...] | None
    activation: str
    legacy_activation: str  # what runs before --activation used: their ids leave it out

    @property
    def recorded_activation(self) -> str | None:
        """The activation as the run id records it: only when it is not the one earlier runs implied."""
        return None if self.activation == self.legacy_activation else self.activation


def resolve_classes(config: ExplainConfig, model: torch.nn.Module) -> Classes:
    """--labels, --target-names and --activation checked against the model's outputs, before any work."""
    count = int(model.classifier.out_features)
    norm = config.input_norm or default_input_norm(int(model.features.conv0.in_channels))
    names = labels_for(count, norm, read_labels(config.labels, expected=count) if config.labels else None)
    targets = targets_from_names(config.target_names, names) if config.target_names else config.targets
    activation = config.activation or default_activation(count, norm)
    classes = Classes(targets, names, activation, "sigmoid" if count == 1 else "softmax")
    if count > 1:
        how = "" if config.activation else " (--activation to choose)"
        named = f"; class names from {config.labels or 'torchxrayvision'}" if names and count > 1 else ""
        print(f"probabilities: {activation} over the {count} outputs{how}{named}", file=sys.stderr)
    return classes
