"""The metric-family door: each family of map-quality scores is one module here declaring a ``MetricFamily``
(its metric names, which are better lower, what it needs, the function that scores a batch, and the verdicts it
draws from the quality table). The scorer, the quality table, the report page's verdicts and the evaluate
command iterate ``FAMILIES``; nothing else lists families. Declarations import no torch: the quality table is
read in notebooks."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from densecam_core.store.layout import current_family_name, family_folder

NEEDS = ("model", "maps", "cascade", "boxes")
"""What a family may need: the model's forwards, fresh maps of the trained model, the randomised cascade's maps,
lesion boxes."""


@dataclass(frozen=True)
class Verdict:
    """A yes/no a family draws per map from its rows of the quality table (None: not scored)."""

    column: str  # in the summary grid: "deletion_beats_random"
    letter: str  # on the report page
    yes: str
    no: str
    metric: str  # the metric whose interval the page shows beside it
    decide: Callable[[pd.DataFrame], bool | None]


@dataclass(frozen=True)
class MetricFamily:
    name: str  # what `metrics` accepts (stored data: the names never change)
    metrics: tuple[str, ...]  # the metric names it writes
    scorer: str  # "module:function" scoring a batch (imported when scoring: it may need torch)
    lower_is_better: frozenset[str] = frozenset()
    needs: frozenset[str] = frozenset()
    verdicts: tuple[Verdict, ...] = ()
    summary_columns: tuple[str, ...] = field(default=())  # its columns' order in the summary grid
    settings: frozenset[str] = frozenset()  # evaluation settings only its scores depend on ("steps")

    def depends_on(self, recorded: dict[str, Any]) -> dict[str, Any]:
        """What of an evaluation's ``recorded`` settings this family's scores depend on: every shared setting
        (model, sample, seed, target) and its own (a family needing boxes depends on the boxes)."""
        own = self.settings | ({"boxes"} if "boxes" in self.needs else set())
        return {k: v for k, v in recorded.items() if k not in FAMILY_SETTINGS or k in own}

    def score(self, batch: Any, rows: Any) -> None:
        """Add this family's scores of ``batch`` (``evaluation.scorer.Batch``) to ``rows``."""
        module, _, function = self.scorer.partition(":")
        getattr(importlib.import_module(module), function)(batch, rows)


FAMILIES: dict[str, MetricFamily] = {}
FAMILY_SETTINGS = frozenset({"metrics", "steps", "boxes"})
"""Recorded evaluation settings that only some families depend on (the others are shared by every family)."""


def register_family(family: MetricFamily) -> MetricFamily:
    """Add a family to the registry; its name becomes a folder of every store that holds its scores."""
    family_folder(family.name)  # refuses a name the store cannot hold
    unknown = set(family.needs) - set(NEEDS)
    if unknown:
        raise ValueError(f"metric family {family.name!r} needs {sorted(unknown)}; a family may need {NEEDS}")
    FAMILIES[family.name] = family
    return family


def shared_settings(recorded: dict[str, Any]) -> dict[str, Any]:
    """What of an evaluation's recorded settings every family's scores depend on (model, sample, seed, target)."""
    return {k: v for k, v in recorded.items() if k not in FAMILY_SETTINGS}


def validate_families(names: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Family names in the order given, once each; unknown names raise a ValueError listing the registered ones."""
    given = [m.strip() for m in (names.split(",") if isinstance(names, str) else names) if m.strip()]
    given = [current_family_name(m) for m in given]  # the names before the one spelling still run
    unknown = [m for m in given if m not in FAMILIES]
    if unknown or not given:
        raise ValueError(f"unknown metrics {unknown or given}; choose from {', '.join(FAMILIES)}")
    return tuple(dict.fromkeys(given))


def lower_is_better() -> frozenset[str]:
    return frozenset(m for family in FAMILIES.values() for m in family.lower_is_better)


def summary_columns() -> tuple[str, ...]:
    return tuple(c for family in FAMILIES.values() for c in family.summary_columns)


def all_verdicts() -> tuple[Verdict, ...]:
    return tuple(v for family in FAMILIES.values() for v in family.verdicts)


def beats_random(rows: pd.DataFrame, metric: str, *, lower: bool) -> bool | None:
    """The paired interval of map minus random map excludes 0 on the better side."""
    row = rows[rows["metric"] == metric]
    if row.empty or "vs_random_high" not in row or pd.isna(row["vs_random"].iloc[0]):
        return None
    return bool(row["vs_random_high"].iloc[0] < 0) if lower else bool(row["vs_random_low"].iloc[0] > 0)


def _register_builtin() -> None:
    from densecam_core.evaluation.families import deletion, insertion, localisation, randomisation, stability

    for module in (deletion, insertion, randomisation, stability, localisation):
        register_family(module.FAMILY)


_register_builtin()
