"""Symbolic links that lead out of a local store, at every level it has: runs/, a run's run.json, index/,
heatmaps.zarr, one array, one chunk, an input-cache segment. The reader refuses them (a StoreError, or the
segment counted as damage and decoded again), ``densecam verify`` names them, and nothing outside the store
is read as the store's data."""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
from support.store import chunk_file, committed_run

from densecam_core import open_store
from densecam_core.store import layout
from jobs.cli.verify import main as verify


def _move_out(path: Path, tmp_path: Path) -> Path:
    """Replace ``path`` by a link to a copy of it outside the store (the data a reader must not follow)."""
    outside = tmp_path / "outside" / uuid.uuid4().hex
    outside.parent.mkdir(exist_ok=True)
    shutil.move(path, outside)
    os.symlink(outside, path)
    return outside


def test_runs_folder_linked_out_is_refused_and_verify_names_it(tmp_path, capsys):
    committed_run(tmp_path)
    _move_out(tmp_path / "store" / layout.RUNS_DIR, tmp_path)
    with pytest.raises(layout.StoreError, match=r"runs in store .* is a symbolic link to .*, outside the store"):
        open_store(str(tmp_path / "store"))
    assert verify([str(tmp_path / "store")]) == 2
    assert "outside the store" in capsys.readouterr().err


def test_run_json_linked_out_is_not_read(tmp_path, capsys):
    writer, _ = committed_run(tmp_path)
    _move_out(Path(writer.run_url) / layout.RUN_JSON, tmp_path)
    store = open_store(str(tmp_path / "store"))
    assert store.run_metadata() == {}
    assert "leads through a symbolic link" in store.problems[writer.spec.run_id]
    assert verify([str(tmp_path / "store")]) in (0, 1)
    assert f"skipped folder runs/{writer.spec.run_id}" in capsys.readouterr().out


def test_index_folder_linked_out_is_refused_and_named(tmp_path, capsys):
    writer, _ = committed_run(tmp_path)
    _move_out(Path(writer.run_url) / layout.INDEX_DIR, tmp_path)
    with pytest.raises(layout.StoreError, match="outside the store"):
        open_store(str(tmp_path / "store")).run("latest").read_index()
    assert verify([str(tmp_path / "store")]) == 1
    assert f"{layout.INDEX_DIR} is a symbolic link to" in capsys.readouterr().out


@pytest.mark.parametrize("level", ["heatmaps.zarr", "array", "chunk"])
def test_maps_linked_out_are_refused_and_named(tmp_path, capsys, level):
    writer, run = committed_run(tmp_path)
    expected = run.maps("gradcam", 4, rows=[0])
    zarr_dir = Path(writer.run_url) / layout.ZARR_DIR
    target = {
        "heatmaps.zarr": zarr_dir,
        "array": zarr_dir / "gradcam" / "block4",
        "chunk": chunk_file(writer, "gradcam/block4", 0),
    }[level]
    outside = _move_out(target, tmp_path)
    if level == "chunk":  # altered data outside: it must never come back as the run's maps
        outside.write_bytes(outside.read_bytes())
    reopened = open_store(str(tmp_path / "store")).run("latest")
    with pytest.raises(layout.StoreError, match="outside the store"):
        reopened.maps("gradcam", 4, rows=[0])
    assert verify([str(tmp_path / "store")]) == 1
    assert "a symbolic link to" in capsys.readouterr().out
    os.unlink(target)
    shutil.move(outside, target)
    np.testing.assert_array_equal(
        open_store(str(tmp_path / "store")).run("latest").maps("gradcam", 4, rows=[0]), expected
    )


@pytest.mark.timeout(60)
def test_an_input_cache_segment_linked_out_is_damage_never_data(tmp_path, capsys):
    from densecam_core import generate_mura, read_manifest
    from densecam_core.store.inputs.cache import InputCache
    from densecam_core.store.inputs.identity import identify
    from jobs.cache import fill_cache

    generate_mura(tmp_path / "mura", images=4, seed=1, min_side=48, max_side=64)
    store = str(tmp_path / "store")
    fill_cache(str(tmp_path / "mura"), store, size=32, segment_size=4)
    folder = tmp_path / "store" / "inputs" / "s32-stretch-p1"
    segment = next(folder.glob("segment-*.parquet"))
    _move_out(segment, tmp_path)
    paths = read_manifest(tmp_path / "mura")["path"].tolist()
    cache = InputCache(store, 32, "stretch")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hits = cache.lookup([identify(p) for p in paths])
        read = cache.read(hits)
    assert read == {}, "nothing is read through the link"
    assert any("outside" in str(w.message) for w in caught)
    assert verify([store, "--inputs"]) == 1
    assert "symbolic link" in capsys.readouterr().out
