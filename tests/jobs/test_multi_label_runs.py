"""Multi-label runs: a CheXNet-shaped DenseNet121 (14 sigmoid outputs, CheXNet's checkpoint layout) with
its class names, every finding explained in one pass, selected by name in the store, scored and compared
per finding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision

from densecam_core import generate_mura, open_store, read_manifest
from densecam_core.analysis.pointing import pointing_game
from densecam_core.data.preprocess import load_model_input
from densecam_core.evaluation.faithfulness import deletion_insertion
from densecam_core.model.checkpoint import model_fingerprint, state_dict_bytes
from densecam_core.store.layout import EVALUATION_JSON, METRICS_DIR
from densecam_core.store.writer import RunSpec, RunWriter
from densecam_core.testing import randomise_batchnorm
from densecam_core.vocabulary import block_grid
from jobs.explain.config import ExplainConfig
from jobs.explain.job import prepare
from jobs.explain.settings import ExplainSettings
from jobs.explain.worker import ExplainWorker
from jobs.runtime.skeleton import shard_work

SIZE = 64
CHEXNET = [
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
]


def chexnet_checkpoint(folder: Path) -> tuple[torch.nn.Module, Path, Path]:
    """A random DenseNet121 with 14 outputs saved as CheXNet's code saves it, and its labels file."""
    torch.manual_seed(3)
    model = randomise_batchnorm(torchvision.models.densenet121(weights=None, num_classes=14), seed=4).eval()
    state = {}
    for key, value in model.state_dict().items():
        key = key.replace("classifier.", "classifier.0.")
        state[f"module.densenet121.{key}"] = value
    checkpoint, labels = folder / "chexnet.pt", folder / "labels.txt"
    torch.save({"state_dict": state}, checkpoint)
    labels.write_text("# CheXNet's findings, in output order\n" + "\n".join(CHEXNET) + "\n")
    return model, checkpoint, labels


@pytest.fixture()
def chest(tmp_path):
    tree = tmp_path / "tree"
    generate_mura(tree, images=6, seed=2, min_side=48, max_side=64)
    model, checkpoint, labels = chexnet_checkpoint(tmp_path)
    return tmp_path, tree, model, checkpoint, labels


def _prepared(chest, **overrides):
    root, tree, _, checkpoint, labels = chest
    base = dict(
        manifest=str(tree),
        store=str(root / "store"),
        checkpoint=str(checkpoint),
        labels=str(labels),
        size=SIZE,
        shard_size=4,
        methods=("gradcam", "hirescam"),
        progress=False,
    )
    return prepare(ExplainConfig(**{**base, **overrides}))


def test_names_choose_the_targets_and_are_recorded_with_the_activation(chest, capsys):
    job = _prepared(chest, target_names=("Effusion", "Mass"), activation="sigmoid")
    assert job.settings.targets == (2, 4) and job.spec.num_targets == 2 and job.spec.architecture == "densenet121"
    assert job.spec.settings.class_names == tuple(CHEXNET) and job.spec.settings.activation == "sigmoid"
    assert "probabilities: sigmoid over the 14 outputs" in capsys.readouterr().err
    names_dropped = _prepared(chest, targets=(2, 4), activation="sigmoid", labels=None)
    assert names_dropped.spec.run_id != job.spec.run_id  # the names are part of what the run holds


def test_bad_names_and_labels_are_refused_before_any_work(chest, tmp_path):
    root = chest[0]
    with pytest.raises(ValueError, match=r"unknown class names \['Effusoin'\]; this model's classes are: Atelectasis"):
        _prepared(chest, target_names=("Effusoin",))
    short = tmp_path / "short.txt"
    short.write_text("Atelectasis\nCardiomegaly\n")
    with pytest.raises(ValueError, match=r"classifier has 14 outputs but the labels name 2 classes"):
        _prepared(chest, labels=str(short))
    with pytest.raises(ValueError, match="needs the model's class names"):
        _prepared(chest, labels=None, target_names=("Effusion",))
    with pytest.raises(ValueError, match="not both"):
        _prepared(chest, targets=(1,), target_names=("Effusion",))
    assert not (root / "store" / "runs").exists()


def _explain(chest, targets, store_name: str) -> tuple[Path, str]:
    """The job's worker (no Ray) explains the tree with ``targets`` into its own store; returns it and the run id."""
    root, tree, model, _, _ = chest
    settings = ExplainSettings(
        methods=("gradcam", "hirescam"),
        size=SIZE,
        batch_size=4,
        targets=targets,
        activation="sigmoid",
        class_names=tuple(CHEXNET),
    )
    count = 14 if targets == "all" else len(targets)
    spec = RunSpec(
        model_fingerprint(model),
        "chexnet.pt",
        settings.run_settings(),
        14,
        count,
        block_grid(SIZE),
        4,
        architecture="densenet121",
    )
    store = root / store_name
    writer = RunWriter(str(store), spec)
    writer.create_or_open("test")
    worker = ExplainWorker(state_dict_bytes(model), settings, warm_up=False, store_url=str(store))
    for shard, rows in shard_work(writer.plan(read_manifest(tree)), 4).todo:
        worker.process_shard(writer.run_url, spec.run_id, shard, 4, rows)
    return store, spec.run_id


@pytest.mark.slow  # whole shards of a 14-output DenseNet121; the preparation above stays fast
def test_every_finding_in_one_pass_is_stored_per_target_and_read_back_by_name(chest):
    store, run_id = _explain(chest, "all", "store")
    run = open_store(str(store)).run(run_id)
    index = run.index.sort_values("row")
    ids = index["image_id"].tolist()
    assert run.class_names == CHEXNET and (index["status"] == "ok").all()
    logits = run.maps("logits", image_ids=ids)
    probs = np.stack(index["probs"].to_numpy())
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits)), rtol=1e-5)  # sigmoid per finding, not softmax
    np.testing.assert_allclose(index["prob"], probs[:, 0], rtol=0)
    everything = run.maps("gradcam", 3, image_ids=ids)
    assert everything.shape[:2] == (6, 14)
    np.testing.assert_array_equal(run.maps("gradcam", 3, image_ids=ids, target="Effusion"), everything[:, 2])
    dataset = run.to_xarray(methods=["gradcam"], blocks=[3])
    assert list(dataset["target"].values) == CHEXNET
    np.testing.assert_array_equal(
        dataset["gradcam_block3"].sel(target="Mass", image=ids).values, everything[:, CHEXNET.index("Mass")]
    )
    with pytest.raises(ValueError, match="has no class 'Effusoin'; its classes are: Atelectasis"):
        run.maps("gradcam", 3, image_ids=ids, target="Effusoin")


@pytest.mark.slow
def test_fewer_targets_give_the_same_maps_and_compare_and_point_per_finding(chest):
    everything, run_all = _explain(chest, "all", "store")
    two, run_two = _explain(chest, (2, 4), "store-two")
    a, b = open_store(str(everything)).run(run_all), open_store(str(two)).run(run_two)
    ids = a.index["image_id"].tolist()
    for finding in ("Effusion", "Mass"):
        np.testing.assert_allclose(
            b.maps("hirescam", 2, image_ids=ids, target=finding),
            a.maps("hirescam", 2, image_ids=ids, target=finding),
            rtol=1e-4,
            atol=1e-6,
        )
    with pytest.raises(ValueError, match="does not explain 'Edema'; it explains: Effusion, Mass"):
        b.maps("gradcam", 4, image_ids=ids, target="Edema")
    from densecam_core import compare_runs

    changes = compare_runs(a, b, "gradcam", 4, target="Mass")
    assert len(changes) == 6 and (changes["map_correlation"].dropna() > 0.9999).all()
    np.testing.assert_allclose(
        changes["prob_a"], np.stack(a.index.set_index("image_id").loc[changes["image_id"], "probs"])[:, 4], rtol=1e-6
    )
    boxes = pd.DataFrame(
        {"image_id": ids[:2] * 2, "x0": 0, "y0": 0, "x1": 8, "y1": 8, "target": ["Mass", "Mass", "Edema", "Edema"]}
    )
    mass = pointing_game(a, boxes, methods=["gradcam"], blocks=[4], target="Mass")
    edema = pointing_game(a, boxes, methods=["gradcam"], blocks=[4], target="Edema")
    assert set(mass["images"]) == {2} and set(edema["images"]) == {2}
    expected = []
    for finding in ("Mass", "Edema"):
        hits = 0
        for image_id in ids[:2]:
            heat = a.heatmap(image_id, "gradcam", 4, target=finding, normalise=False)
            y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
            hits += int(x < 8 and y < 8 and heat.max() > heat.min())  # a flat map points nowhere
        expected.append(hits)
    gradcam = lambda frame: int(frame[frame["method"] == "gradcam"]["hits"].iloc[0])  # noqa: E731
    assert [gradcam(mass), gradcam(edema)] == expected


@pytest.fixture()
def local_ray():
    """One local Ray that both jobs of a test join (each would otherwise start and stop its own)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow  # two Ray jobs: explain, then evaluate one finding
def test_the_job_explains_every_finding_and_the_evaluation_scores_one_by_name(chest, local_ray, capsys):
    import duckdb

    from jobs.cli.main import main

    root, tree, model, checkpoint, labels = chest
    store = root / "ray-store"
    common = ["--workers", "1", "--cpus-per-worker", "1", "--no-progress"]
    explain = ["explain", str(tree), "--store", str(store), "--checkpoint", str(checkpoint), "--labels", str(labels)]
    explain += ["--targets", "all", "--activation", "sigmoid", "--size", str(SIZE), "--shard-size", "4"]
    assert main([*explain, "--methods", "gradcam", "--batch-size", "4", *common]) == 0
    run = open_store(str(store)).run("latest")
    assert run.class_names == CHEXNET and len(run.index) == 6 and (run.index["status"] == "ok").all()
    parts = str(store / "runs" / run.run_id / "index" / "*.parquet")
    effusion = duckdb.sql(f"SELECT image_id, probs[3] AS p FROM read_parquet('{parts}') ORDER BY image_id").df()
    by_id = run.index.set_index("image_id").loc[effusion["image_id"]]
    np.testing.assert_allclose(effusion["p"], [values[2] for values in by_id["probs"]], rtol=1e-6)
    capsys.readouterr()
    evaluate = ["evaluate", str(store), "--run", run.run_id, "--checkpoint", str(checkpoint), "--target", "Effusion"]
    assert main([*evaluate, "--metrics", "deletion", "--steps", "2", "--resamples", "10", *common]) == 0
    scores = run.metrics()
    ids = sorted(run.index["image_id"])
    got = scores[(scores["metric"] == "deletion_auc") & (scores["method"] == "gradcam") & (scores["block"] == 2)]
    got = got.set_index("image_id").loc[ids, "value"].to_numpy()
    paths = run.index.set_index("image_id").loc[ids, "path"]
    pixels = torch.stack(
        [torch.from_numpy(np.array(load_model_input(p, SIZE).pixels)).expand(3, -1, -1) for p in paths]
    )
    maps = torch.from_numpy(run.maps("gradcam", 2, image_ids=ids, target="Effusion"))
    effusion_class = torch.full((len(ids),), CHEXNET.index("Effusion"))
    want = deletion_insertion(model, pixels, maps, effusion_class, steps=2, activation="sigmoid").deletion_auc
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)  # Effusion's maps, scored on Effusion's sigmoid
    recorded = json.loads((store / "runs" / run.run_id / METRICS_DIR / "family=deletion" / EVALUATION_JSON).read_text())
    assert recorded["target"] == CHEXNET.index("Effusion")
    assert main([*evaluate, "--metrics", "deletion", "--steps", "2", "--target", "Mass", *common]) == 2
    assert "other settings (target" in capsys.readouterr().err


@pytest.mark.slow
def test_a_store_that_mixes_families_opens_and_reads_each_run(chest):
    from support.runs import explain_tree

    tree = chest[1]
    store, chexnet_run = _explain(chest, (2, 4), "store")
    mura_run = explain_tree(tree, store)  # MURA's one-output DenseNet169 beside the CheXNet-shaped DenseNet121
    opened = open_store(str(store))
    assert set(opened.runs["run_id"]) == {chexnet_run, mura_run} and not opened.problems
    chexnet, mura = opened.run(chexnet_run), opened.run(mura_run)
    assert (chexnet.meta["architecture"], mura.meta["architecture"]) == ("densenet121", "densenet169")
    assert chexnet.class_names == CHEXNET and mura.class_names is None
    ids = mura.index["image_id"].tolist()
    assert chexnet.maps("gradcam", 4, image_ids=ids, target="Mass").shape == (6, 2, 2)
    assert mura.maps("gradcam", 4, image_ids=ids, target=0).shape == (6, 2, 2)
    assert list(chexnet.to_xarray(methods=["gradcam"], blocks=[4])["target"].values) == ["Effusion", "Mass"]
    assert list(mura.to_xarray(methods=["gradcam"], blocks=[4])["target"].values) == [0]
