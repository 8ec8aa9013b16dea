"""``densecam compare STORE RUN_A RUN_B``: what a model update changed, per body part and per image."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from densecam_core.comparison_summary import most_changed, plot_changes, summarise_changes
from densecam_core.vocabulary import BLOCKS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="densecam compare", description=__doc__)
    parser.add_argument("store", help="heatmap store path or URL")
    parser.add_argument("run_a", help="the earlier run: run id, model fingerprint (unique prefixes work) or 'latest'")
    parser.add_argument("run_b", help="the later run, same forms as RUN_A")
    parser.add_argument("--method", default="gradcam", help="map to compare: cam or a stored method (default gradcam)")
    parser.add_argument("--block", type=int, default=4, choices=BLOCKS, help="dense block of the map (ignored for cam)")
    parser.add_argument("--top", type=int, default=10, help="how many most-changed images to list")
    parser.add_argument(
        "--plot", default=None, help="PNG to write (default: compare-<A>-<B>.png in the current folder)"
    )
    parser.add_argument("--csv", default=None, help="also write the per-image table to this CSV")
    return parser


def compare(
    store_url: str,
    key_a: str,
    key_b: str,
    method: str = "gradcam",
    block: int = 4,
    top: int = 10,
    plot: str | None = None,
    csv: str | None = None,
    out=print,
) -> dict:
    """Print the comparison; return the tables and the plot path (the demo and notebook reuse it)."""
    from densecam_core import compare_runs, open_store

    store = open_store(store_url)
    run_a, run_b = store.run(key_a), store.run(key_b)
    if run_a.run_id == run_b.run_id:
        raise ValueError(f"RUN_A and RUN_B are the same run ({run_a.run_id}); pass two different runs")
    per_image = compare_runs(run_a, run_b, method, None if method == "cam" else block)
    summary = summarise_changes(per_image)
    changed = most_changed(per_image, top)
    what = "cam" if method == "cam" else f"{method} block {block}"
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
    return {"per_image": per_image, "summary": summary, "most_changed": changed, "plot": plot}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        compare(args.store, args.run_a, args.run_b, args.method, args.block, args.top, args.plot, args.csv)
    except (ValueError, KeyError) as exc:  # StoreError is a ValueError
        print(f"densecam compare: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
