"""``densecam compare STORE RUN_A RUN_B``: what a model update changed, per body part and per image."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from densecam_core.analysis.comparison_summary import report_changes
from densecam_core.options import option
from jobs.cli.generated import DefaultsFormatter, add_config_arguments, config_from_args, on_the_command_line


@dataclass(kw_only=True)
class CompareConfig:
    """What to compare: one field per argument (the parser is generated from them)."""

    store: str = option(help="heatmap store path or URL", positional=True)
    run_a: str = option(
        help="the earlier run: run id, model fingerprint (unique prefixes work) or 'latest'", positional=True
    )
    run_b: str = option(help="the later run, same forms as RUN_A", positional=True)
    method: str = option("gradcam", help="map to compare: cam or a stored method")
    block: int = option(4, help="dense block of the map (ignored for cam)", choices=(1, 2, 3, 4))
    target: str = option(
        "0", help="runs that explain several classes: a class name, or a position along the target axis"
    )
    top: int = option(10, help="how many most-changed images to list")
    plot: str | None = option(None, help="PNG to write (default: compare-<A>-<B>.png in the current folder)")
    csv: str | None = option(None, help="also write the per-image table to this CSV")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="densecam compare", description=__doc__, formatter_class=DefaultsFormatter)
    add_config_arguments(parser, CompareConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = config_from_args(CompareConfig, build_parser().parse_args(argv))
    try:
        target = int(args.target) if args.target.isdigit() else args.target
        report_changes(
            args.store, args.run_a, args.run_b, args.method, args.block, args.top, args.plot, args.csv, target=target
        )
    except (ValueError, KeyError) as exc:  # StoreError is a ValueError
        print(f"densecam compare: {on_the_command_line(exc, CompareConfig)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
