"""The ``densecam`` command: demo, explain (the main job), train, evaluate, compare, synth."""

from __future__ import annotations

import argparse
import sys


def _synth(argv: list[str]) -> int:
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
    args = parser.parse_args(argv)
    try:
        summary = generate_mura(
            args.out,
            images=args.images,
            seed=args.seed,
            min_side=min(args.min_side, args.max_side),
            max_side=args.max_side,
            valid_fraction=args.valid_fraction,
            lesion_scale=args.lesion_scale,
            dicom=args.dicom,
        )
    except ValueError as exc:
        print(f"densecam synth: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {summary.images} images in {summary.studies} studies of {summary.patients} patients "
        f"({summary.lesions} with lesion boxes) to {summary.root}"
    )
    return 0


def _keygen(argv: list[str]) -> int:
    from densecam_core.data.pseudonyms import PseudonymKeyError, create_key, default_key_path

    parser = argparse.ArgumentParser(
        prog="densecam keygen",
        description="Create a key for the pseudonyms of DICOM identifiers (never overwrites a file). Keep it "
        "outside every store: whoever holds it can test guesses of identifiers against a store's pseudonyms.",
    )
    parser.add_argument("path", nargs="?", default=None, help=f"where to write it (default {default_key_path()})")
    args = parser.parse_args(argv)
    try:
        path = create_key(args.path or default_key_path())
    except (PseudonymKeyError, OSError) as exc:
        print(f"densecam keygen: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote a new pseudonym key to {path} (readable by you only); pass it as --pseudonym-key {path}")
    return 0


JOB_EXTRA_MODULES = ("torch", "torchvision", "ray", "sklearn", "tqdm")
"""What ``densecam[job]`` adds to the reader-only install."""

COMMANDS = {
    "demo": ("jobs.demo", "the whole loop on generated data: train, explain, score, compare (minutes, CPU)"),
    "explain": ("jobs.cli.explain", "explain every image of a manifest into a heatmap store (Ray)"),
    "cache": ("jobs.cache", "decode a manifest's images once into a store's input cache (CPU, ahead of jobs)"),
    "compact": ("jobs.cli.compact", "merge a store's index parts into a few large files (jobs do it when they finish)"),
    "verify": (
        "jobs.cli.verify",
        "check a store's committed shards (checksums, finite maps); --repair uncommits damage",
    ),
    "train": ("jobs.train", "fine-tune DenseNet169 the MURA-paper way; checkpoint + metrics"),
    "evaluate": (
        "jobs.cli.evaluate",
        "score a run's maps (deletion, insertion, randomisation, stability, localisation) or the pointing game",
    ),
    "compare": ("jobs.cli.compare", "what a model update changed between two runs"),
    "synth": (None, "write a synthetic MURA-v1.1 tree with lesion boxes (PNG, or DICOM with --dicom)"),
    "keygen": (None, "create a key for the pseudonyms of DICOM patient, study and instance identifiers"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: densecam COMMAND [options]\n\ncommands:")
        for name, (_, help_text) in COMMANDS.items():
            print(f"  {name:<9} {help_text}")
        print("\n'densecam COMMAND --help' explains each command's options.")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"densecam: unknown command {command!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    if command == "synth":
        return _synth(rest)
    if command == "keygen":
        return _keygen(rest)
    import importlib

    try:
        return int(importlib.import_module(COMMANDS[command][0]).main(rest))
    except SystemExit as exc:  # argparse's error (status 2, its message already printed) or --help (0)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in JOB_EXTRA_MODULES:
            print(
                f"densecam {command}: needs {exc.name!r}, which the reader-only install leaves out; "
                "install the job extra: python -m pip install 'densecam[job]'",
                file=sys.stderr,
            )
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
