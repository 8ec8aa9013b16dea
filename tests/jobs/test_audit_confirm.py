"""The paste test as a Ray job: every flagged cluster is one shard, committed as a part of the audit; a rerun
skips committed clusters and redoes a missing one; a checkpoint that is not the run's is refused before any
work."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from support.runs import explain_tree

from densecam_core import generate_mura, load_densenet169, open_store
from densecam_core.analysis.audit import AuditRequest, audit_run
from densecam_core.store import layout
from densecam_core.store.analyses import confirmation_parts, list_audits, write_audit
from jobs.audit.config import AuditConfig
from jobs.cli.main import main as cli

pytestmark = pytest.mark.slow  # Ray and a DenseNet169 on CPU


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    root = tmp_path_factory.mktemp("confirm")
    generate_mura(root / "tree", images=40, seed=5, min_side=48, max_side=64, lesion_rate=0.9)
    run_id = explain_tree(root / "tree", root / "store")
    checkpoint = root / "model.pt"
    torch.save(load_densenet169().state_dict(), checkpoint)
    return root, run_id, checkpoint


def test_a_checkpoint_that_is_not_the_runs_is_refused_before_any_work(explained, tmp_path, capsys):
    root, run_id, _ = explained
    other = tmp_path / "other.pt"
    torch.save(load_densenet169(seed=7).state_dict(), other)
    code = cli(["audit", str(root / "store"), "--run", run_id, "--confirm", "--checkpoint", str(other)])
    assert code == 2 and "pass the run's checkpoint" in capsys.readouterr().err
    assert not (root / "store" / "runs" / run_id / layout.ANALYSIS_DIR).exists()


def test_flagged_clusters_are_pasted_resumably(explained, tmp_path):
    import ray

    from jobs.audit.confirm import confirm_flagged

    root, run_id, checkpoint = explained
    store = tmp_path / "store"
    shutil.copytree(root / "store", store)
    run = open_store(str(store)).run(run_id)
    result = audit_run(run, AuditRequest(methods=("gradcam",), blocks=(1,), by_body_part=False))
    outside = result.images["outside_body_mass"]
    assert outside.notna().all() and outside.between(0, 1).all(), "every image read: each map's mass outside its body"
    clusters = result.clusters.copy()
    chosen = clusters.index[clusters["group"] == "abnormal"][:1]
    assert len(chosen) == 1
    clusters.loc[chosen, "flagged"] = True  # flagged by hand: a random model's maps flag nothing
    write_audit(
        run.url,
        settings=result.settings,
        tables={"images": result.images, "clusters": clusters, "atlases": result.atlases},
        arrays=result.arrays,
        messages=result.messages,
    )
    audit = list_audits(run.store_url, run.url)[-1]
    config = AuditConfig(
        store=str(store),
        run=run_id,
        confirm=True,
        checkpoint=str(checkpoint),
        paste_images=6,
        workers=1,
        progress=False,
    )
    model = load_densenet169()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        first = confirm_flagged(config, run, audit, model)
        parts = confirmation_parts(audit.url)
        assert list(parts) == [0] and len(first) == 1
        row = first.iloc[0]
        assert row["pairs"] == 6 and row["low"] <= row["logit_change"] <= row["high"]
        stamp = Path(parts[0]).stat().st_mtime_ns
        again = confirm_flagged(config, run, audit, model)  # committed: nothing is redone
        assert Path(parts[0]).stat().st_mtime_ns == stamp
        np.testing.assert_allclose(again["logit_change"], first["logit_change"])
        Path(parts[0]).unlink()
        redone = confirm_flagged(config, run, audit, model)  # the missing cluster is measured again, the same
        np.testing.assert_allclose(redone["logit_change"], first["logit_change"], rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match="paste test ran with other settings"):
            confirm_flagged(AuditConfig(**{**config.__dict__, "paste_images": 4}), run, audit, model)
    finally:
        ray.shutdown()
    reread = open_store(str(store)).run(run_id).audit().confirmations
    assert len(reread) == 1 and reread["pairs"].iloc[0] == 6
