"""Runs of other DenseNets: a torchxrayvision-shaped DenseNet121 (one grey channel, 18 outputs) explained
into the store with its architecture, taps and input normalisation recorded; what cannot score it says so."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision

from densecam_core import generate_mura, open_store, read_manifest
from densecam_core.model.checkpoint import model_fingerprint, state_dict_bytes
from densecam_core.store.writer import RunSpec, RunWriter
from densecam_core.vocabulary import block_grid, taps_for
from jobs.explain.settings import ExplainSettings
from jobs.explain.worker import ExplainWorker
from jobs.runtime.skeleton import shard_work

SIZE = 64


def xrv_shaped(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.densenet121(weights=None, num_classes=18)
    model.features.conv0 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    path = tmp_path / "xrv.pt"
    torch.save(model.state_dict(), path)
    return model.eval(), path


@pytest.fixture()
def explained(tmp_path):
    tree = tmp_path / "tree"
    generate_mura(tree, images=6, seed=2, min_side=48, max_side=64)
    model, checkpoint = xrv_shaped(tmp_path)
    settings = ExplainSettings(methods=("gradcam",), size=SIZE, batch_size=4, targets=(0, 7, 17), input_norm="xrv")
    spec = RunSpec(
        model_fingerprint(model),
        "xrv.pt",
        settings.run_settings(),
        18,
        3,
        block_grid(SIZE),
        4,
        architecture="densenet121",
    )
    writer = RunWriter(str(tmp_path / "store"), spec)
    writer.create_or_open("test")
    worker = ExplainWorker(state_dict_bytes(model), settings, warm_up=False, store_url=str(tmp_path / "store"))
    for shard, rows in shard_work(writer.plan(read_manifest(tree)), 4).todo:
        worker.process_shard(writer.run_url, spec.run_id, shard, 4, rows)
    return tmp_path, spec, checkpoint


@pytest.mark.slow  # a shard of a DenseNet121 end to end; the job's preparation below stays fast
def test_a_one_channel_multi_output_densenet121_run_records_what_it_explained(explained):
    root, spec, _ = explained
    run = open_store(str(root / "store")).run(spec.run_id)
    meta = json.loads((root / "store" / "runs" / spec.run_id / "run.json").read_text())
    assert meta["architecture"] == "densenet121"
    assert (
        [t["channels"] for t in meta["taps"]] == [t.channels for t in taps_for("densenet121")] == [128, 256, 512, 1024]
    )
    assert run.settings.input_norm == "xrv" and spec.settings.targets == (0, 7, 17)
    assert (run.index["status"] == "ok").all() and len(run.index) == 6
    maps = run.maps("gradcam", 4, image_ids=run.index["image_id"].tolist())
    assert maps.shape[:2] == (6, 3) and float(abs(maps).sum()) > 0


@pytest.mark.slow
def test_the_evaluation_refuses_a_model_it_cannot_perturb(explained):
    from jobs.evaluate.config import EvaluateConfig
    from jobs.evaluate.job import prepare

    root, spec, checkpoint = explained
    config = EvaluateConfig(
        store=str(root / "store"), run=spec.run_id, checkpoint=str(checkpoint), metrics=("deletion",)
    )
    with pytest.raises(ValueError, match=r"1 channel\(s\) normalised as 'xrv'.*three ImageNet-normalised"):
        prepare(config)


@pytest.mark.slow  # seconds end to end; the fast loop keeps a smaller test of this path
def test_the_job_reads_the_architecture_and_input_convention_from_the_checkpoint(tmp_path, capsys):
    """Before any work: the run's spec names the architecture, and the inferred normalisation is said."""
    from jobs.explain.job import ExplainConfig, prepare

    generate_mura(tmp_path / "tree", images=4, seed=1, min_side=48, max_side=64)
    _, checkpoint = xrv_shaped(tmp_path)
    job = prepare(
        ExplainConfig(
            manifest=str(tmp_path / "tree"),
            store=str(tmp_path / "s"),
            checkpoint=str(checkpoint),
            size=SIZE,
            targets="all",
        )
    )
    assert job.spec.architecture == "densenet121" and job.spec.num_targets == 18
    assert job.settings.input_norm == "xrv" and job.spec.settings.input_norm == "xrv"
    said = capsys.readouterr().err
    assert (
        "model: DenseNet121, 1 input channel (RGB sources are read as their grey), 18 outputs; input normalisation xrv (inferred"
        in said
    )
    asked = prepare(
        ExplainConfig(
            manifest=str(tmp_path / "tree"),
            store=str(tmp_path / "s"),
            checkpoint=str(checkpoint),
            size=SIZE,
            input_norm="imagenet",
        )
    )
    assert "input_norm" not in asked.spec.settings.recorded() and asked.spec.run_id != job.spec.run_id
    ExplainWorker(state_dict_bytes(job.model), job.settings, warm_up=True)  # a blank RGB batch becomes grey
