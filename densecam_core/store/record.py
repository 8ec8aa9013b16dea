"""A run's ``run.json`` read once into a typed record, and the settings that make a run what it is.

Why one place: every reader of a run (the store, the evaluation, the audit, exports, the report page) asks the same
questions of its metadata; the answers for runs written before a field existed (no ``architecture``: MURA's
DenseNet169; no ``dicom_window``: the file's first window) are given here once, not at each reading end.
``RunSettings`` declares what a run id hashes. No torch import.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from densecam_core.store.layout import StoreError, run_meta_problem
from densecam_core.vocabulary import DEFAULT_ARCHITECTURE, DEFAULT_DICOM_WINDOW, DEFAULT_INPUT_NORM

_ONLY_WHEN_SET = {"only_when_set": True}
"""A setting added after runs existed: recorded (and hashed into the run id) only when it is not its default, so
the ids of runs made before it stay what they were."""


@dataclass(frozen=True)
class RunSettings:
    """What a run explains with: two runs of one model with other settings are other runs (other ids)."""

    methods: tuple[str, ...]
    size: int = 320
    resize: str = "stretch"
    precision: str = "fp32"
    targets: str | tuple[int, ...] | None = None  # None: the one output, or each image's predicted class
    dicom_window: str = field(default=DEFAULT_DICOM_WINDOW, metadata=_ONLY_WHEN_SET)
    input_norm: str = field(default=DEFAULT_INPUT_NORM, metadata=_ONLY_WHEN_SET)
    activation: str | None = field(default=None, metadata=_ONLY_WHEN_SET)  # None: sigmoid for one output
    class_names: tuple[str, ...] | None = field(default=None, metadata=_ONLY_WHEN_SET)

    def recorded(self) -> dict[str, Any]:
        """``run.json``'s ``settings`` and what the run id hashes (JSON types: lists, not tuples)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("only_when_set") and (value is None or value == f.default):
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_recorded(cls, settings: Mapping[str, Any]) -> RunSettings:
        """The settings a ``run.json`` holds (fields it lacks take their defaults; unknown ones are left out)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items() if k in known}
        if values.get("input_norm") is None:
            values.pop("input_norm", None)
        return cls(**values)  # type: ignore[arg-type]

    @classmethod
    def listed(cls) -> tuple[str, ...]:
        """The settings every run records: the columns ``HeatmapStore.runs`` lists."""
        return tuple(f.name for f in dataclasses.fields(cls) if not f.metadata.get("only_when_set"))


def run_id_for(fingerprint: str, settings: RunSettings) -> str:
    """Deterministic: the same weights and explanation settings always name the same run."""
    key = {"fingerprint": fingerprint, **settings.recorded()}
    return "run-" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunRecord:
    """``run.json``, typed: what a run is, how its arrays are shaped and what it recorded of its sources."""

    run_id: str
    model_fingerprint: str
    created: str
    shard_size: int
    arrays: Mapping[str, tuple[int, ...]]
    settings: RunSettings
    format_version: int = 1
    checkpoint: str = ""
    architecture: str = DEFAULT_ARCHITECTURE  # runs before other architectures explained MURA's DenseNet169
    num_classes: int = 1
    num_targets: int = 1
    identifiers: Mapping[str, Any] = field(default_factory=dict)  # DICOM sources: pseudonymised or clear, key id
    manifest_source: str = ""
    counts: Mapping[str, Any] = field(default_factory=dict)  # what the last job or compaction counted
    index_extra_types: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, meta: Mapping[str, Any]) -> RunRecord:
        """The record of a ``run.json``; a damaged one is named (``StoreError``), never half read."""
        problem = run_meta_problem(dict(meta))
        if problem:
            raise StoreError(f"run {meta.get('run_id', '?')}: {problem}")
        return cls(
            run_id=str(meta.get("run_id", "")),
            model_fingerprint=str(meta["model_fingerprint"]),
            created=str(meta["created"]),
            shard_size=int(meta["shard_size"]),
            arrays={name: tuple(shape) for name, shape in meta["arrays"].items()},
            settings=RunSettings.from_recorded(meta["settings"]),
            format_version=int(meta.get("format_version", 1)),
            checkpoint=str(meta.get("checkpoint") or ""),
            architecture=str(meta.get("architecture") or DEFAULT_ARCHITECTURE),
            num_classes=int(meta.get("num_classes", 1)),
            num_targets=int(meta.get("num_targets", 1)),
            identifiers=dict(meta.get("identifiers") or {}),
            manifest_source=str(meta.get("manifest_source") or ""),
            counts=dict(meta.get("counts") or {}),
            index_extra_types=dict(meta.get("index_extra_types") or {}),
        )
