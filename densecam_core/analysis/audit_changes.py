"""Which flagged clusters a model update made new, kept or removed: two runs' latest audits compared by the
images each flagged cluster holds. Torch-free."""

from __future__ import annotations

import pandas as pd

KEYS = ["method", "block", "target", "group"]
SAME = 0.5
"""A flagged cluster of the later run is the earlier one's when they share at least half their images (Jaccard)."""


def flagged_members(images: pd.DataFrame) -> dict[tuple, set[str]]:
    """(method, block, target, group, cluster) -> image ids, for every flagged cluster of an audit's images."""
    flagged = images[images["flagged"]]
    return {
        tuple(key): set(rows["image_id"].astype(str)) for key, rows in flagged.groupby([*KEYS, "cluster"], sort=True)
    }


def flagged_changes(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """One row per flagged cluster of either audit: ``status`` new (only after), gone (only before) or kept,
    with its size in each and the share of images they have in common."""
    a, b = flagged_members(before), flagged_members(after)
    records, matched = [], set()
    for key, members in b.items():
        best, overlap = None, 0.0
        for old, old_members in a.items():
            if old[:4] == key[:4]:
                jaccard = len(members & old_members) / len(members | old_members)
                if jaccard > overlap:
                    best, overlap = old, jaccard
        kept = best is not None and overlap >= SAME
        if kept:
            matched.add(best)
        records.append(
            dict(zip([*KEYS, "cluster"], key))
            | {"status": "kept" if kept else "new", "images_before": len(a[best]) if kept and best else 0,
               "images_after": len(members), "overlap": overlap}
        )  # fmt: skip
    for key, members in a.items():
        if key not in matched:
            records.append(
                dict(zip([*KEYS, "cluster"], key))
                | {"status": "gone", "images_before": len(members), "images_after": 0, "overlap": 0.0}
            )
    columns = [*KEYS, "cluster", "status", "images_before", "images_after", "overlap"]
    return pd.DataFrame.from_records(records, columns=columns)


def describe_changes(changes: pd.DataFrame) -> list[str]:
    """The changes in words, new ones first."""
    if changes.empty:
        return ["flagged clusters: none in either run's audit"]
    order = {"new": 0, "gone": 1, "kept": 2}
    lines = []
    for _, c in changes.sort_values("status", key=lambda s: s.map(order)).iterrows():
        size = c["images_after"] if c["status"] != "gone" else c["images_before"]
        lines.append(
            f"{c['status']:<5} flagged cluster: {c['method']} block {c['block']}, target {c['target']}, {c['group']} "
            f"({size} images)"
        )
    return lines
