"""The names of a classifier's outputs, and the classes a job explains chosen by name.

No torch import: the driver resolves names before any model work, and tests read the lists without a model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

XRV_PATHOLOGIES: tuple[str, ...] = (
    "Atelectasis",
    "Consolidation",
    "Infiltration",
    "Pneumothorax",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Effusion",
    "Pneumonia",
    "Pleural_Thickening",
    "Cardiomegaly",
    "Nodule",
    "Mass",
    "Hernia",
    "Lung Lesion",
    "Fracture",
    "Lung Opacity",
    "Enlarged Cardiomediastinum",
)
"""torchxrayvision's 18 outputs in order (its ``default_pathologies``): every one of its DenseNet121
checkpoints has these outputs, whichever of them its training data labelled."""

ACTIVATIONS = ("sigmoid", "softmax")


class LabelError(ValueError):
    """Class names that cannot be used as given; the message names what was found and what is known."""


def read_labels(path: str | os.PathLike) -> tuple[str, ...]:
    """One class name per line, in the classifier's output order (blank lines and ``#`` comments skipped)."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = [line.strip() for line in handle]
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelError(f"cannot read the labels file {os.fspath(path)!r}: {exc}") from None
    names = tuple(line for line in lines if line and not line.startswith("#"))
    if not names:
        raise LabelError(f"the labels file {os.fspath(path)!r} names no classes: write one name per line")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise LabelError(f"the labels file {os.fspath(path)!r} names {repeated} more than once")
    return names


def labels_for(num_classes: int, input_norm: str, labels: Sequence[str] | None) -> tuple[str, ...] | None:
    """The model's class names: the labels given (as many as its outputs), else torchxrayvision's for an
    18-output model that reads its input convention, else none."""
    if labels is not None:
        if len(labels) != num_classes:
            raise LabelError(
                f"the checkpoint's classifier has {num_classes} outputs but the labels name {len(labels)} classes "
                f"({', '.join(list(labels)[:4])}{', ...' if len(labels) > 4 else ''}): pass the labels of this model"
            )
        return tuple(labels)
    if input_norm == "xrv" and num_classes == len(XRV_PATHOLOGIES):
        return XRV_PATHOLOGIES
    return None


def targets_from_names(names: Sequence[str], labels: Sequence[str] | None) -> tuple[int, ...]:
    """The class ids of ``names``; unknown names are refused listing the known ones."""
    if labels is None:
        raise LabelError("--target-names needs the model's class names: pass --labels FILE (one name per line)")
    unknown = [name for name in names if name not in labels]
    if unknown:
        raise LabelError(f"unknown class names {unknown}; this model's classes are: {', '.join(labels)}")
    return tuple(list(labels).index(name) for name in names)


def default_activation(num_classes: int, input_norm: str) -> str:
    """How logits become probabilities unless asked: one output, or torchxrayvision's multi-label outputs, are
    sigmoids; several outputs of any other model are taken as one softmax over exclusive classes."""
    return "sigmoid" if num_classes == 1 or input_norm == "xrv" else "softmax"
