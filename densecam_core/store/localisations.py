"""A run's stored weak-label scores (``densecam localise``), read back as pandas tables."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import pandas as pd

from densecam_core.store import layout
from densecam_core.store.analyses import StoredAnalysis, list_analyses


class Localisation(StoredAnalysis):
    """One stored localisation: ``metrics`` (a row per map and target), ``by_size`` (per lesion size band),
    ``images`` (a row per image, map and target), and the ``settings`` that made it."""

    def __repr__(self) -> str:
        return f"Localisation({self.folder!r}, created={self.meta.get('created')!r}, maps={len(self.metrics)})"

    @cached_property
    def metrics(self) -> pd.DataFrame:
        return self.table(layout.LOCALISE_METRICS)

    @cached_property
    def by_size(self) -> pd.DataFrame:
        return self.table(layout.LOCALISE_BY_SIZE)

    @cached_property
    def images(self) -> pd.DataFrame:
        return self.table(layout.LOCALISE_IMAGES)


def list_localisations(store_url: str, run_url: str) -> list[Localisation]:
    """The run's complete localisations, oldest first."""
    found = list_analyses(store_url, run_url, layout.LOCALISE_KIND)
    return [Localisation(store_url, run_url, folder, meta) for folder, meta in found]


def latest_localisation(run: Any) -> Localisation:
    """The run's newest localisation; a ``StoreError`` naming the command that makes one when there is none."""
    found = list_localisations(run.store_url, run.url)
    if not found:
        raise layout.StoreError(
            f"run {run.run_id} has no localisation yet: run `densecam localise STORE --run {run.run_id} --boxes BOXES "
            "--out DIR`"
        )
    return found[-1]
