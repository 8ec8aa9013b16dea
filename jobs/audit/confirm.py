"""The paste test of an audit's flagged clusters, on the shared runtime: each flagged cluster is one shard (its
pairs), handed to ``PasteWorker`` actors; a committed cluster is skipped when the command runs again, and the
parts are merged into the audit's ``confirmations.parquet`` with a bootstrap interval per cluster.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from densecam_core.analysis.paste import bootstrap_mean, paste_pairs, region_of
from densecam_core.store.analyses import (
    Audit,
    confirmation_parts,
    merge_confirmations,
    read_confirmation_pairs,
    settle_confirmation,
)
from densecam_core.store.layout import Shard
from densecam_core.store.run import Run
from densecam_core.store.targets import fixed_classes
from jobs.audit.config import AuditConfig
from jobs.audit.paste_worker import PasteSettings, PasteWorker
from jobs.runtime.contract import ShardResult, WorkItem
from jobs.runtime.dispatch import DispatchCounters, JobState
from jobs.runtime.replica import model_actors
from jobs.runtime.resources import Resources
from jobs.runtime.skeleton import Launch, ShardPlan, run_shard_job

KEYS = ["method", "block", "target", "group", "cluster"]


def flagged_pairs(run: Run, audit: Audit, count: int, seed: int) -> list[tuple[pd.Series, pd.DataFrame]]:
    """Each flagged cluster (a row of ``audit.clusters``) with its paste pairs."""
    index = run.index[run.index["status"] == "ok"]
    images = audit.images
    out = []
    flagged = audit.clusters[audit.clusters["flagged"]].reset_index(drop=True)
    for ordinal, cluster in flagged.iterrows():
        members = images[
            np.logical_and.reduce(
                [images[k] == cluster[k] for k in KEYS if k != "group"] + [images["group"] == cluster["group"]]
            )
        ]
        sources = index[index["image_id"].isin(set(members["image_id"]))]
        label = members["label"].dropna().iloc[0] if members["label"].notna().any() else None
        others = index[index["label"].notna() & (index["label"] != label)] if label is not None else index.iloc[:0]
        parts = str(cluster["group"]).split("/")
        if len(parts) == 2 and "body_part" in others.columns:
            others = others[others["body_part"].astype("string") == parts[1]]
        region = region_of(audit.mean_map(cluster))
        out.append((cluster, paste_pairs(sources, others, region, count, seed + ordinal)))
    return out


def confirm_flagged(config: AuditConfig, run: Run, audit: Audit, model: Any) -> pd.DataFrame:
    """Run the paste test for every flagged cluster of ``audit`` (resuming), merge and return its summary."""
    work = flagged_pairs(run, audit, config.paste_images, config.seed)
    fixed = fixed_classes(run.record) or [0]
    recorded = run.settings
    settings = PasteSettings(recorded.size, recorded.resize, recorded.input_norm, recorded.dicom_window)
    run_shard_job(PasteShards(config, run, audit, model, settings, work, fixed), run.url, config)
    return summarise(work, read_confirmation_pairs(audit.url), audit, config.seed)


@dataclass
class PasteShards:
    """The paste test on the runtime (``ShardJob``): one shard per flagged cluster without recorded pairs."""

    config: AuditConfig
    run: Run
    audit: Audit
    model: Any
    settings: PasteSettings
    work: list[tuple[pd.Series, pd.DataFrame]]
    fixed: list[int]
    description: str = "pasting"

    def plan(self) -> ShardPlan:
        recorded = {
            "fingerprint": self.run.fingerprint,
            "paste_images": self.config.paste_images,
            "seed": self.config.seed,
        }
        settle_confirmation(self.audit.url, recorded, force=self.config.force)
        done = set(confirmation_parts(self.audit.url))
        todo: deque[WorkItem] = deque(
            (Shard(i, i, i + 1), pairs.assign(target_class=self.fixed[int(cluster["target"])]))
            for i, (cluster, pairs) in enumerate(self.work)
            if i not in done
        )
        return ShardPlan(todo, len(self.work), len(self.work) - len(todo))

    def launch(self, ray: Any, resources: Resources) -> Launch:
        make_actor = model_actors(ray, PasteWorker, "PasteActor", self.model, resources, self.settings)
        audit_url = self.audit.url

        def submit(actor: Any, shard: Shard, pairs: pd.DataFrame) -> Any:
            return actor.process.remote(audit_url, shard, pairs)

        return Launch(dataclasses.replace(resources, concurrency=1), make_actor, submit)

    def committed(self, state: JobState, result: ShardResult) -> None:
        pass

    def finish(self, counters: DispatchCounters) -> None:
        pass


def summarise(work: list[tuple[pd.Series, pd.DataFrame]], pairs: pd.DataFrame, audit: Audit, seed: int) -> pd.DataFrame:
    """One row per confirmed cluster: its keys, the mean logit change and its bootstrap interval; written as
    the audit's ``confirmations.parquet``."""
    records = []
    for ordinal, (cluster, _) in enumerate(work):
        mine = pairs[pairs["confirmation"] == ordinal] if len(pairs) else pairs
        if mine.empty:
            continue  # its shard failed: the next run retries it
        mean, low, high = bootstrap_mean(mine["logit_change"].to_numpy(), seed=seed + ordinal)
        records.append(
            {k: cluster[k] for k in KEYS}
            | {
                "pairs": int(mine["logit_change"].notna().sum()),
                "errors": int(mine["error"].notna().sum()),
                "logit_change": mean,
                "low": low,
                "high": high,
                "confirmed": bool(low > 0),
                "region": f"y {mine['y0'].iloc[0]:.2f}-{mine['y1'].iloc[0]:.2f}, x {mine['x0'].iloc[0]:.2f}-{mine['x1'].iloc[0]:.2f}",
            }
        )
    summary = pd.DataFrame.from_records(
        records, columns=[*KEYS, "pairs", "errors", "logit_change", "low", "high", "confirmed", "region"]
    )
    merge_confirmations(audit.url, summary)
    return summary
