"""Index compaction: every committed row exactly once at every step, appends beside it, recomputed shards,
the lock, and stores from before compaction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from support.store import commit_all, fake_outputs, index_rows, manifest, spec, write_shard

from densecam_core import open_store
from densecam_core.store import layout
from densecam_core.store.compact import compact_run
from densecam_core.store.layout import plan_shards
from densecam_core.store.lock import RunLock
from densecam_core.store.writer import RunWriter


def store_with(tmp_path, n: int = 20) -> tuple[RunWriter, str]:
    url = str(tmp_path / "store")
    writer = RunWriter(url, spec())
    writer.create_or_open("m")
    commit_all(writer, writer.plan(manifest(n)))
    return writer, url


def rows_seen(url: str) -> list[int]:
    return open_store(url).run("latest").index["row"].tolist()


def _other_tools(index_dir) -> dict[str, pd.DataFrame]:
    """The index as tools other than densecam read it: pandas on the folder, DuckDB on a glob."""
    import duckdb

    return {
        "pandas": pd.read_parquet(index_dir).sort_values("row").reset_index(drop=True),
        "duckdb": duckdb.sql(f"select * from read_parquet('{index_dir}/*.parquet') order by row").df(),
    }


@pytest.mark.parametrize("stop_after", ["write", "switch", None])
def test_every_row_once_whatever_step_compaction_stopped_at(tmp_path, stop_after):
    writer, url = store_with(tmp_path)
    before = open_store(url).run("latest").index
    run = open_store(url).run("latest")
    compact_run(run, stop_after=stop_after)
    after = open_store(url).run("latest")
    assert after.index.equals(before)  # same rows, same values, same order
    files = after.index_files()
    if stop_after is None:
        assert files.file_count == 1 and not files.parts and files.covered == {0, 1, 2, 3, 4}
        assert open_store(url).runs.loc[0, "images_committed"] == 20
    run_dir = tmp_path / "store" / "runs" / writer.spec.run_id
    swaps = list(run_dir.glob(f"{layout.INDEX_SWAP_PREFIX}*"))
    if stop_after == "write":  # the next index built beside the old one, not switched in
        assert len(swaps) == 1 and len(list(swaps[0].glob("compact-*.parquet"))) == 1
        assert len(list((run_dir / "index").glob("part-*"))) == 5
    if stop_after == "switch":  # the folders exchanged: the old index (5 parts) waits under the swap name
        assert len(swaps) == 1 and len(list(swaps[0].glob("part-*"))) == 5
        assert [p.name for p in (run_dir / "index").glob("*.parquet")] == [files.compacted[0].rsplit("/", 1)[-1]]
    for tool, seen in _other_tools(run_dir / "index").items():  # other tools: every row once at every step
        assert seen["row"].tolist() == list(range(20)), (stop_after, tool)
    compact_run(open_store(url).run("latest"))  # the next compaction finishes the work
    assert open_store(url).run("latest").index.equals(before)
    assert len(list((run_dir / "index").glob("*.parquet"))) == 1
    assert not list(run_dir.glob(f"{layout.INDEX_SWAP_PREFIX}*")), "the next compaction removes what a killed one left"


def test_where_folders_cannot_be_exchanged_compaction_switches_in_steps(tmp_path, monkeypatch):
    """Object stores and filesystems without an atomic folder exchange: the merged file beside the parts,
    the switch, then the deletions; densecam reads every row once at every step."""
    from densecam_core import fileio

    monkeypatch.setattr(fileio, "exchange_folders", lambda a, b: False)
    writer, url = store_with(tmp_path)
    before = open_store(url).run("latest").index
    compact_run(open_store(url).run("latest"), stop_after="switch")
    run_dir = tmp_path / "store" / "runs" / writer.spec.run_id
    assert not list(run_dir.glob(f"{layout.INDEX_SWAP_PREFIX}*")), "the unused next folder is removed"
    assert len(list((run_dir / "index").glob("part-*"))) == 5  # switched, not yet deleted: ignored, not read twice
    assert open_store(url).run("latest").index.equals(before)
    compact_run(open_store(url).run("latest"))
    assert open_store(url).run("latest").index.equals(before) and len(list((run_dir / "index").iterdir())) == 2


def test_appends_after_compaction_are_read_beside_it_and_compacted_next_time(tmp_path):
    writer, url = store_with(tmp_path, 8)
    compact_run(open_store(url).run("latest"))
    commit_all(writer, writer.plan(manifest(14)), skip={0, 1})
    run = open_store(url).run("latest")
    assert rows_seen(url) == list(range(14)) and len(run.index_files().parts) == 2
    filtered = run.read_index(filters=[("row", ">=", 6)], columns=["image_id", "row"])
    assert filtered["row"].tolist() == list(range(6, 14))
    assert np.all(run.maps("cam", rows=[13])[0] == 13 * 3)
    compact_run(run)
    assert rows_seen(url) == list(range(14)) and open_store(url).run("latest").index_files().file_count == 1


def test_a_recomputed_shard_replaces_its_compacted_rows(tmp_path):
    writer, url = store_with(tmp_path, 8)
    compact_run(open_store(url).run("latest"))
    writer.reopen({1})  # what the job does before recomputing shard 1 (--force, --redo-errors, verify --repair)
    assert rows_seen(url) == [0, 1, 2, 3]  # uncommitted while it is recomputed
    rows = writer.plan(manifest(8))
    rows = rows[rows["shard"] == 1]
    index = index_rows(rows, writer.spec.run_id)
    index["prob"] = 0.99
    write_shard(writer.run_url, plan_shards(4, 4, 4)[0], 4, fake_outputs(rows["row"].to_numpy(), writer.spec), index)
    seen = open_store(url).run("latest").index
    assert seen["row"].tolist() == list(range(8))
    assert np.allclose(seen["prob"].to_numpy(), [0.62] * 4 + [0.99] * 4)


def test_a_recompute_killed_before_its_compaction_leaves_other_tools_each_row_once(tmp_path):
    """The job commits a recomputed shard, then uncovers it, then dies before its final compaction: densecam
    reads the new rows, other tools the old ones, each row once; the next compaction gives everyone the new."""
    writer, url = store_with(tmp_path, 12)
    compact_run(open_store(url).run("latest"))
    rows = writer.plan(manifest(12))
    for shard in (0, 2):  # in the job's order: commit (the shard still covered), then uncover
        these = rows[rows["shard"] == shard]
        index = index_rows(these, writer.spec.run_id)
        index["prob"] = 0.99
        start = int(these["row"].min())
        write_shard(
            writer.run_url, plan_shards(4, 4, start)[0], 4, fake_outputs(these["row"].to_numpy(), writer.spec), index
        )
        writer.reopen({shard})
    index_dir = tmp_path / "store" / "runs" / writer.spec.run_id / "index"
    expected = [0.99] * 4 + [0.62] * 4 + [0.99] * 4
    assert np.allclose(open_store(url).run("latest").index["prob"], expected)
    for tool, seen in _other_tools(index_dir).items():
        assert seen["row"].tolist() == list(range(12)), tool  # each row once: the old rows, until compaction
        assert np.allclose(seen["prob"], 0.62), tool
    compact_run(open_store(url).run("latest"))
    assert np.allclose(open_store(url).run("latest").index["prob"], expected)
    for tool, seen in _other_tools(index_dir).items():
        assert seen["row"].tolist() == list(range(12)) and np.allclose(seen["prob"], expected), tool
    assert sorted(p.name for p in index_dir.iterdir() if p.name.startswith(("part", "_part"))) == []


def test_compaction_and_a_job_on_the_same_run_exclude_each_other(tmp_path):
    writer, url = store_with(tmp_path, 4)
    job = RunLock(writer.run_url)
    job.acquire()
    try:
        with pytest.raises(layout.StoreError, match="another job"):
            compact_run(open_store(url).run("latest"))
    finally:
        job.release()
    compact_run(open_store(url).run("latest"))


def test_a_store_from_before_compaction_opens_and_compacts(tmp_path):
    import shutil
    from pathlib import Path

    shutil.copytree(Path(__file__).parents[1] / "fixtures" / "store-v1", tmp_path / "v1")
    run = open_store(str(tmp_path / "v1")).run("latest")
    before = run.index
    assert pd.isna(open_store(str(tmp_path / "v1")).runs.loc[0, "images_committed"])
    compact_run(run)
    again = open_store(str(tmp_path / "v1"))
    assert again.run("latest").index.equals(before) and again.runs.loc[0, "images_committed"] == 6


def test_compact_command_reports_and_refuses_a_missing_store(tmp_path, capsys):
    from jobs.cli.compact import main

    _, url = store_with(tmp_path, 12)
    assert main([url]) == 0
    assert "12 rows, 3 index files -> 1 (3 parts merged)" in capsys.readouterr().out
    assert main([str(tmp_path / "nothing")]) == 2
    assert "not a densecam store" in capsys.readouterr().err
