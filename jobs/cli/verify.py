"""``densecam verify STORE [--run RUN] [--inputs] [--repair]``: check every committed shard, name the damage, and uncommit it.

Checks each run's index parts, each array's chunk for every committed shard (CRC-32C checksums), and
that every ``ok`` row has finite values. Exit status 0 when sound (or repaired), 1 when damage was
found and left, 2 on bad input. ``--repair`` removes the damaged shards' index parts: readers stop
showing them and the next explanation job recomputes them.

``--inputs`` also reads every input cache segment and catalog whole (page checksums, each input's
shape); ``--repair`` then deletes damaged segments and catalogs. They are derived from the source
files: jobs already decode a damaged segment's images again, and no longer pay that detour once it
is gone.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from densecam_core.data.dicom import DEFAULT_DICOM_WINDOW
from densecam_core.fileio import filesystem, url_join
from densecam_core.options import option
from densecam_core.store.inputs.cache import InputCache
from densecam_core.store.inputs.catalog import sweep_leftovers
from densecam_core.store.inputs.verify import remove, verify_input_caches
from densecam_core.store.layout import CACHE_FOLDER, INPUTS_DIR, StoreError
from densecam_core.store.reader import open_store
from densecam_core.store.verify import repair_index_files, uncommit, verify_run
from jobs.cli.generated import DefaultsFormatter, add_config_arguments, config_from_args, on_the_command_line


@dataclass(kw_only=True)
class VerifyConfig:
    """What to check: one field per flag (the parser is generated from them)."""

    store: str = option(help="heatmap store path or URL", positional=True)
    run: str | None = option(None, help="one run (id, fingerprint prefix or 'latest'); default: every run")
    repair: bool = option(False, help="uncommit damaged shards so the next job recomputes them")
    inputs: bool = option(False, help="also check the input caches (reads them whole)")
    check_sources: bool = option(
        False,
        help="with --inputs: identify every cached input's source file again (a stat, or its digest for "
        "content-identified entries) and count those that changed since they were cached",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="densecam verify", description=__doc__, formatter_class=DefaultsFormatter)
    add_config_arguments(parser, VerifyConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = config_from_args(VerifyConfig, build_parser().parse_args(argv))
    try:
        store = open_store(args.store)
        runs = [store.run(args.run)] if args.run else [store.run(r) for r in store.run_metadata()]
    except (StoreError, FileNotFoundError) as exc:
        print(f"densecam verify: error: {on_the_command_line(exc, VerifyConfig)}", file=sys.stderr)
        return 2
    for name, problem in getattr(store, "problems", {}).items():
        print(f"skipped folder runs/{name}: {problem}")
    found = 0
    left: list = []  # damage no repair can mend (arrays, links): named, for a person to look at
    for run in runs:
        damages = verify_run(run)
        try:
            shards: int | str = len(run.index_files().shards)
        except StoreError:
            shards = "?"
        print(f"{run.run_id}: {shards} committed shards, {len(damages)} problems")
        for damage in damages:
            print(f"  {damage}")
        found += len(damages)
        if args.repair:
            for done in repair_index_files(run, damages) if any(d.file for d in damages) else []:
                print(f"  {done}")
            for shard in sorted({d.shard for d in damages if d.shard >= 0}):
                uncommit(run, shard)
                print(f"  uncommitted shard {shard}: the next job recomputes it")
            left += [d for d in damages if d.shard < 0 and not d.file]
    if args.check_sources and not args.inputs:
        print("densecam verify: error: --check-sources goes with --inputs", file=sys.stderr)
        return 2
    if args.inputs:
        in_inputs, left_in_inputs, caches = _verify_inputs(args.store, args.repair)
        if args.check_sources:
            _check_sources(args.store, caches)
        found += in_inputs
        if args.repair and left_in_inputs:
            print(
                f"{left_in_inputs} problems in inputs/ cannot be repaired: look at those folders by hand",
                file=sys.stderr,
            )
            return 1
    if found and not args.repair:
        print("damage found: `densecam verify STORE --repair` uncommits it, then rerun the job", file=sys.stderr)
        return 1
    if left:
        print(
            f"{len(left)} problems cannot be repaired from the store (arrays, links out of it): look at them by "
            "hand, or delete the run's folder and explain it again",
            file=sys.stderr,
        )
        return 1
    return 0


def _verify_inputs(store: str, repair: bool) -> tuple[int, int, list[str]]:
    """Check (and with ``repair`` remove damage from) every input cache: (problems found, problems
    left, the cache folders seen)."""
    found = left = 0
    reports = verify_input_caches(store)
    for report in reports:
        print(f"inputs/{report.cache}: {report.segments} segments, {len(report.damages)} problems")
        for damage in report.damages:
            print(f"  {damage}")
            if repair and damage.file:
                remove(store, damage)
                print(f"  removed {damage.file}: the next job decodes those images again")
            else:
                left += 1
        found += len(report.damages)
        if repair:
            fs, folder = filesystem(url_join(store, INPUTS_DIR, report.cache))
            for name in sweep_leftovers(fs, folder):
                print(f"  removed {name}: left by a write that was killed, or a catalog nothing names")
    return found, left, [report.cache for report in reports]


def _check_sources(store: str, caches: list[str]) -> None:
    """Report, per input cache folder (as verify listed them), how many cached inputs no longer match
    their source files."""
    for cache in caches:
        match = CACHE_FOLDER.match(cache)
        if not match:
            continue
        window = match.group(4) or DEFAULT_DICOM_WINDOW
        known, stale = InputCache(store, int(match.group(1)), match.group(2), window).stale_sources()
        example = f", e.g. {stale[0]}" if stale else ""
        print(
            f"inputs/{cache}: {known} cached inputs, {len(stale)} whose source file changed or is gone "
            f"since (jobs decode those again){example}"
        )


if __name__ == "__main__":
    sys.exit(main())
