"""The quality table of a run: each metric's mean per map, its study-bootstrap interval, the random
baseline, and plain verdicts (docs/METRICS.md). No torch: notebooks call it on a store.

Why a study bootstrap: a study's images share a patient and a body part, so they are not
independent; resampling studies (with replacement) keeps that dependence in the interval.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from densecam_core.evaluation.families import all_verdicts, lower_is_better, summary_columns

KEYS = ["method", "block", "metric", "stage"]


def study_weights(studies: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n_studies) how often each study is drawn in each bootstrap resample."""
    rng = np.random.default_rng(seed)
    n = len(studies)
    draws = rng.integers(0, n, size=(resamples, n))
    weights = np.zeros((resamples, n), dtype=np.float64)
    np.add.at(weights, (np.arange(resamples)[:, None], draws), 1.0)
    return weights


def bootstrap_means(
    values: pd.DataFrame, studies: pd.Series, *, resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> pd.DataFrame:
    """Mean and percentile interval of each column of ``values`` (one row per image), resampling studies.

    NaN values (a flat map) are left out of their column's means. Every column uses the same
    resampled studies, so intervals of different maps are comparable.
    """
    codes, unique = pd.factorize(studies, sort=True)
    finite = values.notna().to_numpy()
    filled = values.fillna(0.0).to_numpy(dtype=np.float64)
    sums = np.zeros((len(unique), values.shape[1]))
    counts = np.zeros_like(sums)
    np.add.at(sums, codes, filled)
    np.add.at(counts, codes, finite.astype(np.float64))
    weights = study_weights(unique, resamples, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = (weights @ sums) / (weights @ counts)
        mean = sums.sum(axis=0) / counts.sum(axis=0)
    alpha = (1 - confidence) / 2
    low = np.nanquantile(boot, alpha, axis=0) if len(unique) else np.full(values.shape[1], np.nan)
    high = np.nanquantile(boot, 1 - alpha, axis=0) if len(unique) else np.full(values.shape[1], np.nan)
    return pd.DataFrame(
        {"images": counts.sum(axis=0).astype(int), "mean": mean, "ci_low": low, "ci_high": high},
        index=values.columns,
    )


def metrics_table(
    scores: pd.DataFrame, index: pd.DataFrame, *, resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> pd.DataFrame:
    """One row per (method, block, metric, stage): images, mean, 95 % interval, and against the random map.

    ``scores`` is the long-form metrics frame (``Run.metrics()``), ``index`` the run's index (for
    each image's study). ``random`` is the random map's mean at the same block and metric;
    ``vs_random`` the mean paired difference (map minus random, per image) with its interval
    (``vs_random_low``, ``vs_random_high``).
    """
    scores = scores[scores["metric"] != "error"]
    if scores.empty:
        raise ValueError("no scores to summarise: the run has no committed metrics (run densecam evaluate first)")
    study_of = index.set_index("image_id")["study_id"]
    keyed = scores.assign(stage=scores["stage"].fillna(0).astype(int))
    wide = keyed.groupby(["image_id", *KEYS])["value"].first().unstack(KEYS)  # observed maps and metrics only
    studies = study_of.reindex(wide.index).fillna(pd.Series(wide.index, index=wide.index))
    table = bootstrap_means(wide, studies, resamples=resamples, seed=seed, confidence=confidence)
    diffs, names = [], []
    for column in wide.columns:
        method, block, metric, stage = column
        baseline = ("random", block, metric, stage)
        if method != "random" and baseline in wide.columns:
            diffs.append(wide[column] - wide[baseline])
            names.append(column)
    table = table.reset_index().rename(columns={"level_0": "method"})
    table.columns = [*KEYS, "images", "mean", "ci_low", "ci_high"]
    if diffs:
        paired = bootstrap_means(
            pd.concat(diffs, axis=1, keys=names), studies, resamples=resamples, seed=seed, confidence=confidence
        )
        paired.index = pd.MultiIndex.from_tuples(names, names=KEYS)
        paired = paired.rename(columns={"mean": "vs_random", "ci_low": "vs_random_low", "ci_high": "vs_random_high"})
        table = table.merge(paired.drop(columns="images").reset_index(), on=KEYS, how="left")
        random_means = table[table["method"] == "random"][["block", "metric", "stage", "mean"]]
        table = table.merge(
            random_means.rename(columns={"mean": "random"}), on=["block", "metric", "stage"], how="left"
        )
    table["stage"] = table["stage"].where(table["stage"] > 0, None)
    order = {"cam": 0, "random": 99}
    table["_order"] = table["method"].map(lambda m: order.get(m, 1))
    table = table.sort_values(["metric", "stage", "_order", "method", "block"], na_position="first")
    return table.drop(columns="_order").reset_index(drop=True)


def quality_table(run: Any, *, resamples: int = 1000, seed: int = 0, confidence: float = 0.95) -> pd.DataFrame:
    """``metrics_table`` of a stored run (``open_store(url).run(id)``): the table ``densecam evaluate`` prints."""
    return metrics_table(run.metrics(), run.index, resamples=resamples, seed=seed, confidence=confidence)


def verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """Per map (method, block), every registered family's verdicts (``evaluation.families``): e.g. beats random
    on deletion / insertion (the paired interval excludes 0 on the better side), passes randomisation, stable.
    ``None`` where the metric was not scored."""
    maps = table[table["method"] != "random"][["method", "block"]].drop_duplicates()
    out = []
    for method, block in maps.itertuples(index=False):
        rows = table[(table["method"] == method) & (table["block"] == block)]
        out.append({"method": method, "block": int(block), **{v.column: v.decide(rows) for v in all_verdicts()}})
    return pd.DataFrame(out, columns=["method", "block", *(v.column for v in all_verdicts())])


def _last_stage(table: pd.DataFrame) -> tuple[pd.DataFrame, float | None]:
    """The rows without a stage and those of the last randomisation stage (a wholly random network), and that stage."""
    last = table["stage"].max() if table["stage"].notna().any() else None
    return table[table["stage"].isna() | (table["stage"] == last)], last


def summary_grid(table: pd.DataFrame) -> pd.DataFrame:
    """One row per map: each metric's mean (randomisation at its last stage), the paired difference to
    the random map on the same images beside deletion and insertion, and the verdicts: the compact view
    ``densecam evaluate`` prints."""
    shown, _ = _last_stage(table)
    shown = shown[shown["method"] != "random"]
    grid = shown.pivot_table(index=["method", "block"], columns="metric", values="mean", aggfunc="first")
    if "vs_random" in shown:
        for metric in ("deletion_auc", "insertion_auc"):
            paired = shown[shown["metric"] == metric].set_index(["method", "block"])["vs_random"]
            if not paired.empty:
                grid[f"{metric}_vs_random"] = paired
    first = summary_columns()
    columns = [c for c in first if c in grid] + [c for c in grid if c not in first]
    grid = grid[columns].join(verdicts(table).set_index(["method", "block"]), how="left")
    order = sorted(grid.index, key=lambda k: (k[0] != "cam", k[0], k[1]))
    return grid.loc[order].reset_index()


def format_grid(grid: pd.DataFrame) -> str:
    """The grid as text, verdict columns as yes/no/-."""
    shown = grid.copy()
    for column in (v.column for v in all_verdicts()):
        if column in shown:
            shown[column] = shown[column].map(lambda v: "-" if v is None or pd.isna(v) else ("yes" if v else "NO"))
    return shown.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="")


def format_table(table: pd.DataFrame, *, every_stage: bool = False) -> str:
    """The table as text: a block per metric (randomisation at its last stage unless ``every_stage``),
    a line per map: mean, 95 % interval, images, the random map's mean and the paired difference to it."""
    shown = table if every_stage else _last_stage(table)[0]
    lines = []
    for (metric, stage), group in shown.groupby(["metric", shown["stage"].fillna(0)], sort=False):
        title = metric + (f", stage {int(stage)}" if stage else "")
        lines.append(f"{title} ({'lower' if metric in lower_is_better() else 'higher'} is better)")
        for r in group[group["method"] != "random"].itertuples():
            line = f"  {r.method:>9} b{int(r.block)}  {r.mean:7.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]  n={r.images:<6}"
            if not pd.isna(getattr(r, "random", np.nan)):
                line += (
                    f"  random {r.random:.3f}, map - random {r.vs_random:+.3f} "
                    f"[{r.vs_random_low:+.3f}, {r.vs_random_high:+.3f}]"
                )
            lines.append(line)
    return "\n".join(lines)


def plot_table(table: pd.DataFrame, path: str | os.PathLike) -> str:
    """One panel per metric (randomisation at its last stage): each map's mean with its interval, the
    random map's mean dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown, last_stage = _last_stage(table)
    metrics = list(dict.fromkeys(shown["metric"]))
    fig, axes = plt.subplots(len(metrics), 1, figsize=(11, 2.6 * len(metrics)), squeeze=False)
    for ax, metric in zip(axes[:, 0], metrics):
        rows = shown[(shown["metric"] == metric) & (shown["method"] != "random")]
        labels = [f"{m} b{int(b)}" for m, b in zip(rows["method"], rows["block"])]
        x = np.arange(len(rows))
        errors = [rows["mean"] - rows["ci_low"], rows["ci_high"] - rows["mean"]]
        ax.errorbar(x, rows["mean"], yerr=np.abs(np.array(errors)), fmt="o", capsize=3)
        if "random" in rows and rows["random"].notna().any():
            ax.plot(x, rows["random"], "k--", lw=1, label="random map")
            ax.legend(loc="best", fontsize=8)
        stage = f" (stage {int(last_stage)})" if metric.startswith("randomisation") and last_stage else ""
        ax.set_title(f"{metric}{stage}", fontsize=10)
        ax.set_xticks(x, labels, rotation=60, fontsize=7, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
