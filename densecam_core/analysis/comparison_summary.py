"""Summaries of what a model update changed, built on ``compare_runs``' per-image table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from densecam_core.analysis.audit_changes import describe_changes, flagged_changes
from densecam_core.vocabulary import MapKey

SUMMARY_COLUMNS = (
    "images",
    "mean_prob_change",
    "mean_abs_prob_change",
    "flipped",
    "map_correlation",
    "top_iou",
    "flat_a",
    "flat_b",
)


def _body_parts(per_image: pd.DataFrame) -> pd.Series:
    """Each image's body part, ``UNKNOWN`` where the manifest had none."""
    if "body_part" not in per_image:
        return pd.Series("UNKNOWN", index=per_image.index)
    return per_image["body_part"].fillna("UNKNOWN")


def summarise_changes(per_image: pd.DataFrame, threshold: float = 0.5) -> pd.DataFrame:
    """One row per body part plus ``ALL``: probability change, decisions flipped, map agreement.

    ``map_correlation`` and ``top_iou`` are means over images whose maps are not flat in either run;
    ``flat_a`` / ``flat_b`` count the flat (all-zero) maps of each run.
    """
    frame = per_image.assign(
        abs_change=per_image["prob_change"].abs(),
        flipped=(per_image["prob_a"] >= threshold) != (per_image["prob_b"] >= threshold),
        body_part=_body_parts(per_image),
    )

    def aggregate(group: pd.DataFrame) -> dict[str, float]:
        shaped = group[~(group["flat_a"] | group["flat_b"])]
        return {
            "images": len(group),
            "mean_prob_change": group["prob_change"].mean(),
            "mean_abs_prob_change": group["abs_change"].mean(),
            "flipped": int(group["flipped"].sum()),
            "map_correlation": shaped["map_correlation"].mean(),
            "top_iou": shaped["top_iou"].mean(),
            "flat_a": int(group["flat_a"].sum()),
            "flat_b": int(group["flat_b"].sum()),
        }

    rows = {part: aggregate(group) for part, group in frame.groupby("body_part", sort=True)}
    rows["ALL"] = aggregate(frame)
    table = pd.DataFrame.from_dict(rows, orient="index", columns=list(SUMMARY_COLUMNS))
    table.index.name = "body_part"
    return table.reset_index()


def most_changed(per_image: pd.DataFrame, count: int = 10) -> pd.DataFrame:
    """The images whose explanation changed most: lowest map correlation, then largest |prob change|.

    A map that became (or stopped being) flat changed entirely: it ranks first. Two flat maps did
    not change: they rank as perfectly correlated.
    """
    unchanged_flat = per_image["flat_a"] & per_image["flat_b"]
    correlation = per_image["map_correlation"].where(~unchanged_flat, 1.0).fillna(-2.0)
    ranked = per_image.assign(abs_change=per_image["prob_change"].abs(), _corr=correlation)
    ranked = ranked.sort_values(["_corr", "abs_change"], ascending=[True, False], kind="stable")
    return ranked.drop(columns=["_corr", "abs_change"]).head(count).reset_index(drop=True)


def plot_changes(per_image: pd.DataFrame, path: str, title: str = "") -> str:
    """Two panels: probability before vs after, and map correlation per body part. Returns ``path``."""
    from densecam_core.analysis.figures import headless_pyplot

    plt = headless_pyplot()
    body_parts = _body_parts(per_image)
    parts = sorted(body_parts.unique())
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for part in parts:
        rows = per_image[body_parts == part]
        left.scatter(rows["prob_a"], rows["prob_b"], s=12, label=part, alpha=0.8)
    left.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
    left.set(
        xlabel="probability, run A", ylabel="probability, run B", xlim=(0, 1), ylim=(0, 1), title="abnormal probability"
    )
    left.legend(fontsize=7)
    groups = [per_image.loc[body_parts == p, "map_correlation"].dropna().to_numpy() for p in parts]
    right.boxplot([g if len(g) else [float("nan")] for g in groups], tick_labels=parts)
    right.set(ylabel="Pearson r of maps (A vs B)", ylim=(-1.05, 1.05), title="map agreement")
    right.tick_params(axis="x", rotation=45, labelsize=7)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def report_changes(
    store_url: str,
    key_a: str,
    key_b: str,
    method: str = "gradcam",
    block: int = 4,
    top: int = 10,
    plot: str | None = None,
    csv: str | None = None,
    out=print,
    target: int | str = 0,
) -> dict:
    """Print the comparison; return the tables and the plot path (the demo and notebook reuse it)."""
    from densecam_core import compare_runs, open_store

    store = open_store(store_url)
    run_a, run_b = store.run(key_a), store.run(key_b)
    if run_a.run_id == run_b.run_id:
        raise ValueError(f"RUN_A and RUN_B are the same run ({run_a.run_id}); pass two different runs")
    key = MapKey.of(method, block)
    per_image = compare_runs(run_a, run_b, key.method, key.block, target=target)
    summary = summarise_changes(per_image)
    changed = most_changed(per_image, top)
    what = key.label + (f", target {target}" if target != 0 else "")
    plot = plot or f"compare-{run_a.run_id[:8]}-{run_b.run_id[:8]}.png"
    Path(plot).parent.mkdir(parents=True, exist_ok=True)
    plot_changes(per_image, plot, f"{run_a.run_id[:12]} -> {run_b.run_id[:12]} ({what})")
    if csv:
        per_image.to_csv(csv, index=False)
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.float_format", "{:.3f}".format):
        out(
            f"run A {run_a.run_id} (model {run_a.fingerprint[:12]}) -> run B {run_b.run_id} (model {run_b.fingerprint[:12]}); "
            f"maps: {what}; {len(per_image)} images in both"
        )
        out(summary.to_string(index=False))
        out(f"\n{len(changed)} images whose explanation changed most:")
        out(
            changed[
                ["image_id", "prob_a", "prob_b", "prob_change", "map_correlation", "top_iou", "flat_a", "flat_b"]
            ].to_string(index=False)
        )
    out(f"\nplot: {plot}")
    flagged = flagged_cluster_changes(run_a, run_b)
    if flagged is None:
        out("flagged clusters: audit both runs (`densecam audit`) to see which are new or gone after the update")
    else:
        out("\n" + "\n".join(describe_changes(flagged)))
    return {"per_image": per_image, "summary": summary, "most_changed": changed, "plot": plot, "flagged": flagged}


def flagged_cluster_changes(run_a, run_b) -> pd.DataFrame | None:
    """The flagged clusters new, kept or gone between the runs' latest audits; None unless both have one."""
    from densecam_core.store.analyses import list_audits

    audits = [list_audits(r.store_url, r.url) for r in (run_a, run_b)]
    if not all(audits):
        return None
    return flagged_changes(audits[0][-1].images, audits[1][-1].images)
