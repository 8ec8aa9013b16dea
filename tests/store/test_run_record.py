"""run.json read once into a typed record: the defaults of runs written before a field existed, run ids unchanged
(a run written by an earlier version keeps its id), what a run id hashes, and a damaged run.json named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from densecam_core.store.layout import StoreError
from densecam_core.store.record import RunRecord, RunSettings, run_id_for

FIXTURE = Path(__file__).parents[1] / "fixtures" / "store-v1"


def test_a_run_written_by_an_earlier_version_keeps_its_id_and_gets_the_defaults():
    (path,) = FIXTURE.glob("runs/*/run.json")
    meta = json.loads(path.read_text())
    record = RunRecord.parse(meta)
    assert run_id_for(record.model_fingerprint, record.settings) == meta["run_id"] == record.run_id
    assert (record.architecture, record.settings.dicom_window, record.settings.input_norm) == (
        "densenet169",
        "first",
        "imagenet",
    )
    assert record.settings.methods == ("gradcam",) and record.arrays["gradcam/block1"] == (1, 8, 8)
    assert record.identifiers == {} and record.counts == {} and record.format_version == 1


def test_settings_added_later_enter_the_id_only_when_not_their_default():
    plain = RunSettings(("gradcam",), 320)
    assert plain.recorded() == {
        "methods": ["gradcam"],
        "size": 320,
        "resize": "stretch",
        "precision": "fp32",
        "targets": None,
    }
    windowed = RunSettings(("gradcam",), 320, dicom_window="percentile", class_names=("a", "b"))
    assert windowed.recorded()["dicom_window"] == "percentile" and windowed.recorded()["class_names"] == ["a", "b"]
    assert RunSettings.from_recorded(windowed.recorded()) == windowed
    assert run_id_for("f" * 64, plain) != run_id_for("f" * 64, windowed)
    assert RunSettings.listed() == ("methods", "size", "resize", "precision", "targets")


def test_a_damaged_run_json_is_named_not_half_read():
    (path,) = FIXTURE.glob("runs/*/run.json")
    meta = json.loads(path.read_text())
    with pytest.raises(StoreError, match="shard_size"):
        RunRecord.parse({**meta, "shard_size": "four"})
    with pytest.raises(StoreError, match="array names"):
        RunRecord.parse({**meta, "arrays": {"../escape/block1": [1, 2, 2]}})
