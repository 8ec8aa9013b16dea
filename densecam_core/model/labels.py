"""The names of a classifier's outputs, and the classes a job explains chosen by name.

No torch import: the driver resolves names before any model work, and tests read the lists without a model.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence

from densecam_core import fileio

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


MAX_LABELS_BYTES = 16 * 1024 * 1024
"""A labels file names a classifier's outputs: a few KB. More is a wrong file, refused before it is read."""


def read_labels(path: str | os.PathLike, *, expected: int | None = None) -> tuple[str, ...]:
    """One class name per line, in the classifier's output order (blank lines and ``#`` comments skipped).

    ``expected``: the classifier's output count, compared first (a wrong file is refused without further
    work); repeated names are found in one pass. A name ``--target-names`` could not select (one with a
    comma) is refused here, where the file can still be fixed."""
    name = os.fspath(path)
    try:
        text = fileio.read_regular_file(name, max_bytes=MAX_LABELS_BYTES).decode("utf-8")
    except fileio.FileTooLargeError:
        raise LabelError(
            f"the labels file {name!r} is larger than {MAX_LABELS_BYTES // (1024 * 1024)} MB: it should name one "
            "class per line"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelError(f"cannot read the labels file {name!r}: {exc}") from None
    names = tuple(line for line in (raw.strip() for raw in text.splitlines()) if line and not line.startswith("#"))
    if not names:
        raise LabelError(f"the labels file {name!r} names no classes: write one name per line")
    if expected is not None and len(names) != expected:
        raise LabelError(_count_mismatch(expected, names))
    repeated = sorted(label for label, count in Counter(names).items() if count > 1)
    if repeated:
        raise LabelError(f"the labels file {name!r} names {repeated[:10]} more than once")
    with_comma = [label for label in names if "," in label]
    if with_comma:
        raise LabelError(
            f"the labels file {name!r} names classes with a comma ({with_comma[:3]}), which `target_names` "
            "(comma-separated) could not select: rename them"
        )
    return names


def _count_mismatch(num_classes: int, labels: Sequence[str]) -> str:
    shown = ", ".join(list(labels)[:4]) + (", ..." if len(labels) > 4 else "")
    return (
        f"the checkpoint's classifier has {num_classes} outputs but the labels name {len(labels)} classes "
        f"({shown}): pass the labels of this model"
    )


def labels_for(num_classes: int, input_norm: str, labels: Sequence[str] | None) -> tuple[str, ...] | None:
    """The model's class names: the labels given (as many as its outputs), else torchxrayvision's for an
    18-output model that reads its input convention, else none."""
    if labels is not None:
        if len(labels) != num_classes:
            raise LabelError(_count_mismatch(num_classes, labels))
        return tuple(labels)
    if input_norm == "xrv" and num_classes == len(XRV_PATHOLOGIES):
        return XRV_PATHOLOGIES
    return None


def targets_from_names(names: Sequence[str], labels: Sequence[str] | None) -> tuple[int, ...]:
    """The class ids of ``names``; unknown names are refused listing the known ones."""
    if labels is None:
        raise LabelError("`target_names` needs the model's class names: pass `labels` FILE (one name per line)")
    unknown = [name for name in names if name not in labels]
    if unknown:
        raise LabelError(f"unknown class names {unknown}; this model's classes are: {', '.join(labels)}")
    return tuple(list(labels).index(name) for name in names)


def default_activation(num_classes: int, input_norm: str) -> str:
    """How logits become probabilities unless asked: one output, or torchxrayvision's multi-label outputs, are
    sigmoids; several outputs of any other model are taken as one softmax over exclusive classes."""
    return "sigmoid" if num_classes == 1 or input_norm == "xrv" else "softmax"
