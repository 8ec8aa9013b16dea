"""``densecam export STORE --run RUN --to dicom --out DIR``: a run's maps back into the radiologists' viewers.

Per image, a Secondary Capture (the radiograph with the map burned in, and a legend) and a fractional
Segmentation (the map's values on the source's grid, referencing it), in new series of the source's study,
with patient and study modules read from the source file now; ``--to png`` writes overlay panels instead.
"""

from __future__ import annotations

import argparse
import sys

from densecam_core.vocabulary import BLOCKS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="densecam export", description=__doc__)
    parser.add_argument("store", help="heatmap store path or URL")
    parser.add_argument("--run", default="latest", help="run id, model fingerprint (prefixes work) or 'latest'")
    parser.add_argument("--method", default="gradcam", help="map to export: cam or a stored method (default gradcam)")
    parser.add_argument("--block", type=int, default=4, choices=BLOCKS, help="dense block of the map (ignored for cam)")
    parser.add_argument("--target", default="0", help="runs of several classes: a class name or a target position")
    parser.add_argument("--to", default="dicom", choices=("dicom", "png"), help="DICOM objects, or PNG overlay panels")
    parser.add_argument("--out", required=True, help="folder to write (refused if it holds other files)")
    parser.add_argument("--body-part", action="append", help="only these body parts (repeatable)")
    parser.add_argument("--status", default="ok", help="comma-separated statuses of the rows to export (default ok)")
    parser.add_argument("--images", help="file of image ids to export, one per line")
    parser.add_argument("--limit", type=int, help="export at most this many images")
    parser.add_argument("--overwrite", action="store_true", help="write into an --out folder that holds files")
    parser.add_argument(
        "--seg",
        default="fractional",
        help="the Segmentation: 'fractional' (the map's values: Weasis, Slicer) or 'binary:T' (the map at or above T "
        "of its range, 0 < T < 1: the kind OHIF renders)",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes that export at once (default 1)")
    parser.add_argument(
        "--pseudonym-key",
        help="the key the run's DICOM identifiers were pseudonymised with (default: as `densecam explain`)",
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    from densecam_core.data.pseudonyms import PseudonymKeyError
    from densecam_core.export.run_export import ExportRequest, export_run, run_identifiers
    from densecam_core.store.reader import open_store

    args = build_parser().parse_args(argv)
    try:
        run = open_store(args.store).run(args.run)
        images = None
        if args.images:
            with open(args.images, encoding="utf-8") as handle:
                images = [line.strip() for line in handle if line.strip()]
        request = ExportRequest(
            method=args.method,
            block=None if args.method == "cam" else args.block,
            to=args.to,
            target=int(args.target) if args.target.isdigit() else args.target,
            body_parts=args.body_part,
            statuses=tuple(args.status.split(",")),
            images=images,
            limit=args.limit,
            overwrite=args.overwrite,
            seg=args.seg,
        )
        identifiers = run_identifiers(run, args.pseudonym_key) if args.to == "dicom" else None
        summary = export_run(
            run, args.out, request, identifiers=identifiers, progress=args.progress, workers=args.workers
        )
    except (ValueError, KeyError, OSError, PseudonymKeyError) as exc:  # StoreError is a ValueError
        print(f"densecam export: {exc}", file=sys.stderr)
        return 2
    print(summary.render(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
