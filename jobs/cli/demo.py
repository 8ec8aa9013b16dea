"""``densecam demo``: the whole loop on one machine in minutes, on generated data.

synthetic MURA tree (lesion boxes known) -> train DenseNet169 -> explain the valid split with the
Ray job -> study AUROC, pointing game per map vs the random baseline, overlay figures -> one more
epoch of training -> second run -> what the update changed. Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass

from densecam_core.options import option
from jobs.cli.generated import DefaultsFormatter, add_config_arguments, config_from_args, on_the_command_line
from jobs.demo import run_demo
from jobs.demo_config import DemoConfig


@dataclass(frozen=True, kw_only=True)
class DemoCommand(DemoConfig):
    """The demo's settings and the folder it works in."""

    workdir: str = option("densecam-demo", help="folder for data, checkpoints, store and figures")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="densecam demo", description=__doc__, formatter_class=DefaultsFormatter)
    add_config_arguments(parser, DemoCommand)
    return parser


def main(argv: list[str] | None = None) -> int:
    command = config_from_args(DemoCommand, build_parser().parse_args(argv))
    config = DemoConfig(**{f.name: getattr(command, f.name) for f in dataclasses.fields(DemoConfig)})
    try:
        run_demo(command.workdir, config)
    except ValueError as exc:
        print(f"densecam demo: {on_the_command_line(exc, DemoCommand)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
