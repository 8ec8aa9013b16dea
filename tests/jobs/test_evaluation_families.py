"""Scores stored per metric family (Ray): a family added to a scored run is scored alone, the others are kept as
they are; settings that would mix samples or seeds are refused naming the family; ``--force``; and a run scored
before families had folders (every family in one part) is kept and extended the same way."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from support.runs import explain_tree

from densecam_core import generate_mura, open_store
from densecam_core.store import scores as store_metrics
from jobs.evaluate.job import EvaluateConfig, run_evaluation

BASE = dict(steps=2, workers=1, progress=False, resamples=50)


@pytest.fixture(scope="module")
def explained(tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("families")
    generate_mura(root / "tree", images=8, seed=5, min_side=48, max_side=96)
    return root / "store", explain_tree(root / "tree", root / "store")


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _copy(explained, to: Path) -> tuple[str, str]:
    store, run_id = explained
    shutil.copytree(store, to)
    return str(to), run_id


def _evaluate(store: str, run_id: str, *metrics: str, **settings):
    return run_evaluation(EvaluateConfig(store=store, run=run_id, metrics=metrics, **{**BASE, **settings}))


def _files(store: str, run_id: str, folder: str) -> dict[str, bytes]:
    """Every file of a run's metrics folder (not the derived table) with its bytes."""
    root = Path(store) / "runs" / run_id / "metrics" / folder
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_family_added_to_a_scored_run_is_scored_alone(explained, ray_session, tmp_path):
    store, run_id = _copy(explained, tmp_path / "added")
    clean, _ = _copy(explained, tmp_path / "clean")
    _evaluate(store, run_id, "deletion")
    deletion = _files(store, run_id, "family=deletion")
    summary, table = _evaluate(store, run_id, "deletion", "stability")
    assert (summary.families_kept, summary.families_scored) == (["deletion"], ["stability"])
    assert "deletion already scored (kept); stability scored now" in summary.render()
    assert summary.shards_done == summary.shards_total, "every shard lacked stability"
    assert _files(store, run_id, "family=deletion") == deletion, "deletion's parts were not written again"
    _, clean_table = _evaluate(clean, run_id, "deletion", "stability")
    pd.testing.assert_frame_equal(table, clean_table)

    again, _ = _evaluate(store, run_id, "deletion", "stability")
    assert again.families_kept == ["deletion", "stability"] and again.shards_done == 0
    with pytest.raises(ValueError, match=r"holds deletion metrics scored with other settings \(seed: \{'seed': 0\}"):
        _evaluate(store, run_id, "insertion", seed=1)
    assert set(store_metrics.scored_families(open_store(store).run(run_id).url)) == {"deletion", "stability"}
    _evaluate(store, run_id, "insertion", steps=3)  # steps: deletion's and insertion's own; stability shares none
    with pytest.raises(ValueError, match=r"holds insertion metrics scored with other settings \(steps"):
        _evaluate(store, run_id, "insertion", steps=2)

    forced, _ = _evaluate(store, run_id, "stability", seed=1, force=True)
    assert forced.families_scored == ["stability"] and forced.shards_done == forced.shards_total
    run = open_store(store).run(run_id)
    assert set(store_metrics.scored_families(run.url)) == {"stability"}, "another seed: every family went"
    assert set(run.metrics()["metric"]) - {"error"} == {"stability_r", "stability_max_change"}


def _to_the_layout_before_family_folders(store: str, run_id: str) -> None:
    """Rewrite a run's scores as evaluations wrote them before families had folders: one part per shard holding
    every family, one ``_evaluation.json`` listing the families (and the former spelling of a family name)."""
    metrics = Path(store) / "runs" / run_id / "metrics"
    recorded = json.loads((metrics / "family=deletion" / "_evaluation.json").read_text())
    run_url = open_store(store).run(run_id).url
    for shard in store_metrics.family_parts(run_url, "deletion"):
        frames = [
            pd.read_parquet(metrics / f"family={f}" / f"part-{shard:06d}.parquet") for f in ("deletion", "stability")
        ]
        both = pd.concat(frames, ignore_index=True)
        both = both[~(both["metric"] == "error") | ~both.duplicated(["image_id", "metric"])]
        store_metrics.metric_table(both).to_pandas().to_parquet(metrics / f"part-{shard:06d}.parquet")
    for folder in ("family=deletion", "family=stability"):
        shutil.rmtree(metrics / folder)
    (metrics / "_evaluation.json").write_text(json.dumps({**recorded, "metrics": ["deletion", "stability"]}))


@pytest.mark.slow
def test_a_run_scored_before_family_folders_is_read_kept_and_extended(explained, ray_session, tmp_path):
    store, run_id = _copy(explained, tmp_path / "old")
    _, table = _evaluate(store, run_id, "deletion", "stability")
    _to_the_layout_before_family_folders(store, run_id)
    old = _files(store, run_id, "")
    summary, again = _evaluate(store, run_id, "deletion", "stability")
    assert summary.families_kept == ["deletion", "stability"] and summary.shards_done == 0
    pd.testing.assert_frame_equal(again, table)
    summary, _ = _evaluate(store, run_id, "stability", "insertion")
    assert (summary.families_kept, summary.families_scored) == (["stability"], ["insertion"])
    kept = {k: v for k, v in _files(store, run_id, "").items() if not k.startswith(("family=", "_summary"))}
    assert kept == {k: v for k, v in old.items() if not k.startswith("_summary")}, "the old parts are untouched"
    scores = open_store(store).run(run_id).metrics()
    assert {"deletion_auc", "stability_r", "insertion_auc"} <= set(scores["metric"])
    assert not scores[scores["metric"] == "error"].duplicated(["image_id"]).any()
