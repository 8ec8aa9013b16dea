"""The store: round trip, commit protocol, append, memory://, xarray, geometry-exact heatmaps, compare."""

from __future__ import annotations

import json
import threading
import time

import fsspec
import numpy as np
import pandas as pd
import pytest
from support.store import (
    GRID,
    SIZE,
    chunk_file,
    commit_all,
    committed_run,
    fake_outputs,
    index_rows,
    manifest,
    spec,
    write_shard,
)

from densecam_core import Geometry, compare_runs, fileio, open_store
from densecam_core.store import layout
from densecam_core.store.layout import plan_shards
from densecam_core.store.lock import RunLock
from densecam_core.store.writer import RunWriter


@pytest.mark.parametrize("url_kind", ["local", "memory"])
def test_round_trip_and_partial_shard_invisible(tmp_path, url_kind):
    url = str(tmp_path / "store") if url_kind == "local" else "memory://densecam-test/store-rt"
    writer = RunWriter(url, spec())
    assert writer.create_or_open("manifest.csv")
    planned = writer.plan(manifest(10))
    assert list(planned["row"]) == list(range(10)) and list(planned["shard"]) == [0] * 4 + [1] * 4 + [2] * 2
    commit_all(writer, planned, skip={1})
    # shard 1: arrays written, part file missing (a crash between the two steps) + a temporary part
    rows = planned[planned["shard"] == 1]
    shard = plan_shards(4, 4, 4)[0]
    group_url = fileio.url_join(writer.run_url, layout.ZARR_DIR)
    import zarr

    zarr.open_array(store=group_url, path="cam", mode="r+")[4:8] = np.full((4, 1, *GRID[4]), 7.0, np.float32)
    fs, root = fileio.filesystem(writer.run_url)
    fs.pipe_file(fileio.join(root, layout.INDEX_DIR, "part-000001.parquet.tmp-abc"), b"garbage")
    run = open_store(url).run("latest")
    assert sorted(run.index["row"]) == [0, 1, 2, 3, 8, 9]
    assert run.index["hospital"].eq("north").all() and run.index["label"].eq(1).all()
    maps = run.maps("gradcam", 2, image_ids=["img009.png", "img000.png"])
    assert maps.shape == (2, 1, *GRID[2])
    assert np.all(maps[0] == 9 * 5) and np.all(maps[1] == 0)  # block2 is the 5th array (logits, targets, cam, ...)
    assert np.all(run.maps("cam", None, rows=[8])[0] == 8 * 3)
    with pytest.raises(KeyError, match="img005.png"):
        run.maps("cam", image_ids=["img005.png"])
    # the crashed shard is simply redone, idempotently
    write_shard(
        writer.run_url,
        shard,
        4,
        fake_outputs(rows["row"].to_numpy(), writer.spec),
        index_rows(rows, writer.spec.run_id),
    )
    write_shard(
        writer.run_url,
        shard,
        4,
        fake_outputs(rows["row"].to_numpy(), writer.spec),
        index_rows(rows, writer.spec.run_id),
    )
    run = open_store(url).run(writer.spec.run_id)
    assert sorted(run.index["row"]) == list(range(10))
    assert np.all(run.maps("cam", rows=[5])[0] == 5 * 3)  # cam is the 3rd array
    assert pd.isna(open_store(url).runs.loc[0, "images_committed"])  # listings read run.json, never the index
    assert writer.record_counts()["images"] == 10  # what the job does when it finishes
    assert open_store(url).runs.loc[0, "images_committed"] == 10
    filtered = run.read_index(filters=[("row", ">=", 8)])
    assert list(filtered["row"]) == [8, 9]


def test_append_new_images_at_next_shard_boundary(tmp_path):
    writer = RunWriter(str(tmp_path / "s"), spec())
    writer.create_or_open("m")
    first = writer.plan(manifest(6))
    commit_all(writer, first)
    before = open_store(str(tmp_path / "s")).run("latest").maps("gradcam", 1, rows=list(range(6)))
    second = writer.plan(pd.concat([manifest(6), manifest(3, start=6)], ignore_index=True))
    assert list(second["row"]) == [0, 1, 2, 3, 4, 5, 8, 9, 10]  # rows 6-7 stay unused: chunk 1 is committed
    assert writer.committed_shards() == {0, 1}
    commit_all(writer, second[second["shard"] == 2])
    run = open_store(str(tmp_path / "s")).run("latest")
    assert len(run.index) == 9 and run.index["image_id"].is_unique
    assert np.array_equal(run.maps("gradcam", 1, rows=list(range(6))), before)
    assert writer.plan(manifest(9))["row"].tolist() == [0, 1, 2, 3, 4, 5, 8, 9, 10]  # stable on re-plan


def test_to_xarray_dims_and_coordinates(tmp_path):
    writer = RunWriter(str(tmp_path / "s"), spec(methods=("gradcam", "layercam")))
    writer.create_or_open("m")
    commit_all(writer, writer.plan(manifest(5)))
    dataset = open_store(str(tmp_path / "s")).run("latest").to_xarray()
    assert dataset["gradcam_block1"].dims == ("image", "target", "y_b1", "x_b1")
    assert dataset["logits"].dims == ("image", "class") and dataset["targets"].dims == ("image", "target")
    assert dataset["gradcam_block1"].shape == (5, 1, *GRID[1])
    assert list(dataset["image"].values) == [f"img{i:03d}.png" for i in range(5)]
    assert dataset["body_part"].values.tolist() == ["WRIST"] * 5
    assert float(dataset["layercam_block3"].sel(image="img004.png").max()) == 4 * 10  # the 10th array
    import zarr

    array = zarr.open_array(store=fileio.url_join(writer.run_url, layout.ZARR_DIR), path="gradcam/block1", mode="r")
    assert array.metadata.dimension_names == ("image", "target", "y_b1", "x_b1") and array.chunks[0] == 4


def test_to_xarray_is_lazy_until_values_are_asked_for(tmp_path, monkeypatch):
    from zarr.storage import LocalStore

    writer = RunWriter(str(tmp_path / "s"), spec(methods=("gradcam", "layercam")))
    writer.create_or_open("m")
    commit_all(writer, writer.plan(manifest(9)))
    run = open_store(str(tmp_path / "s")).run("latest")
    assert len(run.index) == 9  # the index is read eagerly: it gives the coordinates
    reads: list[str] = []
    original = LocalStore.get

    async def counting_get(self, key, *args, **kwargs):
        reads.append(key)
        return await original(self, key, *args, **kwargs)

    monkeypatch.setattr(LocalStore, "get", counting_get)
    dataset = run.to_xarray()
    chunk_reads = [k for k in reads if "/c/" in k or k.startswith("c/")]
    assert chunk_reads == [], chunk_reads
    one = dataset["gradcam_block2"].sel(image="img005.png").values  # one image: only its shard's chunk
    chunk_reads = [k for k in reads if "/c/" in k or k.startswith("c/")]
    assert len(chunk_reads) == 1 and chunk_reads[0].endswith("c/1/0/0/0") and float(one.max()) == 5 * 5


def test_format_1_store_still_opens(tmp_path):
    import shutil
    from pathlib import Path

    fixture = Path(__file__).parents[1] / "fixtures" / "store-v1"
    store = tmp_path / "v1"
    shutil.copytree(fixture, store)
    run = open_store(str(store)).run("latest")
    assert run.format_version == 1 and len(run.index) == 6
    # the fixture's writer stored row + i in its i-th array: logits, cam, gradcam/block1..4
    assert run.maps("logits", rows=[5])[0, 0] == 5 and run.maps("cam", rows=[2])[0].max() == 3
    assert run.maps("gradcam", 3, rows=[4])[0].max() == 4 + 4
    assert run.targets(rows=[0, 1]).tolist() == [[0], [0]]
    dataset = run.to_xarray()
    assert dataset["gradcam_block4"].dims == ("image", "target", "y_b4", "x_b4") and dataset.sizes["image"] == 6


@pytest.mark.parametrize("mode", ["stretch", "pad"])
def test_heatmap_peaks_inside_a_known_lesion_of_a_non_square_image(tmp_path, mode):
    height, width = 60, 140
    box = (96, 38, 110, 50)  # x0, y0, x1, y1 in original pixels
    geometry = Geometry(height, width, SIZE, mode)
    writer = RunWriter(str(tmp_path / mode), spec())
    writer.create_or_open("m")
    planned = writer.plan(manifest(1))
    h, w = GRID[1]
    cx, cy = geometry.original_to_input((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    gy, gx = np.mgrid[0:h, 0:w]
    bump = np.exp(-(((gx + 0.5) * SIZE / w - cx) ** 2 + ((gy + 0.5) * SIZE / h - cy) ** 2) / 20.0).astype(np.float32)
    outputs = fake_outputs(np.array([0]), writer.spec)
    outputs["gradcam/block1"] = bump[None, None]
    write_shard(
        writer.run_url, plan_shards(1, 4)[0], 4, outputs, index_rows(planned, writer.spec.run_id, height, width, mode)
    )
    run = open_store(str(tmp_path / mode)).run("latest")
    heat = run.heatmap("img000.png", "gradcam", 1)
    assert heat.shape == (height, width) and np.isclose(heat.max(), 1.0) and np.isclose(heat.min(), 0.0)
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    assert box[0] <= x < box[2] and box[1] <= y < box[3], (x, y)
    raw = run.heatmap("img000.png", "gradcam", 1, normalise=False)
    assert raw.max() <= bump.max() + 1e-6
    with pytest.warns(DeprecationWarning, match="now spelt `normalise`"):  # the keyword's former spelling
        assert np.array_equal(run.heatmap("img000.png", "gradcam", 1, normalize=False), raw)
    with pytest.raises(TypeError, match="unexpected keyword"):
        run.heatmap("img000.png", "gradcam", 1, normalised=False)


def test_compare_runs_reports_changes(tmp_path):
    url = str(tmp_path / "s")
    runs = []
    for fingerprint, scale in (("a" * 64, 1.0), ("b" * 64, -1.0)):
        writer = RunWriter(url, spec(fingerprint))
        writer.create_or_open("m")
        planned = writer.plan(manifest(4))
        for _shard_index, rows in planned.groupby("shard"):
            outputs = fake_outputs(rows["row"].to_numpy(), writer.spec)
            ramp = np.arange(np.prod(GRID[4]), dtype=np.float32).reshape(GRID[4])
            outputs["gradcam/block4"] = np.stack([scale * ramp + i for i in range(len(rows))])[:, None]
            index = index_rows(rows, writer.spec.run_id)
            index["prob"] = 0.2 if scale > 0 else 0.7
            write_shard(writer.run_url, plan_shards(len(rows), 4)[0], 4, outputs, index)
        runs.append(open_store(url).run(fingerprint[:8]))
    table = compare_runs(runs[0], runs[1], "gradcam", 4)
    assert len(table) == 4
    assert np.allclose(table["prob_change"], 0.5)
    assert np.allclose(table["map_correlation"], -1.0)
    assert (table["top_iou"] == 0).all()
    same = compare_runs(runs[0], runs[0], "gradcam", 4)
    assert np.allclose(same["map_correlation"], 1.0) and (same["top_iou"] == 1).all()


def test_bad_stores_and_runs_explain_what_is_there(tmp_path):
    with pytest.raises(layout.StoreError, match="not a densecam store"):
        open_store(str(tmp_path))
    writer = RunWriter(str(tmp_path / "s"), spec())
    writer.create_or_open("m")
    store = open_store(str(tmp_path / "s"))
    with pytest.raises(layout.StoreError, match=f"matches none of the runs: {writer.spec.run_id}"):
        store.run("run-doesnotexist")
    fs = fsspec.filesystem("file")
    marker = str(tmp_path / "s" / layout.MARKER)
    fs.pipe_file(marker, b'{"format": "densecam-heatmap-store", "format_version": 99}')
    with pytest.raises(layout.StoreError, match="format version 99, newer than this densecam's 2"):
        open_store(str(tmp_path / "s"))
    with pytest.raises(layout.StoreError, match="shard size 4, not 8"):
        other = RunWriter(str(tmp_path / "t"), spec(shard_size=4))
        other.create_or_open("m")
        RunWriter(str(tmp_path / "t"), spec(shard_size=8)).create_or_open("m")


def test_run_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    url = str(tmp_path / "run")
    first = RunLock(url)
    first.acquire()
    with pytest.raises(layout.StoreError, match=r"another job \(host .*, pid \d+"):
        RunLock(url).acquire()
    first.release()
    dead = RunLock(url)
    dead.holder["pid"] = 2**22 + 12345  # no such process on this host
    dead.acquire()
    taker = RunLock(url)
    taker.acquire()  # the dead holder's lock is taken over
    assert fileio.read_json(taker.fs, taker.path)["pid"] == taker.holder["pid"]
    taker.release()


def test_overlay_blends_the_heatmap_onto_the_radiograph(tmp_path):
    from PIL import Image

    height, width = 40, 70
    picture = tmp_path / "xray.png"
    Image.fromarray(np.full((height, width), 60, np.uint8)).save(picture)
    writer = RunWriter(str(tmp_path / "s"), spec())
    writer.create_or_open("m")
    planned = writer.plan(manifest(1))
    planned["path"] = str(picture)
    outputs = fake_outputs(np.array([0]), writer.spec)
    ramp = np.tile(np.arange(GRID[4][1], dtype=np.float32), (GRID[4][0], 1))
    outputs["gradcam/block4"] = ramp[None, None]  # hot on the right, cold on the left
    write_shard(
        writer.run_url, plan_shards(1, 4)[0], 4, outputs, index_rows(planned, writer.spec.run_id, height, width)
    )
    rgb = open_store(str(tmp_path / "s")).run("latest").overlay("img000.png", "gradcam", 4, alpha=0.5, colormap="jet")
    assert rgb.shape == (height, width, 3) and rgb.dtype == np.uint8
    left, right = rgb[:, :5].reshape(-1, 3).mean(0), rgb[:, -5:].reshape(-1, 3).mean(0)
    assert left[2] > left[0] and right[0] > right[2], "jet: blue where cold, red where hot"
    assert not np.allclose(rgb, 60), "the heatmap is visible"


def test_reader_never_follows_a_crafted_run_json_or_index_url_outside_the_store(tmp_path):
    store = tmp_path / "store"
    writer = RunWriter(str(store), spec())
    writer.create_or_open("m")
    planned = writer.plan(manifest(4))
    commit_all(writer, planned)
    # a folder beside the store that a crafted run.json points at
    outside = tmp_path / "outside"
    outside.mkdir()
    crafted = store / "runs" / "run-0123456789abcdef"
    crafted.mkdir()
    meta = json.loads((store / "runs" / writer.spec.run_id / "run.json").read_text())
    (crafted / "run.json").write_text(json.dumps({**meta, "run_id": "../../outside", "created": "9999"}))
    (store / "runs" / "..evil").mkdir()
    opened = open_store(str(store))
    assert list(opened.run_metadata()) == [writer.spec.run_id]
    assert "names run '../../outside'" in opened.problems["run-0123456789abcdef"]
    assert "names run" in open_store(str(store)).problems["run-0123456789abcdef"], "listed on first look"
    assert opened.run("latest").run_id == writer.spec.run_id
    with pytest.raises(layout.StoreError, match="matches none of the runs"):
        opened.run("../..")
    assert len(opened.runs) == 1
    # an index row whose path is a URL is not fetched unless asked
    run = opened.run("latest")
    image_id = run.index["image_id"].iloc[0]
    run._by_id.loc[image_id, "path"] = "http://127.0.0.1:9/secret.png"
    with pytest.raises(layout.StoreError, match="allow_remote=True"):
        run.overlay(image_id)


def test_driver_dying_between_plan_and_grow_loses_nothing(tmp_path, monkeypatch):
    """A plan segment without grown arrays: the next plan grows them, and a write outside is refused."""
    writer = RunWriter(str(tmp_path / "store"), spec())
    writer.create_or_open("m")
    commit_all(writer, writer.plan(manifest(4)))
    monkeypatch.setattr(RunWriter, "grow", lambda self, rows: None)  # the driver dies before growing
    appended = writer.plan(manifest(8))
    monkeypatch.undo()
    late = appended[appended["shard"] == 1]
    shard = plan_shards(len(late), 4, 4)[0]
    with pytest.raises(layout.StoreError, match="outside array"):
        write_shard(
            writer.run_url,
            shard,
            4,
            fake_outputs(late["row"].to_numpy(), writer.spec),
            index_rows(late, writer.spec.run_id),
        )
    again = writer.plan(manifest(8))  # the next job: same rows, arrays grown before any shard is written
    assert again["row"].tolist() == appended["row"].tolist()
    commit_all(writer, again, skip={0})
    run = open_store(str(tmp_path / "store")).run("latest")
    assert len(run.index) == 8 and np.isfinite(run.maps("gradcam", 1, rows=list(range(8)))).all()


def test_one_index_schema_per_run_so_no_append_makes_a_store_unreadable(tmp_path):
    from densecam_core.store.writer import recorded_extra_types

    first = manifest(4)
    first["age"] = [61, 47, 33, 80]  # int64 in the first shards
    writer = RunWriter(str(tmp_path / "store"), spec())
    writer.create_or_open("m", first)
    meta = json.loads((tmp_path / "store" / "runs" / writer.spec.run_id / "run.json").read_text())
    types = recorded_extra_types(meta["index_extra_types"])
    assert str(types["age"]) == "int64" and str(types["hospital"]) in ("string", "large_string")
    planned = writer.plan(first)
    for _, rows in planned.groupby("shard"):
        shard = plan_shards(len(rows), 4, int(rows["row"].min()))[0]
        write_shard(
            writer.run_url,
            shard,
            4,
            fake_outputs(rows["row"].to_numpy(), writer.spec),
            index_rows(rows, writer.spec.run_id),
            types,
        )
    appended = manifest(8)
    appended["age"] = [61, 47, 33, 80, 52, None, 70, 18]  # one empty cell: pandas makes it float64
    assert appended["age"].dtype == "float64"
    assert not writer.create_or_open("m", appended)  # fits int64: accepted
    late = writer.plan(appended)
    late = late[late["shard"] == 1]
    write_shard(
        writer.run_url,
        plan_shards(4, 4, 4)[0],
        4,
        fake_outputs(late["row"].to_numpy(), writer.spec),
        index_rows(late, writer.spec.run_id),
        types,
    )
    store = open_store(str(tmp_path / "store"))
    index = store.run("latest").index
    assert str(index["age"].dtype) in ("Int64", "int64", "float64") and index["age"].isna().sum() == 1
    assert index["age"].dropna().tolist() == [61, 47, 33, 80, 52, 70, 18]
    assert len(index) == 8
    fractional = appended.assign(age=[61, 47, 33, 80, 52.5, None, 70, 18])
    with pytest.raises(layout.StoreError, match="'age' was int64 when this run was created"):
        writer.create_or_open("m", fractional)


def test_parts_that_disagree_still_read_and_a_broken_run_does_not_hide_the_others(tmp_path):
    writer = RunWriter(str(tmp_path / "store"), spec())
    writer.create_or_open("m")
    planned = writer.plan(manifest(8))
    rows_by_shard = dict(list(planned.groupby("shard")))
    for shard_index, ages in ((0, [1, 2, 3, 4]), (1, [1.5, None, 3.0, 4.0])):  # written before this change
        rows = rows_by_shard[shard_index].assign(age=ages)
        write_shard(
            writer.run_url,
            plan_shards(4, 4, 4 * shard_index)[0],
            4,
            fake_outputs(rows["row"].to_numpy(), writer.spec),
            index_rows(rows, writer.spec.run_id),
        )
    other = RunWriter(str(tmp_path / "store"), spec(fingerprint="e" * 64))
    other.create_or_open("m")
    commit_all(other, other.plan(manifest(4)))
    broken = tmp_path / "store" / "runs" / other.spec.run_id / "index" / "part-000000.parquet"
    broken.write_bytes(b"PAR1 not parquet")
    store = open_store(str(tmp_path / "store"))
    ages = store.run(writer.spec.run_id).index["age"]
    assert ages.iloc[:5].tolist() == [1.0, 2.0, 3.0, 4.0, 1.5] and ages.isna().sum() == 1
    writer.record_counts()
    runs = open_store(str(tmp_path / "store")).runs.set_index("run_id")["images_committed"]
    assert runs[writer.spec.run_id] == 8 and pd.isna(runs[other.spec.run_id])  # listed, never read
    with pytest.raises(Exception, match="part-000000.parquet"):  # the broken run names its broken file
        store.run(other.spec.run_id).read_index()


def stale_lock(url: str, **holder) -> None:
    lock = RunLock(url)
    lock.holder.update(holder)
    lock.fs.makedirs(url, exist_ok=True)
    fileio.write_json_atomic(lock.fs, lock.path, lock.holder)


def test_run_lock_takeover_is_atomic_under_a_race(tmp_path):
    """Several jobs taking over the same stale lock at once: exactly one wins, the others are refused."""
    from concurrent.futures import ThreadPoolExecutor

    for trial in range(20):
        url = str(tmp_path / f"run{trial}")
        stale_lock(url, pid=2**22 + 7, heartbeat=0.0)
        barrier = threading.Barrier(6)

        def take(_: int, url: str = url, barrier: threading.Barrier = barrier) -> str:
            barrier.wait()
            try:
                RunLock(url).acquire()
                return "acquired"
            except layout.StoreError as exc:
                return "refused" if "another job" in str(exc) else f"error: {exc}"

        with ThreadPoolExecutor(6) as pool:
            outcomes = list(pool.map(take, range(6)))
        assert sorted(outcomes) == ["acquired"] + ["refused"] * 5, outcomes


def test_run_lock_judges_a_same_host_holder_by_process_start_and_heartbeat(tmp_path):
    import os

    # our own PID after a container restart: same number, another process start
    stale_lock(str(tmp_path / "a"), pid=os.getpid(), pid_start="1")
    RunLock(str(tmp_path / "a")).acquire()
    # the PID now belongs to another live process (pid 1 runs), its heartbeat a day old
    stale_lock(str(tmp_path / "b"), pid=1, pid_start=None, heartbeat=time.time() - 86400)
    RunLock(str(tmp_path / "b")).acquire()
    # a live holder with a fresh heartbeat is refused
    live = RunLock(str(tmp_path / "c"))
    live.acquire()
    with pytest.raises(layout.StoreError, match="another job"):
        RunLock(str(tmp_path / "c")).acquire()
    # a holder that stalled and was taken over finds out at its next heartbeat
    stalled = RunLock(str(tmp_path / "d"))
    stalled.acquire()
    stale_lock(str(tmp_path / "d"), pid=2**22 + 9)  # the other job now holds it
    with pytest.raises(layout.StoreError, match="lost the run lock"):
        stalled.heartbeat()
    stalled.release()  # not ours: left in place
    assert fileio.read_json(stalled.fs, stalled.path)["pid"] == 2**22 + 9


def test_every_flipped_bit_is_an_error_never_other_maps(tmp_path):
    writer, run = committed_run(tmp_path)
    expected = run.maps("gradcam", 2, rows=list(range(4)))
    path = chunk_file(writer, "gradcam/block2", 0)
    original = path.read_bytes()
    silent = 0
    for position in range(0, len(original), max(1, len(original) // 150)):
        for bit in (0, 5):
            damaged = bytearray(original)
            damaged[position] ^= 1 << bit
            path.write_bytes(bytes(damaged))
            fresh = open_store(str(tmp_path / "store")).run("latest")
            try:
                values = fresh.maps("gradcam", 2, rows=list(range(4)))
            except layout.StoreError as exc:
                assert "is corrupt" in str(exc) and "gradcam/block2" in str(exc) and "0-3" in str(exc)
                continue
            silent += not np.array_equal(values, expected, equal_nan=True)
    path.write_bytes(original)
    assert silent == 0


def test_deleted_chunk_is_named_and_verify_repairs_by_uncommitting(tmp_path, capsys):
    from jobs.cli.verify import main as verify

    writer, run = committed_run(tmp_path)
    chunk_file(writer, "cam", 1).unlink()
    with pytest.raises(layout.StoreError, match=r"array .cam. has no values for committed ok rows 4-5"):
        run.maps("cam", rows=[4, 5])
    assert run.maps("cam", rows=[0]).shape == (1, 1, *GRID[4])  # the sound shard still reads
    bit = chunk_file(writer, "gradcam/block3", 0)
    damaged = bytearray(bit.read_bytes())
    damaged[len(damaged) // 2] ^= 4
    bit.write_bytes(bytes(damaged))
    assert verify([str(tmp_path / "store")]) == 1
    report = capsys.readouterr().out
    assert (
        "shard 1: cam: 4 ok rows without finite values" in report and "shard 0: gradcam/block3: corrupt chunk" in report
    )
    assert verify([str(tmp_path / "store"), "--repair"]) == 0
    assert writer.committed_shards() == set()  # both damaged shards uncommitted: the next job redoes them
    assert open_store(str(tmp_path / "store")).run("latest").index.empty
    commit_all(writer, writer.plan(manifest(8)))  # what the next job does
    assert verify([str(tmp_path / "store")]) == 0


@pytest.mark.slow
def test_a_reader_during_a_write_sees_only_committed_shards_with_finite_maps(tmp_path):
    writer = RunWriter(str(tmp_path / "store"), spec(methods=("gradcam", "layercam")))
    writer.create_or_open("m")
    planned = writer.plan(manifest(64))
    done = threading.Event()

    def write_all() -> None:
        try:
            commit_all(writer, planned)
        finally:
            done.set()

    thread = threading.Thread(target=write_all)
    thread.start()
    seen: set[int] = set()

    def poll() -> None:
        run = open_store(str(tmp_path / "store")).run("latest")
        rows = run.index["row"].to_numpy()
        assert len(rows) % 4 == 0  # whole shards only
        for method, block in (("cam", None), ("gradcam", 1), ("layercam", 4)):
            assert np.isfinite(run.maps(method, block, rows=rows)).all()  # raises on a committed row without values
        seen.add(len(rows))

    while not done.is_set():
        poll()
    thread.join()
    poll()
    assert len(seen) >= 2 and max(seen) == 64  # it did read while the writer was part-way


def test_a_process_that_keeps_a_runs_arrays_open_sees_them_grown_and_recreated(tmp_path):
    """Writers keep a run's arrays open between shards (``run_created``): a shard past the rows they held
    when opened (the driver grew the run since) and a run deleted and created again at the same URL are
    both written where a fresh reader finds them."""
    import shutil
    from pathlib import Path

    url = str(tmp_path / "store")

    def commit(writer: RunWriter, planned: pd.DataFrame, shard_index: int) -> None:
        rows = planned[planned["shard"] == shard_index]
        created = json.loads((Path(writer.run_url) / layout.RUN_JSON).read_text())["created"]
        shard = plan_shards(len(rows), 4, int(rows["row"].min()))[0]
        outputs = fake_outputs(rows["row"].to_numpy(), writer.spec)
        write_shard(writer.run_url, shard, 4, outputs, index_rows(rows, writer.spec.run_id), None, created)

    writer = RunWriter(url, spec())
    writer.create_or_open("a.csv")
    commit(writer, writer.plan(manifest(4)), 0)  # opens the arrays at 4 rows and keeps them
    grown = writer.plan(manifest(8))  # the driver grows every array to 8 rows
    commit(writer, grown, 1)
    run = open_store(url).run(writer.spec.run_id)
    assert sorted(run.index["row"]) == list(range(8))
    assert np.all(run.maps("cam", rows=[6])[0] == 6 * 3)  # cam is the 3rd array of fake_outputs

    shutil.rmtree(writer.run_url)  # the same run created again: new arrays behind the same URL
    again = RunWriter(url, spec())
    again.create_or_open("b.csv")
    commit(again, again.plan(manifest(4, start=100)), 0)
    run = open_store(url).run(again.spec.run_id)
    assert run.index["image_id"].tolist() == [f"img{i:03d}.png" for i in range(100, 104)]
    assert np.all(run.maps("cam", rows=[2])[0] == 2 * 3)
