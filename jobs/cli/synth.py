"""``densecam synth OUT``: write a synthetic MURA-v1.1 tree with lesion boxes (PNG, or DICOM with --dicom)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from densecam_core.data.synth import generate_mura

    parser = argparse.ArgumentParser(prog="densecam synth", description="Write a synthetic MURA-v1.1 tree.")
    parser.add_argument("out", help="folder to write MURA-v1.1/ and lesion_boxes.csv into")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-side", type=int, default=512, help="longest image side in pixels (<= 512)")
    parser.add_argument("--min-side", type=int, default=160)
    parser.add_argument("--valid-fraction", type=float, default=0.15, help="share of patients in the valid split")
    parser.add_argument("--lesion-scale", type=float, default=1.0, help="enlarge plates and fractures (0.25..4)")
    parser.add_argument(
        "--dicom",
        action="store_true",
        help="write DICOM files (12-bit CR, MONOCHROME1/2, windowed, some RLE or JPEG 2000) instead of PNGs",
    )
    parser.add_argument(
        "--shortcut",
        default=None,
        help="plant a text token in a share of the abnormal images: text:FRACTION[:WIDTH[:CORNER]] "
        "(e.g. text:0.7:0.5, top_left); shortcuts.csv names them",
    )
    parser.add_argument(
        "--lesion-masks",
        action="store_true",
        help="write each lesion's outline as a mask too, lesion_masks/<image id>.png (for localise --masks)",
    )
    args = parser.parse_args(argv)
    try:
        from densecam_core.data.shortcuts import Shortcut

        shortcut = Shortcut.parse(args.shortcut) if args.shortcut else None
        summary = generate_mura(
            args.out,
            images=args.images,
            seed=args.seed,
            min_side=min(args.min_side, args.max_side),
            max_side=args.max_side,
            valid_fraction=args.valid_fraction,
            lesion_scale=args.lesion_scale,
            dicom=args.dicom,
            shortcut=shortcut,
            lesion_masks=args.lesion_masks,
        )
    except ValueError as exc:
        print(f"densecam synth: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {summary.images} images in {summary.studies} studies of {summary.patients} patients "
        f"({summary.lesions} with lesion boxes) to {summary.root}"
        + (f"; {summary.shortcuts} carry the {shortcut.name} token (shortcuts.csv)" if shortcut else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
