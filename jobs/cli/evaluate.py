"""``densecam evaluate``: score a run's maps (faithfulness, randomisation, stability, localisation) as a
Ray job, or, with ``--boxes`` alone, the quick pointing game of the stored maps.

    densecam evaluate STORE --run RUN --checkpoint CKPT --metrics deletion,insertion,randomisation,stability
    densecam evaluate STORE --boxes lesion_boxes.csv            # pointing game only (no model, no Ray)
"""

from __future__ import annotations

import argparse
import sys
import traceback
from dataclasses import dataclass

from densecam_core.options import option
from jobs.cli.generated import DefaultsFormatter, add_config_arguments, config_from_args, on_the_command_line
from jobs.evaluate.config import EvaluateConfig


@dataclass(kw_only=True)
class EvaluateCommand(EvaluateConfig):
    """The evaluation's settings, and where the command writes its table."""

    tolerance: float = option(0.0, help="pointing game only: grow boxes by this many pixels")
    csv: str | None = option(None, help="also write the table to this CSV (job: default metrics/_summary.csv)")
    plot: str | None = option(None, help="job: the table as a figure (default metrics/_summary.png)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="densecam evaluate", description=__doc__, formatter_class=DefaultsFormatter)
    add_config_arguments(parser, EvaluateCommand)
    return parser


def pointing_game_main(args: argparse.Namespace) -> int:
    from densecam_core import open_store, pointing_game
    from densecam_core.analysis.pointing import format_pointing_game

    run = open_store(args.store).run(args.run)
    table = pointing_game(run, args.boxes, tolerance=args.tolerance)
    print(f"run {run.run_id} (model {run.fingerprint[:12]})")
    print(format_pointing_game(table))
    if args.csv:
        table.to_csv(args.csv, index=False)
    return 0


def job_main(args: argparse.Namespace) -> int:
    from jobs.evaluate.job import main_job

    return main_job(config_from_args(EvaluateConfig, args), csv=args.csv, plot=args.plot)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.metrics is None and args.boxes is None:
        print(
            "densecam evaluate: pass --metrics (and --checkpoint) to score the maps, or --boxes for the pointing game",
            file=sys.stderr,
        )
        return 2
    from densecam_core.model.checkpoint import CheckpointError

    try:
        return job_main(args) if args.metrics is not None else pointing_game_main(args)
    except (ValueError, KeyError, FileNotFoundError, CheckpointError) as exc:
        print(f"densecam evaluate: {on_the_command_line(exc, EvaluateCommand)}", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
