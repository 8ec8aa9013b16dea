"""Checkpoint layouts, strict loading, safe unpickling and weight fingerprints."""

from __future__ import annotations

import copy
import io
import re
from pathlib import Path

import pytest
import torch
import torchvision

from densecam_core import CheckpointError, load_densenet169, model_fingerprint


def to_legacy(state: dict) -> dict:
    """Old torchvision keys: denselayer1.norm1.weight -> denselayer1.norm.1.weight."""
    return {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v for k, v in state.items()}


def to_mura_layout(state: dict) -> dict:
    """The original MURA interpretability code: features_first + features.<stage>.<name>."""
    out = {}
    for key, value in state.items():
        key = re.sub(r"^features\.(conv0|norm0)\.", r"features_first.\1.", key)
        match = re.match(r"^features\.(denseblock|transition)(\d)\.", key)
        if match:
            key = f"features.{int(match.group(2)) - 1}." + key[len("features.") :]
        key = re.sub(r"^features\.norm5\.", "features.3.norm5.", key)
        out[key] = value
    return out


def layouts(state: dict) -> dict[str, object]:
    no_counters = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    return {
        "torchvision": state,
        "nested state_dict": {"state_dict": state, "epoch": 3},
        "nested model + module.": {"model": {"module." + k: v for k, v in state.items()}},
        "legacy keys": to_legacy(no_counters),
        "mura layout": to_mura_layout(no_counters),
        "mura layout + DataParallel": {"state_dict": {"module." + k: v for k, v in to_mura_layout(state).items()}},
    }


@pytest.mark.slow
def test_every_layout_gives_identical_logits_and_fingerprint(base_model, tmp_path: Path):
    state = base_model.state_dict()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = base_model(x)
    fingerprint = model_fingerprint(base_model)
    for name, blob in layouts(state).items():
        path = tmp_path / f"{name.replace(' ', '_')}.pt"
        torch.save(blob, path)
        loaded = load_densenet169(path)
        with torch.no_grad():
            assert torch.equal(loaded(x), expected), name
        assert model_fingerprint(loaded) == fingerprint, name
        assert (
            model_fingerprint(torch.load(path, weights_only=True) if name == "torchvision" else loaded) == fingerprint
        )
    sample = to_mura_layout(state)
    assert any(k.startswith("features_first.conv0") for k in sample)
    assert any(k.startswith("features.3.denseblock4.") for k in sample)
    assert any(".norm.1." in k for k in to_legacy(state))


def test_fingerprint_changes_with_any_weight_and_ignores_batch_counters(base_model):
    fingerprint = model_fingerprint(base_model)
    changed = copy.deepcopy(base_model)
    with torch.no_grad():
        changed.features.denseblock3.denselayer7.conv2.weight[0, 0, 0, 0] += 1e-6
    assert model_fingerprint(changed) != fingerprint
    stats = copy.deepcopy(base_model)
    stats.features.norm5.running_var[3] += 1e-3
    assert model_fingerprint(stats) != fingerprint
    counters = copy.deepcopy(base_model)
    counters.features.norm5.num_batches_tracked += 100
    assert model_fingerprint(counters) == fingerprint


@pytest.mark.slow
def test_num_classes_from_checkpoint_and_seeded_init(tmp_path: Path):
    three = load_densenet169(num_classes=3, seed=5)
    torch.save(three.state_dict(), tmp_path / "three.pt")
    assert load_densenet169(tmp_path / "three.pt").classifier.out_features == 3
    assert model_fingerprint(load_densenet169(seed=5)) == model_fingerprint(load_densenet169(seed=5))
    assert model_fingerprint(load_densenet169(seed=5)) != model_fingerprint(load_densenet169(seed=6))
    assert not load_densenet169().training


def test_other_architecture_is_named_with_its_keys(tmp_path: Path):
    path = tmp_path / "resnet.pt"
    torch.save(torchvision.models.resnet18(num_classes=1).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"resnet\.pt.*not a DenseNet classifier"):
        load_densenet169(path)
    dn121 = tmp_path / "densenet121.pt"
    torch.save(torchvision.models.densenet121(num_classes=1).state_dict(), dn121)
    with pytest.raises(CheckpointError, match=r"densenet121\.pt' is a DenseNet121, not a DenseNet169"):
        load_densenet169(dn121)


def test_class_count_conflict_is_a_shape_conflict(base_model, tmp_path: Path):
    path = tmp_path / "one.pt"
    torch.save(base_model.state_dict(), path)
    with pytest.raises(
        CheckpointError, match=r"shape conflicts: .*classifier.weight: checkpoint \(1, 1664\) vs model \(2, 1664\)"
    ):
        load_densenet169(path, num_classes=2)


def test_truncated_empty_and_foreign_files(base_model, tmp_path: Path):
    buffer = io.BytesIO()
    torch.save(base_model.state_dict(), buffer)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    text = tmp_path / "notes.txt"
    text.write_text("this is not a checkpoint\n")
    for path, pattern in [
        (truncated, "truncated.pt"),
        (empty, "empty"),
        (text, "notes.txt"),
        (tmp_path / "absent.pt", "no such file"),
    ]:
        with pytest.raises(CheckpointError, match=pattern):
            load_densenet169(path)


class Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_that_runs_code_is_refused(tmp_path: Path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"classifier.weight": torch.zeros(1, 1664), "payload": Exploit()}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pt.*weights_only"):
        load_densenet169(path)
    assert "must never run" not in capsys.readouterr().out


def test_non_finite_weights_are_refused_before_any_work(tmp_path):
    state = load_densenet169().state_dict()
    state["features.denseblock2.denselayer3.conv1.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "diverged.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"diverged.pt.*NaN or infinite.*denselayer3.conv1.weight"):
        load_densenet169(path)
