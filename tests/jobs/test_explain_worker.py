"""ExplainWorker without Ray: the input cache, device normalisation, transient failures, non-finite outputs."""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from densecam_core import Explainer, fileio, generate_mura, load_densenet169, open_store, read_manifest
from densecam_core.data.preprocess import load_for_model, load_model_input
from densecam_core.model.checkpoint import model_fingerprint, state_dict_bytes
from densecam_core.store.inputs.cache import CacheDamageWarning, InputCache
from densecam_core.store.inputs.identity import identify
from densecam_core.store.layout import Shard
from densecam_core.store.writer import RunSpec, RunWriter
from densecam_core.vocabulary import block_grid
from jobs.explain.settings import ExplainSettings
from jobs.explain.worker import ExplainWorker

SIZE = 64
METHODS = ("gradcam", "hirescam")


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mura")
    generate_mura(root, images=10, seed=3, min_side=48, max_side=96, rgb_fraction=0.5)
    return root


@functools.cache
def weights(seed: int) -> tuple[bytes, str]:
    """A seeded model's weights and fingerprint, built once per seed (model construction is the slow part)."""
    model = load_densenet169(seed=seed)
    return state_dict_bytes(model), model_fingerprint(model)


def run_worker(
    tree: Path | pd.DataFrame,
    store: Path,
    *,
    seed: int = 0,
    cache: str = "readwrite",
    resize: str = "stretch",
    worker: ExplainWorker | None = None,
) -> tuple[ExplainWorker, str, list]:
    """Explain every shard of the tree into ``store`` with one worker; returns it, the run id and the results."""
    state, fingerprint = weights(seed)
    settings = ExplainSettings(methods=METHODS, size=SIZE, resize=resize, batch_size=4, input_cache=cache)
    spec = RunSpec(fingerprint, "x.pt", settings.run_settings(), 1, 1, block_grid(SIZE), 4)
    writer = RunWriter(str(store), spec)
    writer.create_or_open("test")
    planned = writer.plan(tree if isinstance(tree, pd.DataFrame) else read_manifest(tree))
    worker = worker or ExplainWorker(state, settings, warm_up=False, store_url=str(store))
    results = []
    for index, rows in planned.groupby("shard"):
        shard = Shard(int(index), int(index) * 4, int(rows["row"].max()) + 1)
        results.append(worker.process_shard(writer.run_url, spec.run_id, shard, 4, rows))
    return worker, spec.run_id, results


def decoded(results) -> tuple[int, int]:
    return sum(r.images_decoded for r in results), sum(r.images_from_cache for r in results)


@pytest.mark.slow  # seconds of whole shards; the fast loop keeps a smaller test of this path
@pytest.mark.parametrize("resize", ["stretch", pytest.param("pad", marks=pytest.mark.slow)])
def test_cache_hit_decodes_nothing_and_gives_the_same_maps(tree, tmp_path, resize):
    store = tmp_path / "store"
    _, _first_id, first = run_worker(tree, store, resize=resize)
    assert decoded(first) == (10, 0)
    # a new checkpoint: a new run that reads every input from the cache
    _, second_id, second = run_worker(tree, store, seed=7, resize=resize)
    assert decoded(second) == (0, 10)
    # the reference: the same checkpoint, decoding every file, in a store with no cache
    _, reference_id, reference = run_worker(tree, tmp_path / "plain", seed=7, resize=resize, cache="off")
    assert decoded(reference) == (10, 0) and reference_id == second_id
    cached_run = open_store(str(store)).run(second_id)
    plain_run = open_store(str(tmp_path / "plain")).run(reference_id)
    rows = cached_run.index["row"].tolist()
    for method, block in (("cam", None), ("gradcam", 1), ("hirescam", 3)):
        assert np.array_equal(cached_run.maps(method, block, rows=rows), plain_run.maps(method, block, rows=rows))
    columns = ["image_id", "orig_height", "orig_width", "logit", "status"]
    assert cached_run.index[columns].equals(plain_run.index[columns])


def test_cached_inputs_equal_fresh_decodes_for_grey_and_rgb_sources(tree, tmp_path):
    manifest = read_manifest(tree)
    paths = manifest["path"].tolist()
    explainer = Explainer(load_densenet169())
    for resize in ("stretch", "pad"):
        cache = InputCache(str(tmp_path / "store"), SIZE, resize)
        inputs = [load_model_input(p, SIZE, resize) for p in paths]
        assert {m.pixels.shape[0] for m in inputs} == {1, 3}  # the tree has grey and colour PNGs
        cache.write([(identify(p), m) for p, m in zip(paths, inputs)])
        read = cache.read(cache.lookup([identify(p) for p in paths]))
        assert sorted(read) == list(range(len(paths)))
        for position, fresh in enumerate(inputs):
            assert np.array_equal(read[position].pixels, fresh.pixels)
            assert read[position].geometry == fresh.geometry
            # the uint8 input, normalised, is exactly the float host path's input
            host = load_for_model(paths[position], SIZE, resize).array
            explainer_input = torch.from_numpy(np.broadcast_to(fresh.pixels, (3, SIZE, SIZE)).copy())[None]
            on_device = explainer._to_device(explainer_input)[0].numpy()
            assert np.array_equal(on_device, host)


@pytest.mark.slow
def test_damaged_cache_segment_is_named_decoded_again_and_removed_by_verify(tree, tmp_path, capsys):
    from jobs.cli.verify import main as verify

    store = tmp_path / "store"
    run_worker(tree, store)
    (folder,) = (store / "inputs").iterdir()
    segments = sorted(folder.glob("segment-*.parquet"))
    victim = segments[0]
    images = pq.read_metadata(victim).num_rows
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x40  # inside the pixels' pages, which are most of the file
    victim.write_bytes(bytes(data))
    with pytest.warns(CacheDamageWarning, match=victim.name):
        _, run_id, results = run_worker(tree, store, seed=7)
    assert decoded(results) == (images, 10 - images)
    assert sum(r.cache_damaged for r in results) == images  # found when the pixels are read, and counted
    # the maps equal a run that decoded every file
    _, _, _ = run_worker(tree, tmp_path / "plain", seed=7, cache="off")
    damaged_run, plain_run = open_store(str(store)).run(run_id), open_store(str(tmp_path / "plain")).run(run_id)
    rows = plain_run.index["row"].tolist()
    assert (damaged_run.index["status"] == "ok").all()
    assert np.array_equal(damaged_run.maps("gradcam", 2, rows=rows), plain_run.maps("gradcam", 2, rows=rows))
    capsys.readouterr()
    assert verify([str(store), "--inputs"]) == 1
    report = capsys.readouterr().out
    assert f"{len(segments) + 1} segments, 1 problems" in report and victim.name in report  # +1: the re-cached images
    assert verify([str(store), "--inputs", "--repair"]) == 0 and not victim.exists()
    assert verify([str(store), "--inputs"]) == 0
    _, _, after = run_worker(tree, store, seed=8)
    assert decoded(after) == (0, 10) and sum(r.cache_damaged for r in after) == 0


@pytest.mark.slow
def test_a_modified_image_is_decoded_again(tree, tmp_path):
    store = tmp_path / "store"
    run_worker(tree, store)
    path = Path(read_manifest(tree)["path"].iloc[2])
    original = path.read_bytes()
    try:
        from PIL import Image

        Image.new("L", (70, 50), color=200).save(path)  # same path, new content and size
        _worker, run_id, results = run_worker(tree, store, seed=7)
        assert decoded(results) == (1, 9)
        record = open_store(str(store)).run(run_id).index.set_index("path").loc[str(path)]
        assert (record["orig_height"], record["orig_width"]) == (50, 70)
        # and the new content is cached in turn
        _, _, again = run_worker(tree, store, seed=8)
        assert decoded(again) == (0, 10)
    finally:
        path.write_bytes(original)


@pytest.mark.slow
def test_vanished_file_becomes_an_error_row_not_a_cache_hit(tree, tmp_path):
    store = tmp_path / "store"
    run_worker(tree, store)
    path = Path(read_manifest(tree)["path"].iloc[5])
    saved = path.read_bytes()
    path.unlink()
    try:
        _, run_id, results = run_worker(tree, store, seed=7)
        assert decoded(results) == (1, 9)
        record = open_store(str(store)).run(run_id).index.set_index("path").loc[str(path)]
        assert record["status"] == "error" and "missing file" in record["error"]
    finally:
        path.write_bytes(saved)


def test_crash_mid_cache_write_leaves_no_visible_entry(tree, tmp_path, monkeypatch):
    paths = read_manifest(tree)["path"].tolist()[:3]
    cache = InputCache(str(tmp_path / "store"), SIZE, "stretch")

    def crash(fs, path, data):  # the bytes land under a temporary name, then the process dies
        fs.pipe_file(f"{path}.tmp-dead", data)
        raise KeyboardInterrupt

    monkeypatch.setattr(fileio, "write_bytes_atomic", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.write([(identify(p), load_model_input(p, SIZE, "stretch")) for p in paths])
    monkeypatch.undo()
    fresh = InputCache(str(tmp_path / "store"), SIZE, "stretch")
    assert fresh.lookup([identify(p) for p in paths]) == {}
    assert any(name.endswith(".tmp-dead") for name in os.listdir(fresh.root))


@pytest.mark.slow
def test_other_preprocessing_never_reads_the_cache(tree, tmp_path):
    store = tmp_path / "store"
    run_worker(tree, store, resize="stretch")
    _, _, padded = run_worker(tree, store, resize="pad", seed=7)
    assert decoded(padded) == (10, 0)


@pytest.mark.slow
def test_read_mode_never_writes(tree, tmp_path):
    store = tmp_path / "store"
    _, _, first = run_worker(tree, store, cache="read")
    _, _, second = run_worker(tree, store, cache="read", seed=7)
    assert decoded(first) == decoded(second) == (10, 0)
    assert not (store / "inputs").exists()


def test_out_of_memory_fails_the_shard_instead_of_committing_error_rows(tree, tmp_path, monkeypatch):
    settings = ExplainSettings(methods=METHODS, size=SIZE, batch_size=4)
    worker = ExplainWorker(weights(0)[0], settings, warm_up=False)

    def out_of_memory(images):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(worker, "explainer", out_of_memory)
    with pytest.raises(torch.OutOfMemoryError):
        run_worker(tree, tmp_path / "store", worker=worker)
    assert not list((tmp_path / "store").glob("runs/*/index/part-*.parquet"))


class Ref:
    """A finished fake Ray task: its value, or the exception it raised."""

    def __init__(self, fn, *args) -> None:
        try:
            self.value, self.error = fn(*args), None
        except Exception as exc:
            self.value, self.error = None, exc


class FakeRay:
    """Just what Dispatcher and ActorPool call; tasks run eagerly in this process."""

    def wait(self, refs, num_returns=1, timeout=None):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        if isinstance(ref, Ref):
            if ref.error is not None:
                raise ref.error
            return ref.value
        return 1  # readiness probe

    def kill(self, actor, no_restart=True):
        pass

    def cluster_resources(self):
        return {"CPU": 2}


class FakeActor:
    def __init__(self, worker) -> None:
        self.worker = worker
        self.pid = self

    def remote(self):
        return "probe"


@pytest.mark.slow  # seconds of whole shards; the fast loop keeps a smaller test of this path
def test_injected_out_of_memory_is_retried_by_the_driver_and_never_committed(tree, tmp_path, monkeypatch):
    """A real worker behind the real Dispatcher (fake Ray): one OOM, one retry, every row ok."""
    from jobs.explain.config import ExplainConfig
    from jobs.runtime.dispatch import Dispatcher
    from jobs.runtime.resources import Resources

    model = load_densenet169()
    settings = ExplainSettings(methods=METHODS, size=SIZE, batch_size=4)
    spec = RunSpec(model_fingerprint(model), "x.pt", settings.run_settings(), 1, 1, block_grid(SIZE), 4)
    writer = RunWriter(str(tmp_path / "store"), spec)
    writer.create_or_open("test")
    planned = writer.plan(read_manifest(tree))
    worker = ExplainWorker(state_dict_bytes(model), settings, warm_up=False)
    real = worker.explainer
    calls = []

    def flaky(images):
        calls.append(len(images))
        if len(calls) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(images)

    monkeypatch.setattr(worker, "explainer", flaky)
    todo = deque((Shard(int(k), int(g["row"].min()), int(g["row"].max()) + 1), g) for k, g in planned.groupby("shard"))

    def submit(actor, shard, rows):
        return Ref(actor.worker.process_shard, writer.run_url, spec.run_id, shard, 4, rows)

    class NoLock:
        def heartbeat(self):
            pass

    config = ExplainConfig(retries=2, progress=False)
    counters = Dispatcher(
        FakeRay(), config, Resources(1, 1.0, 0.0, 1), lambda: FakeActor(worker), submit, todo, NoLock()
    ).run()
    assert counters.shard_attempts_failed == 1 and counters.shards_retried == 1 and not counters.shards_failed
    index = open_store(str(tmp_path / "store")).run(spec.run_id).index
    assert len(index) == 10 and (index["status"] == "ok").all()


def test_non_finite_output_becomes_an_error_row(tree, tmp_path, monkeypatch):
    settings = ExplainSettings(methods=METHODS, size=SIZE, batch_size=4)
    worker = ExplainWorker(weights(0)[0], settings, warm_up=False)
    real = worker.explainer

    def poisoned(images):  # the second image of every batch comes out NaN
        result = real(images)
        result.maps["hirescam"][2][1] = float("nan")
        return result

    monkeypatch.setattr(worker, "explainer", poisoned)
    _, run_id, _results = run_worker(tree, tmp_path / "store", worker=worker)
    run = open_store(str(tmp_path / "store")).run(run_id)
    errors = run.index[run.index["status"] == "error"]
    assert len(errors) == 3 and errors["error"].str.contains("non-finite").all()  # shards of 4, 4 and 2: one each
    assert np.isnan(run.maps("gradcam", 4, rows=errors["row"].tolist())).all()
    ok = run.index[run.index["status"] == "ok"]
    assert np.isfinite(run.maps("gradcam", 4, rows=ok["row"].tolist())).all()


@pytest.mark.slow  # seconds of whole shards; the fast loop keeps a smaller test of this path
def test_cache_command_fills_the_cache_the_job_then_reads(tree, tmp_path, capsys):
    from jobs.cli.cache import main

    store = tmp_path / "store"
    assert main([str(tree), "--store", str(store), "--size", str(SIZE), "--segment-size", "4", "--threads", "2"]) == 0
    assert (
        "10 cached now, 0 already cached, 0 unreadable (left to the explanation job's error rows); 3 segments in the catalog"
        in capsys.readouterr().out
    )
    assert main([str(tree), "--store", str(store), "--size", str(SIZE)]) == 0
    assert "0 cached now, 10 already cached" in capsys.readouterr().out
    _, _, results = run_worker(tree, store)
    assert decoded(results) == (0, 10)
    assert main([str(tree), "--store", str(store), "--size", "8"]) == 2


def test_cache_command_leaves_a_hung_read_unread_after_its_deadline(tree, tmp_path, monkeypatch):
    from densecam_core.data import loader
    from jobs.cache import fill_cache

    stuck = str(read_manifest(tree)["path"].iloc[3])
    release = threading.Event()
    real = loader._load
    monkeypatch.setattr(loader, "_load", lambda path, *a: (path == stuck and release.wait(30)) or real(path, *a))
    try:
        started = time.monotonic()
        counts = fill_cache(str(tree), str(tmp_path / "store"), size=SIZE, segment_size=4, read_timeout=0.5)
        assert time.monotonic() - started < 20
    finally:
        release.set()
    assert (counts["cached_now"], counts["unreadable"]) == (9, 1)
    cached = InputCache(str(tmp_path / "store"), SIZE, "stretch").lookup(
        [identify(p) for p in read_manifest(tree)["path"]]
    )
    assert sorted(cached) == [0, 1, 2, 4, 5, 6, 7, 8, 9]


@pytest.mark.slow
def test_concurrent_shards_in_one_worker_equal_sequential_ones(tree, tmp_path):
    """GPU actors run several shards at once (threads): the store must be the same as one at a time."""
    from concurrent.futures import ThreadPoolExecutor

    state, fingerprint = weights(0)
    settings = ExplainSettings(methods=METHODS, size=SIZE, batch_size=4, input_cache="readwrite", concurrency=3)
    stores = {}
    for name, threads in (("sequential", 1), ("concurrent", 3)):
        store = tmp_path / name
        spec = RunSpec(fingerprint, "x.pt", settings.run_settings(), 1, 1, block_grid(SIZE), 4)
        writer = RunWriter(str(store), spec)
        writer.create_or_open("test")
        planned = writer.plan(read_manifest(tree))
        worker = ExplainWorker(state, settings, warm_up=False, store_url=str(store))
        shards = [(Shard(int(k), int(g["row"].min()), int(g["row"].max()) + 1), g) for k, g in planned.groupby("shard")]
        with ThreadPoolExecutor(threads) as pool:
            futures = [
                pool.submit(worker.process_shard, writer.run_url, spec.run_id, shard, 4, rows) for shard, rows in shards
            ]
            results = [f.result() for f in futures]
        assert sum(r.images for r in results) == 10
        stores[name] = open_store(str(store)).run(spec.run_id)
    a, b = stores["sequential"], stores["concurrent"]
    rows = a.index["row"].tolist()
    assert a.index[["image_id", "row", "status"]].equals(b.index[["image_id", "row", "status"]])
    assert np.allclose(a.maps("hirescam", 2, rows=rows), b.maps("hirescam", 2, rows=rows), atol=1e-6)


@pytest.mark.slow
def test_images_removed_from_the_manifest_do_not_wedge_the_run(tree, tmp_path):
    """Rows planned for images that left the manifest stay empty; the rest of their shard is explained."""
    manifest = read_manifest(tree)
    store = tmp_path / "store"
    RunWriter(
        str(store),
        RunSpec(
            weights(0)[1],
            "x.pt",
            ExplainSettings(methods=METHODS, size=SIZE, batch_size=4, input_cache="readwrite").run_settings(),
            1,
            1,
            block_grid(SIZE),
            4,
        ),
    ).create_or_open("test")
    _, run_id, _ = run_worker(manifest.iloc[:2], store)  # shard 0 committed with rows 0-1 planned
    shrunk = manifest.drop(index=[1, 5]).reset_index(drop=True)  # one from a committed shard, one from a new one
    _, _, results = run_worker(shrunk, store)
    assert sum(r.images for r in results) == 8
    index = open_store(str(store)).run(run_id).index
    assert sorted(index["image_id"]) == sorted(shrunk["image_id"])  # every manifest image exactly once
    assert (index["status"] == "ok").all()


def test_a_shard_whose_images_all_fail_gets_empty_chunks_even_with_a_gap(tree, tmp_path):
    """Rows 0 and 2 planned, both files missing: NaN maps, targets -1, two error rows."""
    manifest = read_manifest(tree).iloc[:3].copy()
    manifest["path"] = [str(tmp_path / f"gone{i}.png") for i in range(3)]
    _, run_id, results = run_worker(manifest.drop(index=[1]).reset_index(drop=True), tmp_path / "store", cache="off")
    assert results[0].errors == 2 and results[0].ok == 0
    run = open_store(str(tmp_path / "store")).run(run_id)
    assert (run.index["status"] == "error").all() and run.index["error"].str.contains("missing file").all()
    assert np.isnan(run.maps("gradcam", 1, rows=[0, 1])).all()
    assert run.targets(rows=[0, 1]).tolist() == [[-1], [-1]]


def test_appending_to_a_format_1_run_writes_only_the_arrays_it_has(tree, tmp_path):
    import json
    import shutil

    store = tmp_path / "v1"
    shutil.copytree(Path(__file__).parents[1] / "fixtures" / "store-v1", store)
    old = open_store(str(store)).run("latest")
    state, _ = weights(0)
    settings = ExplainSettings(methods=("gradcam",), size=SIZE, batch_size=4)
    spec = RunSpec(old.fingerprint, "v1.pt", settings.run_settings(), 1, 1, block_grid(SIZE), 4)
    assert spec.run_id == old.run_id
    writer = RunWriter(str(store), spec)
    assert not writer.create_or_open("test")  # the existing format 1 run
    planned = writer.plan(pd.concat([old.index[list(read_manifest(tree).columns)], read_manifest(tree).iloc[:2]]))
    rows = planned[planned["shard"] == 2]
    worker = ExplainWorker(state, settings, warm_up=False)
    worker.process_shard(writer.run_url, spec.run_id, Shard(2, 8, 10), 4, rows)
    run = open_store(str(store)).run("latest")
    assert len(run.index) == 8 and run.format_version == 1
    assert np.isfinite(run.maps("gradcam", 4, rows=[8, 9])).all()
    assert "targets" not in json.loads((store / "runs" / run.run_id / "run.json").read_text())["arrays"]


def shared_blocks() -> set[str]:
    """Shared-memory blocks that exist now (POSIX shared memory lives in /dev/shm on Linux)."""
    return {name for name in os.listdir("/dev/shm") if name.startswith("psm_")}


def assert_same_runs(a, b) -> None:
    """Every array of two runs equal on their indexed rows, and the same index values."""
    rows = a.index["row"].to_numpy()
    assert rows.tolist() == b.index["row"].tolist()
    for name in a.meta["arrays"]:
        method, _, block = name.partition("/block")
        where = (method, int(block) if block else None)
        np.testing.assert_array_equal(a.array(*where)[rows], b.array(*where)[rows], err_msg=name)
    columns = ["image_id", "orig_height", "orig_width", "logit", "prob", "status", "error"]
    assert a.index[columns].equals(b.index[columns])


@pytest.mark.slow
@pytest.mark.parametrize("shared", [True, False], ids=["shared-memory", "no-room-pickled"])
def test_decode_and_writer_processes_commit_what_the_in_process_path_commits(tree, tmp_path, monkeypatch, shared):
    """GPU actors decode in spawned processes and hand each shard to a writer process through shared memory
    (pickled where /dev/shm has no room): the same arrays, index and input cache as the in-process path,
    and no shared-memory block left behind."""
    import densecam_core.parallel.shared_block as shared_block

    if not shared:
        monkeypatch.setattr(shared_block, "room_for", lambda nbytes: False)
    blocks = []

    class CountedBlock(shared_block.SharedBlock):
        def __init__(self, specs):
            super().__init__(specs)
            blocks.append(self.handle.name)

    monkeypatch.setattr(shared_block, "SharedBlock", CountedBlock)
    state, _ = weights(0)
    before = shared_blocks()
    manifest = read_manifest(tree)
    bad = manifest.iloc[[0]].assign(image_id="bad.png", path=str(tmp_path / "bad.png"))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # a decode error in a child: an error row
    manifest = pd.concat([manifest, bad], ignore_index=True)
    settings = ExplainSettings(methods=METHODS, size=SIZE, batch_size=4, input_cache="readwrite", decode_processes=1)
    worker = ExplainWorker(state, settings, warm_up=False, store_url=str(tmp_path / "a"))
    try:
        _, run_a, results = run_worker(manifest, tmp_path / "a", worker=worker)
        assert worker.host.write is not None and worker.host.write.pool is not None, "the writer process was used"
        assert decoded(results) == (11, 0)
        _, run_b, _ = run_worker(manifest, tmp_path / "b")
        a, b = open_store(str(tmp_path / "a")).run(run_a), open_store(str(tmp_path / "b")).run(run_b)
        assert a.index["status"].value_counts().to_dict() == {"ok": 10, "error": 1}
        assert_same_runs(a, b)
        # the inputs the writer process cached are the decoded ones: a new checkpoint reads them all
        seed7 = ExplainSettings(methods=METHODS, size=SIZE, batch_size=4, input_cache="readwrite", decode_processes=1)
        worker7 = ExplainWorker(weights(7)[0], seed7, warm_up=False, store_url=str(tmp_path / "a"))
        try:
            _, cached_id, again = run_worker(manifest, tmp_path / "a", seed=7, worker=worker7)
        finally:
            worker7.close()
        assert decoded(again) == (1, 10)  # the bad file is read again, and fails again
        _, plain_id, _ = run_worker(manifest, tmp_path / "plain", seed=7, cache="off")
        assert_same_runs(
            open_store(str(tmp_path / "a")).run(cached_id), open_store(str(tmp_path / "plain")).run(plain_id)
        )
    finally:
        worker.close()
    assert shared_blocks() == before
    # shared memory carried the maps of 3 + 3 shards, the first run's decoded inputs (3 shards) and the
    # second's one bad file (1 shard); nothing without room
    assert len(blocks) == (10 if shared else 0)


@pytest.mark.slow
def test_a_dead_decode_process_fails_the_shard_and_the_next_gets_a_new_pool(tree, tmp_path):
    import signal

    state, _ = weights(0)
    settings = ExplainSettings(methods=METHODS, size=SIZE, batch_size=4, input_cache="off", decode_processes=1)
    worker = ExplainWorker(state, settings, warm_up=False)
    pool = worker.host.decode.get()
    pool.submit(int, 0).result()  # the child is up
    for process in list(pool._processes.values()):
        os.kill(process.pid, signal.SIGKILL)
    with pytest.raises(RuntimeError, match="a decode process died"):
        run_worker(tree, tmp_path / "a", cache="off", worker=worker)
    run_worker(tree, tmp_path / "b", cache="off", worker=worker)  # a fresh pool
    assert worker.host.decode.pool is not pool
    worker.close()


@pytest.mark.slow
def test_a_dead_writer_process_fails_the_shard_and_leaves_nothing_visible(tree, tmp_path):
    import signal

    state, _ = weights(0)
    before = shared_blocks()
    settings = ExplainSettings(methods=METHODS, size=SIZE, batch_size=4, input_cache="readwrite", decode_processes=1)
    worker = ExplainWorker(state, settings, warm_up=False, store_url=str(tmp_path / "a"))
    pool = worker.host.write.get()
    pool.submit(int, 0).result()
    for process in list(pool._processes.values()):
        os.kill(process.pid, signal.SIGKILL)
    with pytest.raises(RuntimeError, match="the writer process died"):
        run_worker(tree, tmp_path / "a", worker=worker)
    assert not list((tmp_path / "a" / "runs").glob("*/index/*.parquet")), "no shard was committed"
    assert not InputCache(str(tmp_path / "a"), SIZE, "stretch").lookup(
        [identify(p) for p in read_manifest(tree)["path"]]
    )
    assert shared_blocks() == before, "the shard's blocks were unlinked although its writer died"
    _, _, results = run_worker(tree, tmp_path / "a", worker=worker)  # a fresh writer process
    assert sum(r.ok for r in results) == 10
    worker.close()


def test_identities_taken_on_a_pool_keep_the_paths_order(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from densecam_core.store.inputs.lookup import cached_model_inputs

    paths = []
    for i in range(11):
        path = tmp_path / f"{i}.png"
        path.write_bytes(b"x" * (i + 1))
        paths.append(str(path))
    paths.insert(4, str(tmp_path / "missing.png"))
    with ThreadPoolExecutor(3) as pool:
        taken, cached, _ = cached_model_inputs(
            InputCache(str(tmp_path / "s"), SIZE, "stretch"), paths, threads=3, executor=pool
        )
    assert taken == [identify(p) for p in paths] and taken[4] is None and cached == {}
    assert [t.size for t in taken if t is not None] == list(range(1, 12))


@pytest.mark.slow
def test_a_shard_with_a_read_past_its_deadline_leaves_the_next_shard_new_decode_processes(tree, tmp_path, monkeypatch):
    """A decode process may still be stuck in a read that outlived its deadline: the worker retires its
    pool after that shard, so the next shard gets new processes and the old ones are stopped."""
    from support.processes import ended

    import jobs.explain.worker as worker_module

    class LateLoader(worker_module.BatchLoader):
        def __iter__(self):
            yield from super().__iter__()
            self.late += 1  # as if one read had outlived its deadline

    monkeypatch.setattr(worker_module, "BatchLoader", LateLoader)
    settings = ExplainSettings(methods=METHODS, size=SIZE, batch_size=4, decode_processes=1)
    worker = ExplainWorker(weights(0)[0], settings, warm_up=False, store_url=str(tmp_path / "s"))
    leased, processes = [], []
    lease = worker.host.decode.lease

    def recorded():
        with lease() as pool:
            leased.append(pool)
            yield pool
            processes.extend(pool._processes.values())

    monkeypatch.setattr(worker.host.decode, "lease", contextlib.contextmanager(recorded))
    try:
        _, _, results = run_worker(tree, tmp_path / "s", worker=worker)
    finally:
        worker.close()
    assert len(results) == 3 and sum(r.ok for r in results) == 10
    assert len(set(leased)) == 3, "every shard after a late read got a new pool"
    assert len(processes) == 3 and ended(processes, 10), "a retired pool's processes outlived its shard"


def test_a_linked_image_leading_out_of_the_walked_folder_is_an_error_row(tmp_path):
    """The folder walk keeps it as a row; the job gives the worker the walked folder, and the worker's read
    refuses the link: an error row saying why, the outside file never read."""
    from PIL import Image

    from jobs.explain.job import ExplainConfig, prepare

    archive, elsewhere = tmp_path / "archive", tmp_path / "elsewhere"
    archive.mkdir()
    elsewhere.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((48, 48), 90, np.uint8)).save(archive / name)
    Image.fromarray(np.full((48, 48), 200, np.uint8)).save(elsewhere / "secret.png")
    (archive / "linked.png").symlink_to(elsewhere / "secret.png")
    job = prepare(ExplainConfig(manifest=str(archive), store=str(tmp_path / "store"), size=SIZE, methods=METHODS))
    assert job.settings.source_root == str(archive) and "linked.png" in set(job.manifest["image_id"])
    state, fingerprint = weights(0)
    settings = job.settings.__class__(**{**job.settings.__dict__, "batch_size": 4, "input_cache": "off"})
    spec = RunSpec(fingerprint, "x.pt", settings.run_settings(), 1, 1, block_grid(SIZE), 4)
    writer = RunWriter(str(tmp_path / "store"), spec)
    writer.create_or_open("test")
    planned = writer.plan(job.manifest)
    worker = ExplainWorker(state, settings, warm_up=False, store_url=str(tmp_path / "store"))
    shard = Shard(0, 0, len(planned))
    worker.process_shard(writer.run_url, spec.run_id, shard, 4, planned)
    index = open_store(str(tmp_path / "store")).run(spec.run_id).index.set_index("image_id")
    assert index.loc["linked.png", "status"] == "error"
    assert "a symbolic link leading outside the folder" in index.loc["linked.png", "error"]
    assert (index.loc[["a.png", "b.png"], "status"] == "ok").all()
    assert settings.run_settings() == ExplainSettings(**{**settings.__dict__, "source_root": None}).run_settings()
