"""``densecam localise STORE --run RUN --boxes BOXES.csv --out DIR``: weak labels (boxes and masks) from a run's
stored maps, with thresholds chosen on a calibration split and reported on the other images: MaxBoxAccV2,
PxAP, mIoU and hit rate with intervals over studies, beside a centred-box baseline; COCO, CheXlocalize and
(for DICOM runs) binary Segmentation exports.

    densecam localise STORE --run latest --boxes lesion_boxes.csv --out weak-labels
    densecam localise STORE --boxes boxes.csv --calibrate calibration_ids.txt --methods cam --out weak-labels
"""

from __future__ import annotations

import argparse
import sys

from jobs.cli.generated import DefaultsFormatter, add_config_arguments, config_from_args, on_the_command_line


def build_parser() -> argparse.ArgumentParser:
    from jobs.localise.config import LocaliseConfig

    parser = argparse.ArgumentParser(prog="densecam localise", description=__doc__, formatter_class=DefaultsFormatter)
    add_config_arguments(parser, LocaliseConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    from jobs.localise.config import LocaliseConfig

    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(LocaliseConfig, args)
        config.validate()
        from jobs.localise.command import run_localise

        return run_localise(config)
    except (ValueError, KeyError, FileNotFoundError, PermissionError, OSError) as exc:
        print(f"densecam localise: {on_the_command_line(exc, LocaliseConfig)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
