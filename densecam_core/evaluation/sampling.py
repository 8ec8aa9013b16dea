"""Seeded samples of a run's images, stratified so that every body part and label keeps its share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

STRATA = ("body_part", "label")


def stratified_sample(
    index: pd.DataFrame,
    *,
    count: int | None = None,
    fraction: float | None = None,
    seed: int = 0,
    by: Sequence[str] = STRATA,
) -> pd.DataFrame:
    """``count`` rows (or ``fraction`` of them) of ``index``, allocated to strata in proportion to their
    sizes (largest remainders), drawn without replacement by a seeded generator, in ``row`` order.

    The same index, size and seed always give the same sample, so an evaluation resumes on it.
    """
    if (count is None) == (fraction is None):
        raise ValueError("pass exactly one of count or fraction")
    total = len(index)
    if fraction is not None and not 0 < fraction <= 1:
        raise ValueError(f"`fraction` must be in (0, 1], got {fraction}")
    count = max(1, round(fraction * total)) if fraction is not None else int(count or 0)
    if count < 1:
        raise ValueError(f"`sample` must be >= 1, got {count}")
    if count > total:
        raise ValueError(f"`sample` {count} is larger than the run's {total} scoreable images; pass at most {total}")
    if count == total:
        return index.sort_values("row").reset_index(drop=True)
    columns = [c for c in by if c in index.columns]
    # a stratum may be null (DICOM runs have no labels, headers without a body part): null is a stratum too
    strata = index[columns].astype("string").fillna("nan").astype(str)  # "nan": as float columns always gave
    keys = strata.agg("|".join, axis=1) if columns else pd.Series("all", index=index.index)
    sizes = keys.value_counts().sort_index()
    quota = sizes / total * count
    allocated = np.floor(quota).astype(int)
    remainder = (quota - allocated).sort_values(ascending=False, kind="stable")
    for key in remainder.index[: count - int(allocated.sum())]:
        allocated[key] += 1
    rng = np.random.default_rng(seed)
    chosen: list[Any] = []
    for key, n in allocated.items():
        if n:
            members = index.index[keys == key]
            chosen.extend(rng.choice(members, size=int(n), replace=False))
    return index.loc[chosen].sort_values("row").reset_index(drop=True)
