"""``densecam audit``: the audit of a run's stored maps (torch-free), written beside the run, and with
``--confirm`` the paste test of every flagged cluster as a Ray job on the shared runtime (one shard per flagged
cluster: resumable, on GPU or CPU actors, where the explanation ran). Every check bad input can fail runs first.
"""

from __future__ import annotations

import sys
from typing import Any

import pandas as pd

from densecam_core import fileio
from densecam_core.analysis.audit import AuditRequest, AuditResult, audit_run, audit_targets
from densecam_core.analysis.flagging import FlagRule
from densecam_core.store import layout
from densecam_core.store.analyses import list_audits, write_audit
from densecam_core.store.reader import open_store
from densecam_core.store.run import Run
from jobs.audit.config import AuditConfig


def run_audit(config: AuditConfig) -> int:
    """Audit, store, print; then the paste test when asked. Exit 0 when the audit ran, flagged or not."""
    store = open_store(config.store)
    run = store.run(config.run)
    control = store.run(config.control) if config.control else None
    if control is not None and control.run_id == run.run_id:
        raise ValueError(f"--control names the audited run {run.run_id} itself: name a run of a model you trust")
    model = _checked_model(config, run) if config.confirm else None  # refused before any work
    request = AuditRequest(
        methods=config.methods,
        blocks=config.blocks,
        targets=audit_targets(run, config.target),
        by_body_part=config.by_body_part,
        control=control.run_id if control else None,
        body=config.body_mask,
        rule=FlagRule(k=config.flag_k, min_images=config.min_cluster_images),
        seed=config.seed,
    )
    result = audit_run(run, request, control=control)
    try:
        folder = write_audit(
            run.url,
            settings=result.settings,
            tables={"images": result.images, "clusters": result.clusters, "atlases": result.atlases},
            arrays=result.arrays,
            messages=result.messages,
        )
    except OSError as exc:
        print(f"densecam audit: cannot write the audit into the store {config.store}: {exc}", file=sys.stderr)
        return 2
    print(render_audit(run, result, folder))
    if model is not None:
        audit = next(a for a in list_audits(run.store_url, run.url) if a.folder == folder)
        from jobs.audit.confirm import confirm_flagged

        summary = confirm_flagged(config, run, audit, model)
        print(render_confirmations(summary))
    return 0


def _checked_model(config: AuditConfig, run: Run) -> Any:
    from densecam_core.store.targets import fixed_classes
    from jobs.runtime.replica import load_run_model

    if fixed_classes(run.record) is None:
        raise ValueError(
            f"run {run.run_id} explains each image's predicted class, so a pasted region has no one class whose logit "
            "to measure: --confirm needs a run with fixed targets (explain with --targets)"
        )
    return load_run_model(config.checkpoint, run)


def render_audit(run: Run, result: AuditResult, folder: str) -> str:
    """What the audit found, flagged clusters first, in words."""
    images, clusters = result.images, result.clusters
    maps = images[["method", "block", "target"]].drop_duplicates()
    lines = [
        f"audit of run {run.run_id}: {len(maps)} maps, {images['image_id'].nunique()} images in "
        f"{images['group'].nunique()} groups; stored in {fileio.join(layout.RUNS_DIR, run.run_id, layout.ANALYSIS_DIR, folder)} "
        "(open_store(STORE).run(RUN).audit())"
    ]
    flagged = clusters[clusters["flagged"]] if len(clusters) else clusters
    lines.append(f"flagged: {len(flagged)} clusters, {int(images['flagged'].sum())} image maps")
    for _, c in flagged.iterrows():
        lines.append(
            f"  {c['method']} block {c['block']}, target {c['target']}, {c['group']}, cluster {c['cluster']}: "
            f"{c['size']} images, median corner excess {c['median_corner_excess']:.2f} > {c['threshold']:.2f} ({c['rule']})"
        )
    lines += [f"note: {m}" for m in result.messages]
    return "\n".join(lines)


def render_confirmations(summary: pd.DataFrame) -> str:
    if summary.empty:
        return "paste test: no flagged cluster to confirm"
    lines = ["paste test (mean logit change when the cluster's region is pasted onto images of the other label):"]
    for _, r in summary.iterrows():
        verdict = "confirmed" if r["low"] > 0 else "not confirmed"
        lines.append(
            f"  {r['method']} block {r['block']}, target {r['target']}, {r['group']}, cluster {r['cluster']}: "
            f"{r['logit_change']:+.2f} [{r['low']:+.2f}, {r['high']:+.2f}] over {r['pairs']} pairs: {verdict}"
        )
    return "\n".join(lines)
