"""The evaluation job: its checks before any work, the worker's shards and error rows, and (Ray) resume."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from support.runs import explain_tree

from densecam_core import generate_mura, load_densenet169, open_store
from densecam_core.evaluation.scorer import ScoreSettings
from densecam_core.model.checkpoint import state_dict_bytes
from densecam_core.store import scores as store_metrics
from densecam_core.store.layout import Shard, StoreError
from jobs.evaluate.job import EvaluateConfig, prepare
from jobs.evaluate.worker import EvaluateSettings, EvaluateWorker

SIZE = 64
METHODS = ("gradcam",)


@pytest.fixture(scope="module")
def explained(tmp_path_factory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("eval")
    tree = root / "tree"
    generate_mura(tree, images=10, seed=3, min_side=48, max_side=96)
    run_id = explain_tree(tree, root / "store")
    return tree, root / "store", run_id


def fresh_copy(explained, tmp_path: Path) -> tuple[Path, str]:
    _, store, run_id = explained
    shutil.copytree(store, tmp_path / "store")
    return tmp_path / "store", run_id


def test_bad_input_is_refused_before_any_work(explained, tmp_path):
    tree, store, run_id = explained
    base = dict(store=str(store), run=run_id, metrics=("deletion",))
    with pytest.raises(ValueError, match="unknown metrics"):
        prepare(EvaluateConfig(**{**base, "metrics": ("deletion", "faithfulness")}))
    with pytest.raises(ValueError, match="localisation needs --boxes"):
        prepare(EvaluateConfig(**{**base, "metrics": ("localisation",)}))
    other = tmp_path / "other.pt"
    torch.save(load_densenet169(seed=7).state_dict(), other)
    with pytest.raises(ValueError, match=r"model fingerprint .* but run .* was explained with"):
        prepare(EvaluateConfig(**base, checkpoint=str(other)))
    boxes = tmp_path / "boxes.csv"
    pd.DataFrame({"image_id": ["not/in/run.png"], "x0": [0], "y0": [0], "x1": [4], "y1": [4]}).to_csv(
        boxes, index=False
    )
    with pytest.raises(ValueError, match=r"1 image ids of .* are not in run"):
        prepare(EvaluateConfig(**{**base, "metrics": ("localisation",)}, boxes=str(boxes)))
    with pytest.raises(ValueError, match="larger than the run's"):
        prepare(EvaluateConfig(**base, sample=1000))
    empty = tmp_path / "empty-store"
    empty_run = explain_tree(tree, empty, shards=False)
    with pytest.raises(StoreError, match="no committed shards"):
        prepare(EvaluateConfig(store=str(empty), run=empty_run, metrics=("deletion",)))
    assert not (store / "runs" / run_id / "metrics").exists(), "nothing was written"


def test_cli_names_the_problem(explained, capsys):
    from jobs.cli.main import main

    _, store, run_id = explained
    assert main(["evaluate", str(store), "--run", run_id, "--metrics", "deletion,bogus"]) == 2
    assert "unknown metrics ['bogus']" in capsys.readouterr().err
    assert main(["evaluate", str(store)]) == 2
    assert "pass --metrics" in capsys.readouterr().err


def _worker(store: Path, run_id: str, metrics=("deletion",)) -> EvaluateWorker:
    settings = EvaluateSettings(
        score=ScoreSettings(metrics=metrics, steps=2), methods=METHODS, size=SIZE, resize="stretch", batch_size=4
    )
    return EvaluateWorker(state_dict_bytes(load_densenet169()), settings, store_url=str(store), run_id=run_id)


@pytest.mark.slow  # seconds of whole shards; the fast loop keeps a smaller test of this path
def test_worker_reads_the_cache_and_writes_error_rows_for_unreadable_or_changed_images(explained, tmp_path):
    tree, _, _ = explained
    copy = tmp_path / "tree"
    shutil.copytree(tree, copy)
    store = tmp_path / "store"
    run_id = explain_tree(copy, store)
    run = open_store(str(store)).run(run_id)
    rows = run.index[run.index["shard"] == 0].reset_index(drop=True)
    worker = _worker(store, run_id)
    first = worker.process_shard(run.url, Shard(0, 0, 4), rows)
    assert first.images_from_cache == len(rows) and first.images_decoded == 0 and first.errors == 0
    # now one file vanishes and one is replaced by an image of another size; the cache no longer matches either
    Path(rows.at[0, "path"]).unlink()
    from PIL import Image

    Image.new("L", (33, 41), 128).save(rows.at[1, "path"])
    store_metrics.clear_metrics(run.url)  # a committed part is never scored again: score the shard afresh
    second = worker.process_shard(run.url, Shard(0, 0, 4), rows)
    assert second.errors == 2 and second.ok == len(rows) - 2
    scores = run.metrics()
    errors = scores[scores["metric"] == "error"].set_index("image_id")["error"]
    assert set(errors.index) == {rows.at[0, "image_id"], rows.at[1, "image_id"]}
    assert "41x33 now but was" in errors[rows.at[1, "image_id"]]
    ok = scores[(scores["metric"] == "deletion_auc") & (scores["method"] == "cam")]
    assert sorted(ok["image_id"]) == sorted(rows["image_id"][2:]) and ok["value"].notna().all()
    assert set(scores["shard"]) == {0} and (scores.groupby("image_id")["row"].nunique() == 1).all()


@pytest.mark.slow
def test_damaged_metrics_part_is_named(explained, tmp_path):
    store, run_id = fresh_copy(explained, tmp_path)
    run = open_store(str(store)).run(run_id)
    rows = run.index[run.index["shard"] == 1].reset_index(drop=True)
    _worker(store, run_id, metrics=("deletion",)).process_shard(run.url, Shard(1, 4, 8), rows)
    part = Path(store_metrics.family_parts(run.url, "deletion")[1])
    part.write_bytes(part.read_bytes()[:100])
    with pytest.raises(StoreError, match="metrics part .* cannot be read"):
        run.metrics()


@pytest.mark.slow
def test_interrupted_evaluation_resumes_and_equals_a_clean_one(explained, tmp_path):
    """Ray: the driver stops after the first shard; the second start scores only the rest."""
    ray = pytest.importorskip("ray")
    from jobs.evaluate.job import run_evaluation

    _, store, run_id = explained
    interrupted, clean = tmp_path / "a", tmp_path / "b"
    shutil.copytree(store, interrupted)
    shutil.copytree(store, clean)
    settings = dict(run=run_id, metrics=("deletion", "randomisation"), steps=2, workers=1, progress=False, resamples=50)

    class Stop(Exception):
        pass

    def stop_after_first(state, result):
        raise Stop

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with pytest.raises(Stop):
            run_evaluation(EvaluateConfig(store=str(interrupted), **settings), hook=stop_after_first)
        summary, table = run_evaluation(EvaluateConfig(store=str(interrupted), **settings))
        assert summary.shards_skipped == 1 and summary.shards_done == summary.shards_total - 1
        _, clean_table = run_evaluation(EvaluateConfig(store=str(clean), **settings))
        with pytest.raises(ValueError, match="other settings"):
            run_evaluation(EvaluateConfig(store=str(clean), **{**settings, "steps": 3}))
    finally:
        ray.shutdown()
    columns = ["image_id", "method", "block", "metric", "stage"]
    a = open_store(str(interrupted)).run(run_id).metrics().sort_values(columns).reset_index(drop=True)
    b = open_store(str(clean)).run(run_id).metrics().sort_values(columns).reset_index(drop=True)
    assert len(a) == len(b) and not a.duplicated(columns).any(), "nothing scored twice"
    np.testing.assert_allclose(a["value"], b["value"], rtol=1e-6, atol=1e-9)
    pd.testing.assert_frame_equal(table, clean_table)
