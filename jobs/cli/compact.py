"""``densecam compact STORE [--run RUN]``: merge runs' index parts into a few large Parquet files.

Jobs compact their run when they finish; this command compacts runs written before that, or after an
interrupted job. It takes each run's lock: a job writing the run makes it refuse (and the other way
round). Interrupting it at any moment leaves the run readable and complete.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

from densecam_core.options import option
from densecam_core.store.compact import compact_run
from densecam_core.store.layout import StoreError
from densecam_core.store.reader import open_store
from jobs.cli.generated import DefaultsFormatter, add_config_arguments, config_from_args, on_the_command_line


@dataclass(kw_only=True)
class CompactConfig:
    """What to compact: one field per flag (the parser is generated from them)."""

    store: str = option(help="heatmap store path or URL", positional=True)
    run: str | None = option(None, help="one run (id, fingerprint prefix or 'latest'); default: every run")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="densecam compact", description=__doc__, formatter_class=DefaultsFormatter)
    add_config_arguments(parser, CompactConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = config_from_args(CompactConfig, build_parser().parse_args(argv))
    try:
        store = open_store(args.store)
        runs = [store.run(args.run)] if args.run else [store.run(r) for r in store.run_metadata()]
        for run in runs:
            started = time.perf_counter()
            done = compact_run(run)
            print(
                f"{done.run_id}: {done.rows} rows, {done.files_before} index files -> {done.files_after} "
                f"({done.parts_merged} parts merged) in {time.perf_counter() - started:.1f} s"
            )
    except (StoreError, FileNotFoundError) as exc:
        print(f"densecam compact: error: {on_the_command_line(exc, CompactConfig)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
