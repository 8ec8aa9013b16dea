"""The Ray job end to end (local Ray, 2 CPUs, images <= 96 px): completeness, equality, failures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from support import REPO
from support.runs import assert_every_row_once

from densecam_core import Explainer, fileio, generate_mura, load_densenet169, open_store
from densecam_core.data.loader import BatchLoader
from densecam_core.store import layout
from densecam_core.store.lock import RunLock
from jobs.explain.job import ExplainConfig, ExplainSummary, run_explain

pytestmark = pytest.mark.slow  # Ray, the demo or a notebook kernel: see `pytest -m "not slow"`

SIZE = 64


@pytest.fixture(scope="module")
def local_ray():
    import ray  # here, not at the top: the fast loop collects this module without running it

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mura")
    generate_mura(root, images=22, seed=5, min_side=48, max_side=96)
    paths = (root / "MURA-v1.1" / "train_image_paths.csv").read_text().splitlines()
    (root / paths[1]).write_bytes((root / paths[1]).read_bytes()[:60])  # corrupt
    (root / paths[4]).write_bytes(b"")  # empty
    (root / paths[7]).unlink()  # missing
    return root


@pytest.fixture(scope="module")
def finished(local_ray, tree, tmp_path_factory) -> tuple[Path, ExplainSummary]:
    """One job over the tree: the start of every test that goes on from a finished run, each on a copy."""
    store = tmp_path_factory.mktemp("finished") / "store"
    return store, run_explain(config(tree, store))


def copy_of(finished: tuple[Path, ExplainSummary], tmp_path: Path) -> tuple[Path, ExplainSummary]:
    store, summary = finished
    shutil.copytree(store, tmp_path / "store")
    return tmp_path / "store", summary


def config(tree: Path, store: Path, **overrides) -> ExplainConfig:
    base = dict(
        manifest=str(tree),
        store=str(store),
        size=SIZE,
        batch_size=4,
        shard_size=4,
        workers=2,
        cpus_per_worker=1,
        progress=False,
        methods=("gradcam", "hirescam"),
    )
    base.update(overrides)
    return ExplainConfig(**base)


def assert_same_maps(stored: np.ndarray, expected: np.ndarray) -> None:
    """Equal up to float reassociation (other batch composition and thread count in the actor)."""
    assert stored.shape == expected.shape
    assert np.abs(stored - expected).max() <= 1e-2 * np.abs(expected).max()


def test_job_completes_with_error_rows_and_maps_equal_in_process(finished, tree, tmp_path):
    store, summary = copy_of(finished, tmp_path)
    assert summary.ok == 19 and summary.errors == 3 and not summary.shards_failed
    index = assert_every_row_once(store, tree)
    errors = index[index["status"] == "error"].set_index("image_id")["error"]
    assert len(errors) == 3
    assert any("truncated or corrupt" in e for e in errors) and any("empty file" in e for e in errors)
    assert any("missing file" in e for e in errors)
    ok = index[index["status"] == "ok"].head(5)
    images = next(iter(BatchLoader(ok["path"].tolist(), size=SIZE, batch_size=5))).images
    expected = Explainer(load_densenet169(), methods=["gradcam", "hirescam"])(images)
    run = open_store(str(store)).run("latest")
    for method in ("gradcam", "hirescam"):
        for block in (1, 4):
            stored = run.maps(method, block, image_ids=ok["image_id"].tolist())
            assert_same_maps(stored, expected.maps[method][block].numpy())
    assert_same_maps(run.maps("cam", image_ids=ok["image_id"].tolist()), expected.cam.numpy())
    assert np.allclose(ok["logit"], expected.logits[:, 0].numpy(), atol=1e-5)
    assert np.isnan(run.maps("cam", image_ids=[errors.index[0]])).all()
    # the same job again skips everything; --force recomputes and gives the same store
    again = run_explain(config(tree, store))
    assert again.shards_skipped == again.shards_total and again.images_done == 0
    forced = run_explain(config(tree, store, force=True))
    assert forced.shards_done == forced.shards_total
    assert np.array_equal(
        run.maps("gradcam", 4, rows=index["row"].tolist()),
        open_store(str(store)).run("latest").maps("gradcam", 4, rows=index["row"].tolist()),
        equal_nan=True,
    )


@pytest.mark.parametrize("how", ["ray.kill", "SIGKILL"])
def test_killed_actor_is_replaced_and_every_row_lands_once(local_ray, tree, tmp_path, how):
    killed = []

    def kill_once(state, result):
        if not killed:
            actor = state.actors[0]
            if how == "ray.kill":
                local_ray.kill(actor, no_restart=True)
            else:
                os.kill(local_ray.get(actor.pid.remote()), signal.SIGKILL)
            killed.append(how)

    # 2-image shards: 11 of them, so the killed actor still has work queued when it dies (with
    # nothing left for it, no replacement would be needed and none would happen)
    summary = run_explain(config(tree, tmp_path / "store", shard_size=2), hook=kill_once)
    assert killed and summary.actors_replaced >= 1 and not summary.shards_failed
    index = assert_every_row_once(tmp_path / "store", tree)
    assert (index["status"] == "ok").sum() == 19


def test_new_checkpoint_makes_a_second_run_and_leaves_the_first(finished, tree, tmp_path):
    store, first = copy_of(finished, tmp_path)
    before = open_store(str(store)).run(first.run_id).index
    # the driver catalogued every segment the actors cached, so the next job's actors read one file
    (cache_dir,) = (store / "inputs").iterdir()
    catalog = json.loads((cache_dir / "_catalog.json").read_text())
    assert catalog["segments"] == len(list(cache_dir.glob("segment-*.parquet"))) > 1
    assert catalog["rows"] == first.ok > 0  # the images that decoded; the error rows' files did not
    checkpoint = tmp_path / "other.pt"
    torch.save(load_densenet169(seed=9).state_dict(), checkpoint)
    second = run_explain(config(tree, store, checkpoint=str(checkpoint)))
    assert second.run_id != first.run_id and second.new_run
    assert (second.images_from_cache, second.images_decoded) == (first.ok, first.errors)
    runs = open_store(str(store)).runs
    assert set(runs["run_id"]) == {first.run_id, second.run_id}
    assert open_store(str(store)).run(first.run_id).index.equals(before)


def test_second_concurrent_job_is_refused(finished, tree, tmp_path):
    store, first = copy_of(finished, tmp_path)
    lock = RunLock(fileio.url_join(str(store), layout.RUNS_DIR, first.run_id))
    lock.acquire()  # a live job holds the run
    try:
        with pytest.raises(layout.StoreError, match=r"another job \(host"):
            run_explain(config(tree, store))
    finally:
        lock.release()


def test_bad_checkpoint_and_manifest_stop_before_any_work(tree, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_text("not weights")
    from densecam_core import CheckpointError, ManifestError

    with pytest.raises(CheckpointError, match="bad.pt"):
        run_explain(config(tree, tmp_path / "store", checkpoint=str(bad)))
    with pytest.raises(ManifestError):
        run_explain(config(tmp_path / "nothing.csv", tmp_path / "store"))
    assert not (tmp_path / "store" / "runs").exists()


def job_command(tree: Path, store: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "jobs.cli.explain",
        str(tree),
        "--store",
        str(store),
        "--size",
        str(SIZE),
        "--batch-size",
        "4",
        "--shard-size",
        "4",
        "--workers",
        "1",
        "--cpus-per-worker",
        "1",
        "--methods",
        "gradcam",
        "--no-progress",
        *extra,
    ]


def test_killed_driver_resumes_and_matches_a_clean_run(local_ray, tree, tmp_path):
    """The killed and the resumed job run as processes of their own; the clean run, the reference, in this one."""
    from jobs.cli.explain import main

    store = tmp_path / "resumed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        job_command(tree, store),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 240
    parts: list[Path] = []
    while time.time() < deadline and process.poll() is None:
        parts = list(store.glob("runs/*/index/part-*.parquet"))
        if len(parts) >= 2:
            break
        time.sleep(0.2)
    assert process.poll() is None, "the job ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    committed_at_kill = len(list(store.glob("runs/*/index/part-*.parquet")))
    assert 2 <= committed_at_kill < 6
    summary_path = tmp_path / "resumed-summary.json"
    resumed = subprocess.run(
        job_command(tree, store, "--summary-json", str(summary_path)),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads(summary_path.read_text())
    assert summary["shards_skipped"] >= committed_at_kill
    assert summary["shards_skipped"] + summary["shards_done"] == summary["shards_total"] == 6
    assert summary["images_total"] == 22 and not summary["shards_failed"]
    clean = tmp_path / "clean"
    assert main(job_command(tree, clean)[3:]) == 0  # the same arguments, without `python -m jobs.cli.explain`
    a, b = open_store(str(store)).run("latest"), open_store(str(clean)).run("latest")
    assert a.run_id == b.run_id
    columns = ["image_id", "row", "status", "error", "logit"]
    assert a.index[columns].equals(b.index[columns])
    rows = a.index["row"].tolist()
    for method, block in (("cam", None), ("gradcam", 1), ("gradcam", 4)):
        assert np.array_equal(a.maps(method, block, rows=rows), b.maps(method, block, rows=rows), equal_nan=True)


def test_shard_that_keeps_failing_is_reported_and_the_job_exits_non_zero(finished, tree, tmp_path, capsys):
    from jobs.cli.explain import main

    store, first = copy_of(finished, tmp_path)
    cam = Path(fileio.url_join(str(store), layout.RUNS_DIR, first.run_id, layout.ZARR_DIR)) / "cam" / "c"
    for chunk in [p for p in cam.rglob("*") if p.is_file()]:  # a folder where each chunk file must go:
        chunk.unlink()  # every shard's write now fails inside the actor (the driver sees nothing wrong)
        chunk.mkdir()
    summary_path = tmp_path / "summary.json"
    args = [
        str(tree),
        "--store",
        str(store),
        "--size",
        str(SIZE),
        "--batch-size",
        "4",
        "--shard-size",
        "4",
        "--workers",
        "2",
        "--cpus-per-worker",
        "1",
        "--methods",
        "gradcam,hirescam",
        "--force",
        "--retries",
        "1",
        "--no-progress",
        "--summary-json",
        str(summary_path),
    ]
    assert main(args) == 1, "a job with failed shards exits non-zero"
    assert "failed" in capsys.readouterr().out
    failed = json.loads(summary_path.read_text())
    assert sorted(failed["shards_failed"]) == list(range(failed["shards_total"])) and failed["shards_done"] == 0
    assert failed["shard_attempts_failed"] == 2 * failed["shards_total"]  # first attempt + one retry each
    assert failed["shards_retried"] == failed["shards_total"]  # --retries 1: each shard re-queued once


def test_actors_that_cannot_be_placed_do_not_block_the_job(local_ray, tree, tmp_path):
    """3 one-CPU actors on a 2-CPU Ray: the third never starts; the other two do all the work."""
    summary = run_explain(config(tree, tmp_path / "store", workers=3))
    assert summary.shards_done == summary.shards_total and not summary.shards_failed
    assert_every_row_once(tmp_path / "store", tree)
    # no actor outlives the job: a pending one left alive would take a freed CPU and keep it
    deadline = time.monotonic() + 30
    while local_ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(3)
    assert local_ray.available_resources().get("CPU", 0) == 2


def test_no_actor_starting_stops_the_job_with_a_clear_error(local_ray, tree, tmp_path):
    from jobs.runtime.actor_pool import ActorStartError

    started = time.monotonic()
    with pytest.raises(ActorStartError, match=r"within 2 s: each needs 1 GPU.*0 GPUs"):
        run_explain(config(tree, tmp_path / "store", workers=1, gpus_per_worker=1, start_timeout=2))
    assert time.monotonic() - started < 60
    assert not open_store(str(tmp_path / "store")).run("latest").index.shape[0]


def test_bad_start_timeout_or_retries_stop_before_any_work(tree, tmp_path):
    for bad in (dict(start_timeout=0), dict(retries=-1)):
        with pytest.raises(ValueError, match="--start-timeout must be > 0 and --retries >= 0"):
            run_explain(config(tree, tmp_path / "store", **bad))
    assert not (tmp_path / "store").exists()


def test_redo_errors_explains_an_image_that_came_back(finished, tree, tmp_path):
    store, first = copy_of(finished, tmp_path)
    index = open_store(str(store)).run(first.run_id).index
    missing = index[index["error"].str.contains("missing file", na=False)].iloc[0]
    shutil.copy(index[index["status"] == "ok"]["path"].iloc[0], missing["path"])  # the file is back
    try:
        assert run_explain(config(tree, store)).images_done == 0  # a plain rerun keeps the error row
        again = run_explain(config(tree, store, redo_errors=True))
        assert 0 < again.shards_done < again.shards_total  # only shards holding error rows
        after = open_store(str(store)).run(first.run_id).index.set_index("image_id")
        assert after.loc[missing["image_id"], "status"] == "ok"
        assert (after["status"] == "error").sum() == 2  # the corrupt and the empty file still fail
        assert sorted(after.index) == sorted(index["image_id"])
    finally:
        Path(missing["path"]).unlink()


def test_a_recompute_keeps_the_old_rows_visible_until_each_shard_is_replaced(finished, tree, tmp_path):
    """--force over a compacted run: a reader sees every committed row throughout (the old rows until
    each shard's new part is committed), and a recompute killed half-way loses none of them."""
    store, first = copy_of(finished, tmp_path)  # a job ends compacted
    before = sorted(open_store(str(store)).run(first.run_id).index["image_id"])
    seen: list[list[str]] = []

    class Killed(Exception):
        pass

    def look_then_die(state, result) -> None:
        seen.append(sorted(open_store(str(store)).run(first.run_id).index["image_id"]))
        if len(state.results) == 2:
            raise Killed  # the driver dies with 2 shards recomputed

    with pytest.raises(Killed):
        run_explain(config(tree, store, force=True, workers=1), hook=look_then_die)
    assert len(seen) == 2 and all(rows == before for rows in seen)  # never fewer rows, never twice
    assert sorted(open_store(str(store)).run(first.run_id).index["image_id"]) == before
