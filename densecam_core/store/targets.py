"""Which class each position of a run's ``target`` axis explains, and the classes' names (from run.json).

Runs with fixed targets (one output, ``--targets 0,3``, ``--targets all``, ``--target-names``) explain the
same classes for every image, so a class picks one position of every map; runs that explain each image's
predicted class have no such position (``Run.targets`` says which class each image's map explains).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from densecam_core.store.layout import StoreError
from densecam_core.store.record import RunRecord


def class_names(record: RunRecord) -> list[str] | None:
    """The classifier's outputs by name, when the run was given them (``labels``, torchxrayvision's)."""
    names = record.settings.class_names
    return [str(name) for name in names] if names is not None else None


def fixed_classes(record: RunRecord) -> list[int] | None:
    """The class id at each target position, or None where it differs per image (the predicted class)."""
    targets, count = record.settings.targets, record.num_classes
    if targets == "all":
        return list(range(count))
    if isinstance(targets, tuple):
        return [int(t) for t in targets]
    return [0] if targets is None and count == 1 else None


def target_position(record: RunRecord, target: int | str) -> int:
    """The position along the ``target`` axis of a class name, or of a position given as an int (checked)."""
    run, fixed, names = record.run_id, fixed_classes(record), class_names(record)
    if isinstance(target, str):
        if fixed is None:
            raise StoreError(
                f"run {run} explains each image's predicted class, so no target position holds {target!r}: "
                "read Run.targets() for the class of each image's maps"
            )
        if names is None:
            raise StoreError(f"run {run} has no class names (explain with `labels` FILE); select targets by position")
        if target not in names:
            raise StoreError(f"run {run} has no class {target!r}; its classes are: {', '.join(names)}")
        if names.index(target) not in fixed:
            explained = ", ".join(names[c] for c in fixed)
            raise StoreError(f"run {run} does not explain {target!r}; it explains: {explained}")
        return fixed.index(names.index(target))
    count = len(fixed) if fixed is not None else 1
    if not 0 <= int(target) < count:
        raise StoreError(f"run {run} has {count} target position(s); got target={target}")
    return int(target)


def target_labels(record: RunRecord) -> list[Any] | None:
    """Labels for xarray's ``target`` coordinate: the class names of the fixed targets, else their ids."""
    fixed, names = fixed_classes(record), class_names(record)
    if fixed is None:
        return None
    return [names[c] for c in fixed] if names is not None else fixed


def with_target_probability(index: pd.DataFrame, record: RunRecord, target: int | str) -> pd.DataFrame:
    """The index with ``prob`` that of ``target`` (a class name, or a target position): ``probs`` holds every
    explained class's probability where a run explains several; error rows keep their missing one."""
    position = target_position(record, target)
    if position == 0 or "probs" not in index.columns:
        return index
    return index.assign(prob=[float(v[position]) if v is not None else float("nan") for v in index["probs"]])
