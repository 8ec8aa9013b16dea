"""Messages that say what happened and what to do, for the cases an audit found unclear."""

from __future__ import annotations

import pytest
from support.runs import explain_tree

from densecam_core import generate_mura
from densecam_core.store.layout import StoreError
from densecam_core.store.lock import RunLock
from jobs.evaluate.job import EvaluateConfig, prepare


def test_evaluating_a_run_that_a_live_job_is_recomputing_says_so(tmp_path):
    tree = tmp_path / "tree"
    generate_mura(tree, images=4, seed=3, min_side=48, max_side=64)
    run_id = explain_tree(tree, tmp_path / "store", shards=False)  # created, nothing committed: as under --force
    lock = RunLock(str(tmp_path / "store" / "runs" / run_id))
    lock.acquire()
    try:
        with pytest.raises(StoreError, match=r"being written by another job .* evaluate once that job has finished"):
            prepare(EvaluateConfig(store=str(tmp_path / "store"), run=run_id))
    finally:
        lock.release()
    with pytest.raises(StoreError, match=r"no committed shards .* run densecam explain first"):
        prepare(EvaluateConfig(store=str(tmp_path / "store"), run=run_id))


def test_a_local_ray_is_started_even_when_another_cluster_is_registered_here():
    """Without an address ray.init() joins a cluster registered in /tmp/ray/ray_current_cluster and then
    refuses num_cpus; address="local" starts the local Ray the README promises."""
    from jobs.runtime.session import _start_ray

    calls = []

    class FakeRay:
        def is_initialized(self) -> bool:
            return False

        def init(self, **kwargs):
            calls.append(kwargs)

    assert _start_ray(FakeRay(), None) is True
    assert calls[0]["address"] == "local" and calls[0]["num_cpus"] >= 1
    calls.clear()
    assert _start_ray(FakeRay(), "ray://head:10001") is False
    assert calls == [{"address": "ray://head:10001", "log_to_driver": True}]


@pytest.mark.parametrize("timeout", ["-1", "0"])
def test_the_cache_command_refuses_a_timeout_that_is_not_positive(tmp_path, capsys, timeout):
    from jobs.cli.cache import main

    generate_mura(tmp_path / "tree", images=2, seed=1, min_side=48, max_side=64)
    code = main([str(tmp_path / "tree"), "--store", str(tmp_path / "store"), "--read-timeout", timeout])
    assert code == 2 and "--read-timeout must be > 0" in capsys.readouterr().err
    assert not (tmp_path / "store" / "inputs").exists(), "refused before any work"


@pytest.mark.slow  # seconds of whole shards; the fast loop keeps a smaller test of this path
def test_a_resumed_evaluation_refuses_a_sample_that_differs_from_the_scored_one(tmp_path):
    """Explain 10 images, record an evaluation of 4, add images: the next sample of 4 is drawn from more
    images, so resuming would mix two samples; it is refused (and --force starts afresh)."""
    from jobs.evaluate.job import _settle_recorded

    tree = tmp_path / "tree"
    generate_mura(tree, images=10, seed=3, min_side=48, max_side=64)
    run_id = explain_tree(tree, tmp_path / "store")
    config = EvaluateConfig(store=str(tmp_path / "store"), run=run_id, sample=4, metrics=("deletion",))
    _settle_recorded(prepare(config))
    _settle_recorded(prepare(config))  # the same sample: resumes
    generate_mura(tree, images=30, seed=3, min_side=48, max_side=64)  # the same tree, grown
    explain_tree(tree, tmp_path / "store")
    grown = prepare(config)
    with pytest.raises(ValueError, match=r"another sample of images .* --force"):
        _settle_recorded(grown)
    import dataclasses

    _settle_recorded(dataclasses.replace(grown, config=dataclasses.replace(config, force=True)))


def test_max_image_pixels_reaches_the_decoder_and_bad_values_are_refused(tmp_path):
    """--max-image-pixels is the cap a DICOM or PNG header is checked against before any pixel is decoded."""
    from jobs.cli.explain import build_parser, config_from
    from jobs.explain.config import ExplainConfig

    with pytest.raises(ValueError, match=r"--max-image-pixels must be >= 1"):
        ExplainConfig(max_image_pixels=0).validate()
    config = config_from(build_parser().parse_args(["--max-image-pixels", "1000", "--store", str(tmp_path / "s")]))
    assert config.max_image_pixels == 1000
    tree = tmp_path / "tree"
    generate_mura(tree, images=4, seed=3, min_side=48, max_side=64)
    import dataclasses

    from densecam_core import load_densenet169, open_store, read_manifest
    from densecam_core.model.checkpoint import model_fingerprint, state_dict_bytes
    from densecam_core.store.layout import Shard
    from densecam_core.store.writer import RunSpec, RunWriter
    from densecam_core.vocabulary import block_grid
    from jobs.explain.settings import ExplainSettings
    from jobs.explain.worker import ExplainWorker

    model = load_densenet169()
    settings = ExplainSettings(methods=("gradcam",), size=32, batch_size=4, max_image_pixels=1000)
    spec = RunSpec(model_fingerprint(model), "x.pt", settings.run_settings(), 1, 1, block_grid(32), 4)
    writer = RunWriter(str(tmp_path / "store"), spec)
    writer.create_or_open("test")
    rows = writer.plan(read_manifest(tree))
    worker = ExplainWorker(state_dict_bytes(model), dataclasses.replace(settings), warm_up=False)
    worker.process_shard(writer.run_url, spec.run_id, Shard(0, 0, 4), 4, rows)
    index = open_store(str(tmp_path / "store")).run(spec.run_id).index
    assert (index["status"] == "error").all()
    assert index["error"].str.contains(r"image too large: .* > max_pixels=1000 \(refused before decoding\)").all()
