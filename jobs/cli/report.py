"""``densecam report STORE --run RUN [--compare RUN_B] --out DIR``: a run as a page a clinician can browse.

``DIR/index.html`` and its thumbnails: the run at a glance (model, settings, error rows by reason), the
map-quality verdicts when the run has been evaluated, the pointing game with ``--boxes``, counts, mean
probability and AUROC per body part, and galleries of overlays (most confident, most uncertain,
misclassified, error rows, and with ``--compare`` the images whose explanation changed most), filtered
in the page by body part, label and status. No server and no network: open the file in a browser.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from densecam_core.options import option
from jobs.cli.generated import DefaultsFormatter, add_config_arguments, config_from_args, on_the_command_line


@dataclass(kw_only=True)
class ReportConfig:
    """The page's settings: one field per flag (the parser is generated from them)."""

    store: str = option(help="heatmap store path or URL", positional=True)
    run: str = option("latest", help="run id, model fingerprint (prefixes work) or 'latest'")
    compare: str | None = option(None, help="another run of the same images: a gallery of what changed most")
    out: str = option(help="folder to write (refused if it holds other files)")
    maps: str = option("gradcam:4", help="maps beside the radiograph and CAM, method[:block],...")
    target: str = option("0", help="runs of several classes: a class name or a target position")
    boxes: str | None = option(None, help="lesion boxes CSV (image_id,x0,y0,x1,y1): the pointing game of every map")
    per_gallery: int = option(24, help="cards in each gallery")
    thumb_size: int = option(192, help="longest side of a thumbnail in pixels")
    overwrite: bool = option(False, help="write into an output folder that holds files")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="densecam report", description=__doc__, formatter_class=DefaultsFormatter)
    add_config_arguments(parser, ReportConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    from densecam_core.export.report import ReportRequest, parse_maps, write_report
    from densecam_core.store.reader import open_store

    args = config_from_args(ReportConfig, build_parser().parse_args(argv))
    try:
        store = open_store(args.store)
        run = store.run(args.run)
        compare = store.run(args.compare) if args.compare else None
        request = ReportRequest(
            maps=parse_maps(args.maps),
            target=int(args.target) if args.target.isdigit() else args.target,
            per_gallery=args.per_gallery,
            thumb_size=args.thumb_size,
            boxes=args.boxes,
            overwrite=args.overwrite,
        )
        result = write_report(run, args.out, request, compare=compare)
    except (ValueError, KeyError, OSError) as exc:  # StoreError is a ValueError
        print(f"densecam report: {on_the_command_line(exc, ReportConfig)}", file=sys.stderr)
        return 2
    print(f"report of run {run.run_id}: {result.cards} cards, {result.pictures} pictures -> {result.page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
