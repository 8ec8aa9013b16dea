"""Trainer: metrics against plain references, MURA class weights, bad manifests, one real epoch."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision.models import densenet169

from densecam_core import load_densenet169, model_fingerprint
from densecam_core.data.errors import ManifestError
from densecam_core.data.manifest import read_manifest
from densecam_core.data.synth import generate_mura
from densecam_core.model.classification import binary_metrics, image_and_study_metrics
from densecam_core.model.training import TrainConfig, initial_model, metrics_path_for, train
from densecam_core.model.training_data import RadiographDataset, body_part_weights, split_for_training
from jobs.cli.train import main as train_main


def auroc_by_pairs(labels, scores) -> float:
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_binary_metrics_match_plain_counts():
    labels = [1, 1, 1, 0, 0, 0, 0, 1]
    probs = [0.9, 0.4, 0.7, 0.2, 0.6, 0.1, 0.5, 0.8]
    got = binary_metrics(labels, probs)
    predicted = [int(p >= 0.5) for p in probs]
    tp = sum(1 for y, p in zip(labels, predicted) if y == 1 and p == 1)
    tn = sum(1 for y, p in zip(labels, predicted) if y == 0 and p == 0)
    n, positives = len(labels), sum(labels)
    observed = (tp + tn) / n
    expected = (positives * sum(predicted) + (n - positives) * (n - sum(predicted))) / n**2
    assert got["auroc"] == pytest.approx(auroc_by_pairs(labels, probs))
    assert got["sensitivity"] == pytest.approx(tp / positives)
    assert got["specificity"] == pytest.approx(tn / (n - positives))
    assert got["kappa"] == pytest.approx((observed - expected) / (1 - expected))
    assert math.isnan(binary_metrics([1, 1], [0.2, 0.9])["auroc"]), "undefined, not 0 or 1"


def test_study_probability_is_the_mean_of_its_views():
    frame = pd.DataFrame(
        {
            "study_id": ["a", "a", "b", "c", "c", "c"],
            "label": [1, 1, 0, 1, 1, 1],
            "prob": [0.2, 0.6, 0.45, 0.1, 0.2, 0.9],
            "body_part": "WRIST",
        }
    )
    study = image_and_study_metrics(frame)["study"]
    # study probabilities: a 0.4 (abnormal), b 0.45 (normal), c 0.4 (abnormal) -> b outranks both
    assert study["auroc"] == pytest.approx(auroc_by_pairs([1, 0, 1], [0.4, 0.45, 0.4]))
    assert study["count"] == 3


def test_class_weights_per_body_part_follow_the_mura_paper():
    train = pd.DataFrame({"label": [1, 0, 0, 0, 1, 1, 0], "body_part": ["WRIST"] * 4 + ["HAND"] * 2 + ["ELBOW"]})
    weights = body_part_weights(train)
    # WRIST: 1 abnormal, 3 normal -> w_abnormal = N/(A+N) = 3/4, w_normal = A/(A+N) = 1/4
    assert weights["WRIST"] == pytest.approx((0.25, 0.75))
    assert weights["HAND"] == weights["*"], "one class only: falls back to the overall weights"
    assert weights["*"] == pytest.approx((3 / 7, 4 / 7))


def frame_of(labels, splits) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": [f"i{k}.png" for k in range(len(labels))],
            "path": "x",
            "label": labels,
            "split": splits,
            "body_part": "WRIST",
        }
    )


@pytest.mark.parametrize(
    ("labels", "splits", "message"),
    [
        ([None, None, None, None], ["train", "train", "valid", "valid"], "no labels"),
        ([1, 1, 0, 1], ["train", "train", "valid", "valid"], "train split has only label 1"),
        ([1, 0, 1, 1], ["train", "train", "train", "train"], "no valid split"),
        ([1, 0, None, 1], ["train", "train", "valid", "valid"], "have no label"),
    ],
)
def test_bad_manifests_are_refused_with_the_reason(labels, splits, message):
    with pytest.raises(ManifestError, match=message):
        split_for_training(frame_of(labels, splits))


def test_cli_refuses_a_bad_manifest_before_training(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png"):
        (images / name).write_bytes(b"")
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": ["a.png", "b.png"], "label": [1, 0], "split": ["train", "train"]}).to_csv(
        manifest, index=False
    )
    assert (
        train_main([str(manifest), "--image-root", str(images), "--out", str(tmp_path / "m.pt"), "--no-progress"]) == 2
    )
    assert "no valid split" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()


@pytest.fixture(scope="module")
def tiny_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train-tree")
    generate_mura(root, images=40, seed=0, min_side=48, max_side=96, valid_fraction=0.3)
    return root


def test_augmentation_is_seeded_per_epoch(tiny_tree):
    frame = read_manifest(tiny_tree / "MURA-v1.1")
    weights = body_part_weights(split_for_training(frame)[0])
    data = RadiographDataset(frame, 64, "stretch", weights, augment=True, seed=3)
    first = data[0][0]
    assert torch.equal(first, data[0][0])
    data.epoch = 1
    assert not torch.equal(first, data[0][0])


@pytest.mark.slow
def test_one_epoch_writes_a_loadable_checkpoint_and_metrics(tiny_tree, tmp_path):
    frame = read_manifest(tiny_tree / "MURA-v1.1")
    broken = frame.index[frame["split"] == "train"][2]
    (Path(frame.loc[broken, "path"])).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    config = TrainConfig(size=64, epochs=1, batch_size=4, seed=1)
    result = train(frame, tmp_path / "model.pt", config, progress=False, log=lambda _: None)
    model = load_densenet169(tmp_path / "model.pt")
    assert model_fingerprint(model) == result.fingerprint
    assert result.fingerprint != model_fingerprint(initial_model(None, seed=1)), "the weights were trained"
    metrics = json.loads(metrics_path_for(tmp_path / "model.pt").read_text())
    assert metrics["fingerprint"] == result.fingerprint
    assert [e["epoch"] for e in metrics["history"]] == [1]
    for level in ("image", "study"):
        assert set(metrics["final"][level]) == {"auroc", "sensitivity", "specificity", "kappa", "count"}
        assert 0.0 <= metrics["final"][level]["auroc"] <= 1.0
    assert metrics["skipped_images"] == [
        {"image_id": frame.loc[broken, "image_id"], "reason": metrics["skipped_images"][0]["reason"]}
    ]
    assert set(metrics["class_weights"]) >= {"*"}
    again = train(frame, tmp_path / "again.pt", config, progress=False, log=lambda _: None)
    assert again.fingerprint == result.fingerprint, "same seed, same weights"


def test_init_from_an_imagenet_file_keeps_features_and_replaces_the_head(tmp_path):
    torch.manual_seed(0)
    imagenet = densenet169(weights=None)
    torch.save(imagenet.state_dict(), tmp_path / "imagenet.pth")
    model = initial_model(tmp_path / "imagenet.pth", seed=0)
    assert model.classifier.weight.shape == (1, 1664)
    assert torch.equal(model.features.conv0.weight, imagenet.features.conv0.weight)
    assert torch.equal(
        model.features.denseblock4.denselayer32.conv2.weight, imagenet.features.denseblock4.denselayer32.conv2.weight
    )


@pytest.mark.filterwarnings("ignore::densecam_core.model.precision.SlowPrecisionWarning")
@pytest.mark.slow
def test_bf16_autocast_trains_on_cpu(tiny_tree, tmp_path):
    frame = read_manifest(tiny_tree / "MURA-v1.1")
    result = train(
        frame,
        tmp_path / "bf16.pt",
        TrainConfig(size=32, epochs=1, batch_size=8, precision="bf16"),
        progress=False,
        log=lambda _: None,
    )
    model = load_densenet169(result.checkpoint)
    assert all(p.dtype == torch.float32 for p in model.parameters()), "autocast keeps fp32 master weights"
    assert np.isfinite(result.history[0]["train_loss"])


def test_images_without_a_study_count_as_their_own_study():
    frame = pd.DataFrame(
        {"image_id": ["x", "y", "z"], "study_id": [None, None, "s"], "label": [1, 0, 1], "prob": [0.9, 0.3, 0.2]}
    )
    study = image_and_study_metrics(frame)["study"]
    assert study["count"] == 3
    assert study["auroc"] == pytest.approx(auroc_by_pairs([1, 0, 1], [0.9, 0.3, 0.2]))


@pytest.mark.slow  # seconds of whole shards; the fast loop keeps a smaller test of this path
def test_train_command_writes_checkpoint_and_metrics(tiny_tree, tmp_path, capsys):
    out = tmp_path / "cli.pt"
    assert (
        train_main(
            [
                str(tiny_tree / "MURA-v1.1"),
                "--out",
                str(out),
                "--size",
                "32",
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--no-progress",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "study level: AUROC" in printed and str(out) in printed
    assert model_fingerprint(load_densenet169(out)) == json.loads(metrics_path_for(out).read_text())["fingerprint"]


def test_training_starts_from_any_family_member_and_refuses_others():
    from densecam_core.model.architecture import architecture_of
    from densecam_core.model.training import TrainConfig, initial_model

    for arch in ("densenet121", "densenet201"):
        model = initial_model(None, seed=0, arch=arch)
        assert architecture_of(model).architecture.name == arch and model.classifier.out_features == 1
    with pytest.raises(ValueError, match="architecture must be one of densenet121, densenet161"):
        TrainConfig(arch="resnet50").validate()
