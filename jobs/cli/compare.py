"""``densecam compare STORE RUN_A RUN_B``: what a model update changed, per body part and per image."""

from __future__ import annotations

import argparse
import sys

from densecam_core.analysis.comparison_summary import report_changes
from densecam_core.vocabulary import BLOCKS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="densecam compare", description=__doc__)
    parser.add_argument("store", help="heatmap store path or URL")
    parser.add_argument("run_a", help="the earlier run: run id, model fingerprint (unique prefixes work) or 'latest'")
    parser.add_argument("run_b", help="the later run, same forms as RUN_A")
    parser.add_argument("--method", default="gradcam", help="map to compare: cam or a stored method (default gradcam)")
    parser.add_argument("--block", type=int, default=4, choices=BLOCKS, help="dense block of the map (ignored for cam)")
    parser.add_argument(
        "--target",
        default="0",
        help="runs that explain several classes: a class name, or a position along the target axis (default 0)",
    )
    parser.add_argument("--top", type=int, default=10, help="how many most-changed images to list")
    parser.add_argument(
        "--plot", default=None, help="PNG to write (default: compare-<A>-<B>.png in the current folder)"
    )
    parser.add_argument("--csv", default=None, help="also write the per-image table to this CSV")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        target = int(args.target) if args.target.isdigit() else args.target
        report_changes(
            args.store, args.run_a, args.run_b, args.method, args.block, args.top, args.plot, args.csv, target=target
        )
    except (ValueError, KeyError) as exc:  # StoreError is a ValueError
        print(f"densecam compare: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
