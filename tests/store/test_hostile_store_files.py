"""The store's own files as hostile input: damaged or crafted index state, compacted files, run.json,
Zarr metadata, FIFOs and symbolic links. Each is named (a StoreError, or verify's report) and, where
the store can mend it, repaired by `densecam verify --repair`; never a traceback, a hang or a read
outside the store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from support.store import commit_all, committed_run, manifest, spec

from densecam_core import open_store
from densecam_core.store import layout
from densecam_core.store.compact import compact_run
from densecam_core.store.writer import RunWriter
from jobs.cli.verify import main as verify


def compacted(tmp_path, n: int = 8):
    writer, run = committed_run(tmp_path, n)
    compact_run(run)
    index_dir = Path(writer.run_url) / layout.INDEX_DIR
    return writer, index_dir, next(index_dir.glob("compact-*.parquet"))


def test_a_truncated_compacted_file_is_named_and_repair_makes_the_shards_recomputable(tmp_path, capsys):
    writer, _, compact_file = compacted(tmp_path)
    compact_file.write_bytes(compact_file.read_bytes()[:100])
    store = str(tmp_path / "store")
    with pytest.raises(layout.StoreError, match=r"compact-.*\.parquet is damaged.*densecam verify STORE --repair"):
        open_store(store).run("latest").read_index()
    assert verify([store]) == 1
    assert "unreadable" in capsys.readouterr().out
    assert verify([store, "--repair"]) == 0
    assert "dropped compact-" in capsys.readouterr().out
    assert writer.committed_shards() == set()  # the shards only it held: the next job recomputes them
    assert open_store(store).run("latest").index.empty
    commit_all(writer, writer.plan(manifest(8)))  # what the next job does
    assert sorted(open_store(store).run("latest").index["row"]) == list(range(8))
    assert verify([store]) == 0


def test_a_listed_compacted_file_that_is_missing_is_named_not_called_a_changing_index(tmp_path, capsys):
    _, _, compact_file = compacted(tmp_path)
    compact_file.unlink()
    with pytest.raises(layout.StoreError, match=r"compacted index file compact-.* is missing"):
        open_store(str(tmp_path / "store")).run("latest").read_index()
    assert verify([str(tmp_path / "store"), "--repair"]) == 0
    assert "missing" in capsys.readouterr().out


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        json.dumps({"files": ["../../../etc/passwd"], "shards": [0]}),
        json.dumps({"files": [], "shards": ["x"]}),
    ],
    ids=["not-json", "path-outside", "bad-shards"],
)
def test_a_damaged_compaction_state_is_a_store_error_and_repair_rebuilds_it(tmp_path, capsys, content):
    _, index_dir, _ = compacted(tmp_path)
    (index_dir / "_compacted.json").write_text(content)
    store = str(tmp_path / "store")
    with pytest.raises(layout.StoreError, match=r"_compacted.json is damaged"):
        open_store(store).run("latest").read_index()
    with pytest.raises(layout.StoreError, match=r"_compacted.json is damaged"):
        compact_run(open_store(store).run("latest"))
    assert verify([store]) == 1
    assert verify([store, "--repair"]) == 0
    assert "rebuilt _compacted.json" in capsys.readouterr().out
    assert sorted(open_store(store).run("latest").index["row"]) == list(range(8))  # every row back, once


def test_verify_checks_a_shard_without_any_ok_row(tmp_path, capsys):
    """A shard of missing files has only error rows: verify read nothing of it and crashed on a reshape."""
    writer = RunWriter(str(tmp_path / "store"), spec())
    writer.create_or_open("m")
    planned = writer.plan(manifest(8))
    commit_all(writer, planned)
    part = Path(writer.run_url) / layout.INDEX_DIR / layout.part_name(1)
    frame = pd.read_parquet(part)
    frame["status"], frame["error"] = "error", "missing file: /x"
    frame.to_parquet(part)
    chunk_dir = Path(writer.run_url) / layout.ZARR_DIR / "gradcam" / "block1" / "c" / "0"
    chunk = next(p for p in chunk_dir.rglob("*") if p.is_file())
    damaged = bytearray(chunk.read_bytes())
    damaged[len(damaged) // 2] ^= 1
    chunk.write_bytes(bytes(damaged))
    assert verify([str(tmp_path / "store")]) == 1
    out = capsys.readouterr().out
    assert "shard 0: gradcam/block1: corrupt chunk" in out and "Traceback" not in out


@pytest.mark.parametrize("value", [float("nan"), 0, -4, "8"], ids=["nan", "zero", "negative", "string"])
def test_a_run_json_with_a_bad_shard_size_is_named_by_every_command(tmp_path, capsys, value):
    writer, _ = committed_run(tmp_path)
    run_json = Path(writer.run_url) / layout.RUN_JSON
    meta = json.loads(run_json.read_text())
    meta["shard_size"] = value
    run_json.write_text(json.dumps(meta))
    store = str(tmp_path / "store")
    with pytest.raises(layout.StoreError, match=r"run.json is damaged: shard_size"):
        open_store(store).run(writer.spec.run_id)
    assert verify([store, "--run", writer.spec.run_id]) == 2
    assert "shard_size" in capsys.readouterr().err
    from jobs.cli.compact import main as compact

    assert compact([store, "--run", writer.spec.run_id]) == 2


def test_zarr_metadata_edited_to_another_dtype_is_reported(tmp_path, capsys):
    writer, _ = committed_run(tmp_path)
    zarr_json = Path(writer.run_url) / layout.ZARR_DIR / "gradcam" / "block2" / "zarr.json"
    consolidated = Path(writer.run_url) / layout.ZARR_DIR / "zarr.json"
    group = json.loads(consolidated.read_text())
    own = json.loads(zarr_json.read_text())
    for meta in (own, group["consolidated_metadata"]["metadata"]["gradcam/block2"]):
        meta["data_type"], meta["fill_value"] = "int32", 0  # float32 bits would read as integers
    zarr_json.write_text(json.dumps(own))
    consolidated.write_text(json.dumps(group))
    assert verify([str(tmp_path / "store")]) == 1
    out = capsys.readouterr().out
    assert "array 'gradcam/block2': data type int32, run.json implies float32" in out, out


def test_a_fifo_named_like_an_index_part_never_hangs_verify(tmp_path, capsys):
    writer, _ = committed_run(tmp_path)
    part = Path(writer.run_url) / layout.INDEX_DIR / layout.part_name(1)
    part.unlink()
    os.mkfifo(part)
    assert verify([str(tmp_path / "store")]) == 1  # returns: a FIFO is not opened for reading
    assert "not a regular file" in capsys.readouterr().out


def test_a_run_folder_linked_outside_the_store_is_not_followed(tmp_path, capsys):
    writer, _ = committed_run(tmp_path)
    outside = tmp_path / "elsewhere"
    os.rename(writer.run_url, outside)
    os.symlink(outside, writer.run_url)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in outside.rglob("*"))
    store = open_store(str(tmp_path / "store"))
    assert store.run_metadata() == {} and "outside the store" in store.problems[writer.spec.run_id]
    assert verify([str(tmp_path / "store"), "--repair"]) in (0, 1)
    assert f"skipped folder runs/{writer.spec.run_id}" in capsys.readouterr().out
    assert sorted((p.name, p.stat().st_mtime_ns) for p in outside.rglob("*")) == before  # nothing written there


def test_a_link_inside_a_run_to_a_file_outside_is_reported(tmp_path, capsys):
    writer, _ = committed_run(tmp_path)
    secret = tmp_path / "secret.parquet"
    pd.DataFrame({"row": [0], "status": ["ok"], "shard": [0]}).to_parquet(secret)
    part = Path(writer.run_url) / layout.INDEX_DIR / layout.part_name(1)
    part.unlink()
    os.symlink(secret, part)
    assert verify([str(tmp_path / "store")]) == 1
    assert "outside the store" in capsys.readouterr().out
    with pytest.raises(layout.StoreError, match=r"is a symbolic link to .*secret.parquet, outside the store"):
        open_store(str(tmp_path / "store")).run("latest").read_index()


@pytest.mark.timeout(60)
def test_a_fifo_named_like_a_cache_segment_hangs_neither_the_cache_nor_a_lookup_nor_verify(tmp_path, capsys):
    import uuid
    import warnings

    from densecam_core import generate_mura, read_manifest
    from densecam_core.store.inputs.cache import InputCache
    from densecam_core.store.inputs.identity import identify
    from jobs.cache import fill_cache

    generate_mura(tmp_path / "mura", images=6, seed=1, min_side=48, max_side=64)
    store = str(tmp_path / "store")
    fill_cache(str(tmp_path / "mura"), store, size=32, segment_size=4)
    folder = tmp_path / "store" / "inputs" / "s32-stretch-p1"
    os.mkfifo(folder / f"segment-{uuid.uuid4().hex}.parquet")
    paths = read_manifest(tmp_path / "mura")["path"].tolist()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hits = InputCache(store, 32, "stretch").lookup([identify(p) for p in paths])
        counts = fill_cache(str(tmp_path / "mura"), store, size=32, segment_size=4)
    assert len(hits) == 6 and counts["already_cached"] == 6
    assert any("not a regular file" in str(w.message) for w in caught)
    assert verify([store, "--inputs"]) == 1
    assert "not a regular file" in capsys.readouterr().out


def test_leftovers_of_killed_cache_writes_and_orphaned_catalogs_are_swept_once_old(tmp_path, capsys):
    import time

    from densecam_core import generate_mura
    from jobs.cache import fill_cache

    generate_mura(tmp_path / "mura", images=6, seed=1, min_side=48, max_side=64)
    store = str(tmp_path / "store")
    fill_cache(str(tmp_path / "mura"), store, size=32, segment_size=4)
    folder = tmp_path / "store" / "inputs" / "s32-stretch-p1"
    killed = folder / "_tmp-0123456789abcdef0123456789abcdef-segment-00000000000000000000000000000000.parquet"
    orphan = folder / "catalog-ffffffffffffffffffffffffffffffff.parquet"
    fresh = folder / "_tmp-fedcba9876543210fedcba9876543210-segment-11111111111111111111111111111111.parquet"
    for path in (killed, orphan, fresh):
        path.write_bytes(b"partial")
    hour_ago = time.time() - 7200
    for path in (killed, orphan):
        os.utime(path, (hour_ago, hour_ago))
    fill_cache(str(tmp_path / "mura"), store, size=32, segment_size=4)  # the next writer sweeps
    assert not killed.exists() and not orphan.exists()
    assert fresh.exists(), "a young temporary file may be a writer at work: kept"
    os.utime(fresh, (hour_ago, hour_ago))
    assert verify([store, "--inputs", "--repair"]) == 0
    assert not fresh.exists() and "left by a write that was killed" in capsys.readouterr().out


def test_two_fills_at_once_catalog_each_segment_once(tmp_path):
    import threading

    import pyarrow.parquet as pq

    from densecam_core import generate_mura
    from densecam_core.store.inputs.catalog import catalog_pointer
    from jobs.cache import fill_cache

    generate_mura(tmp_path / "mura", images=40, seed=2, min_side=48, max_side=64)
    store = str(tmp_path / "store")
    threads = [
        threading.Thread(
            target=fill_cache, args=(str(tmp_path / "mura"), store), kwargs={"size": 32, "segment_size": 2}
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    fill_cache(str(tmp_path / "mura"), store, size=32, segment_size=2)
    folder = tmp_path / "store" / "inputs" / "s32-stretch-p1"
    import fsspec

    catalog = pq.read_table(folder / catalog_pointer(fsspec.filesystem("file"), str(folder))).to_pandas()
    assert not catalog.duplicated(["segment", "row"]).any()
    assert set(catalog["segment"]) == {p.name for p in folder.glob("segment-*.parquet")}
