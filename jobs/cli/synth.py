"""``densecam synth OUT``: write a synthetic MURA-v1.1 tree with lesion boxes (PNG, or DICOM with --dicom)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from densecam_core.options import option
from jobs.cli.generated import DefaultsFormatter, add_config_arguments, config_from_args, on_the_command_line


@dataclass(kw_only=True)
class SynthConfig:
    """The synthetic tree's settings: one field per flag (the parser is generated from them)."""

    out: str = option(help="folder to write MURA-v1.1/ and lesion_boxes.csv into", positional=True)
    images: int = option(1000, help="images to draw")
    seed: int = option(0, help="the tree is the same for the same seed and settings")
    max_side: int = option(512, help="longest image side in pixels (<= 512)")
    min_side: int = option(160, help="shortest long side in pixels (>= 16)")
    valid_fraction: float = option(0.15, help="share of patients in the valid split")
    lesion_scale: float = option(1.0, help="enlarge plates and fractures (0.25..4)")
    dicom: bool = option(
        False, help="write DICOM files (12-bit CR, MONOCHROME1/2, windowed, some RLE or JPEG 2000) instead of PNGs"
    )
    shortcut: str | None = option(
        None,
        help="plant a text token in a share of the abnormal images: text:FRACTION[:WIDTH[:CORNER]] "
        "(e.g. text:0.7:0.5, top_left); shortcuts.csv names them",
    )
    lesion_masks: bool = option(
        False, help="write each lesion's outline as a mask too, lesion_masks/<image id>.png (for localise --masks)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="densecam synth", description="Write a synthetic MURA-v1.1 tree.", formatter_class=DefaultsFormatter
    )
    add_config_arguments(parser, SynthConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    from densecam_core.data.synth import generate_mura

    config = config_from_args(SynthConfig, build_parser().parse_args(argv))
    try:
        from densecam_core.data.shortcuts import Shortcut

        shortcut = Shortcut.parse(config.shortcut) if config.shortcut else None
        summary = generate_mura(
            config.out,
            images=config.images,
            seed=config.seed,
            min_side=min(config.min_side, config.max_side),
            max_side=config.max_side,
            valid_fraction=config.valid_fraction,
            lesion_scale=config.lesion_scale,
            dicom=config.dicom,
            shortcut=shortcut,
            lesion_masks=config.lesion_masks,
        )
    except ValueError as exc:
        print(f"densecam synth: {on_the_command_line(exc, SynthConfig)}", file=sys.stderr)
        return 2
    print(
        f"wrote {summary.images} images in {summary.studies} studies of {summary.patients} patients "
        f"({summary.lesions} with lesion boxes) to {summary.root}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
