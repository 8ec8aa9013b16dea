"""Class names: read from a labels file, torchxrayvision's by default, and the classes chosen by name."""

from __future__ import annotations

import pytest

from densecam_core.model.labels import (
    XRV_PATHOLOGIES,
    LabelError,
    default_activation,
    labels_for,
    read_labels,
    targets_from_names,
)
from densecam_core.store.layout import StoreError
from densecam_core.store.record import RunRecord
from densecam_core.store.targets import fixed_classes, target_labels, target_position


def test_a_labels_file_is_one_name_per_line_and_bad_files_are_named(tmp_path):
    good = tmp_path / "labels.txt"
    good.write_text("# findings\nAtelectasis\n\n Lung Lesion \nEffusion\n")
    assert read_labels(good) == ("Atelectasis", "Lung Lesion", "Effusion")
    twice = tmp_path / "twice.txt"
    twice.write_text("Mass\nMass\n")
    with pytest.raises(LabelError, match=r"names \['Mass'\] more than once"):
        read_labels(twice)
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(LabelError, match="names no classes"):
        read_labels(tmp_path / "empty.txt")
    with pytest.raises(LabelError, match="cannot read the labels file"):
        read_labels(tmp_path / "missing.txt")


def test_torchxrayvisions_models_have_their_pathologies_and_sigmoids_by_default():
    assert len(XRV_PATHOLOGIES) == 18 and XRV_PATHOLOGIES[7] == "Effusion"
    assert labels_for(18, "xrv", None) == XRV_PATHOLOGIES
    assert labels_for(18, "imagenet", None) is None and labels_for(14, "xrv", None) is None
    assert default_activation(18, "xrv") == "sigmoid" and default_activation(1, "imagenet") == "sigmoid"
    assert default_activation(3, "imagenet") == "softmax"
    assert targets_from_names(["Effusion", "Atelectasis"], XRV_PATHOLOGIES) == (7, 0)


def _record(run_id: str, settings: dict) -> RunRecord:
    """The record of a run.json as a four-output model's run writes it."""
    meta = {"run_id": run_id, "num_classes": 4, "model_fingerprint": "f" * 64, "created": "now", "shard_size": 4}
    return RunRecord.parse({**meta, "arrays": {}, "settings": {"methods": ["gradcam"], **settings}})


def test_positions_follow_the_explained_classes():
    meta = _record("run-x", {"targets": [3, 1], "class_names": list("abcd")})
    assert fixed_classes(meta) == [3, 1] and target_labels(meta) == ["d", "b"]
    assert target_position(meta, "b") == 1 and target_position(meta, 0) == 0
    with pytest.raises(StoreError, match="does not explain 'a'; it explains: d, b"):
        target_position(meta, "a")
    with pytest.raises(StoreError, match="has 2 target position"):
        target_position(meta, 2)
    predicted = _record("run-y", {"targets": "predicted"})
    assert fixed_classes(predicted) is None and target_labels(predicted) is None
    with pytest.raises(StoreError, match="predicted class"):
        target_position(predicted, "b")
    assert target_position(predicted, 0) == 0
