"""``densecam evaluate STORE --boxes CSV``: pointing game of every stored map against lesion boxes."""

from __future__ import annotations

import argparse
import sys

import pandas as pd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="densecam evaluate", description=__doc__)
    parser.add_argument("store", help="heatmap store path or URL")
    parser.add_argument(
        "--boxes", required=True, help="CSV with image_id,x0,y0,x1,y1 in original-image pixels (x1, y1 exclusive)"
    )
    parser.add_argument("--run", default="latest", help="run id, model fingerprint (prefixes work) or 'latest'")
    parser.add_argument(
        "--tolerance", type=float, default=0.0, help="grow boxes by this many pixels (Zhang et al. used 15)"
    )
    parser.add_argument("--csv", default=None, help="also write the table to this CSV")
    return parser


def format_table(table: pd.DataFrame) -> str:
    """Hit rates as a method x block grid, CAM first, with the random baseline underneath."""
    grid = table.pivot(index="method", columns="block", values="hit_rate")
    order = ["cam"] + [m for m in grid.index if m != "cam"]
    grid = grid.loc[order]
    grid.columns = [f"block {b}" for b in grid.columns]
    images = int(table["images"].iloc[0])
    baseline = float(table["random_baseline"].iloc[0])
    text = grid.to_string(float_format=lambda v: f"{v:.3f}", na_rep="")
    return f"pointing game hit rate over {images} images with a lesion box\n{text}\nrandom baseline (mean box area fraction): {baseline:.3f}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from densecam_core import open_store, pointing_game

    try:
        run = open_store(args.store).run(args.run)
        table = pointing_game(run, args.boxes, tolerance=args.tolerance)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        print(f"densecam evaluate: {exc}", file=sys.stderr)
        return 2
    print(f"run {run.run_id} (model {run.fingerprint[:12]})")
    print(format_table(table))
    if args.csv:
        table.to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
