"""The input cache's identity of a file: stat (path, size, mtime) and content (a digest of the bytes)."""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from densecam_core import generate_mura, load_densenet169, open_store, read_manifest
from densecam_core.model.checkpoint import model_fingerprint, state_dict_bytes
from densecam_core.store.inputs.identity import identify
from densecam_core.store.layout import Shard
from densecam_core.store.writer import RunSpec, RunWriter
from densecam_core.vocabulary import block_grid
from jobs.explain.settings import ExplainSettings
from jobs.explain.worker import ExplainWorker

SIZE = 32


@functools.cache
def weights() -> tuple[bytes, str]:
    model = load_densenet169(seed=0)
    return state_dict_bytes(model), model_fingerprint(model)


def explain(tree: Path, store: Path, identity: str, cache: str = "readwrite") -> tuple[str, int, int]:
    """Explain every shard; returns the run id, images decoded and images from the cache."""
    state, fingerprint = weights()
    settings = ExplainSettings(
        methods=("gradcam",), size=SIZE, batch_size=4, input_cache=cache, cache_identity=identity
    )
    spec = RunSpec(fingerprint, "x.pt", settings.run_settings(), 1, 1, block_grid(SIZE), 4)
    writer = RunWriter(str(store), spec)
    writer.create_or_open("test")
    planned = writer.plan(read_manifest(tree))
    worker = ExplainWorker(state, settings, warm_up=False, store_url=str(store))
    decoded = cached = 0
    for index, rows in planned.groupby("shard"):
        result = worker.process_shard(
            writer.run_url, spec.run_id, Shard(int(index), int(index) * 4, int(rows["row"].max()) + 1), 4, rows
        )
        decoded, cached = decoded + result.images_decoded, cached + result.images_from_cache
    return spec.run_id, decoded, cached


def rewrite_in_place_keeping_size_and_time(path: Path) -> None:
    """Other pixels, the same byte length (PNG ignores bytes after IEND), the old modification time: what
    ``cp -p`` or ``rsync -t`` of an edited image leaves."""
    before = path.stat()
    size = Image.open(path).size
    buffer = io.BytesIO()
    Image.new("L", size, color=200).save(buffer, format="PNG")
    data = buffer.getvalue()
    assert len(data) < before.st_size
    path.write_bytes(data + b"\0" * (before.st_size - len(data)))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns


@pytest.fixture()
def tree(tmp_path) -> Path:
    generate_mura(tmp_path / "mura", images=8, seed=4, min_side=48, max_side=64, rgb_fraction=0.0)
    return tmp_path / "mura"


@pytest.mark.slow  # seconds of whole shards; the fast loop keeps a smaller test of this path
def test_stat_identity_misses_an_in_place_rewrite_and_content_identity_sees_it(tree, tmp_path):
    victim = Path(read_manifest(tree)["path"].iloc[2])
    for identity in ("stat", "content"):
        explain(tree, tmp_path / identity, identity)
    stat_before = identify(str(victim))
    content_before = identify(str(victim), content=True)
    rewrite_in_place_keeping_size_and_time(victim)
    assert identify(str(victim)) == stat_before, "the documented blind spot of stat identity"
    assert identify(str(victim), content=True) != content_before
    assert content_before.stamp.startswith("blake2b:")

    _, decoded, cached = explain(tree, tmp_path / "content", "content")
    assert (decoded, cached) == (1, 7)  # only the rewritten image is decoded again
    run_id, _, _ = explain(tree, tmp_path / "fresh", "content", cache="off")
    fresh = open_store(str(tmp_path / "fresh")).run(run_id)
    again = open_store(str(tmp_path / "content")).run(run_id)
    image_id = read_manifest(tree)["image_id"].iloc[2]
    assert np.array_equal(
        again.maps("gradcam", 4, image_ids=[image_id]), fresh.maps("gradcam", 4, image_ids=[image_id])
    )
    _, decoded, cached = explain(tree, tmp_path / "stat", "stat")
    assert (decoded, cached) == (0, 8)  # stat identity reads the stale input: why content identity exists


def test_verify_rechecks_cached_inputs_against_their_files(tree, tmp_path, capsys):
    from jobs.cli.verify import main as verify

    explain(tree, tmp_path / "store", "content")
    victim = Path(read_manifest(tree)["path"].iloc[5])
    rewrite_in_place_keeping_size_and_time(victim)
    Path(read_manifest(tree)["path"].iloc[6]).unlink()
    assert verify([str(tmp_path / "store"), "--inputs", "--check-sources"]) == 0
    out = capsys.readouterr().out
    assert "8 cached inputs, 2 whose source file changed or is gone" in out, out


def test_an_unknown_cache_identity_is_refused():
    from jobs.explain.config import ExplainConfig

    with pytest.raises(ValueError, match=r"`cache_identity` must be one of stat, content"):
        ExplainConfig(cache_identity="mtime").validate()
