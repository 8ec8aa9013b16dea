"""The ``densecam`` command: demo, explain (the main job), train, evaluate, compare, export, report, synth."""

from __future__ import annotations

import sys

JOB_EXTRA_MODULES = ("torch", "torchvision", "ray", "sklearn", "scipy", "tqdm")
"""What ``densecam[job]`` adds to the reader-only install."""

COMMANDS = {
    "demo": ("jobs.cli.demo", "the whole loop on generated data: train, explain, score, compare (minutes, CPU)"),
    "explain": ("jobs.cli.explain", "explain every image of a manifest into a heatmap store (Ray)"),
    "cache": ("jobs.cli.cache", "decode a manifest's images once into a store's input cache (CPU, ahead of jobs)"),
    "compact": ("jobs.cli.compact", "merge a store's index parts into a few large files (jobs do it when they finish)"),
    "verify": (
        "jobs.cli.verify",
        "check a store's committed shards (checksums, finite maps); --repair uncommits damage",
    ),
    "train": ("jobs.cli.train", "fine-tune DenseNet169 the MURA-paper way; checkpoint + metrics"),
    "evaluate": (
        "jobs.cli.evaluate",
        "score a run's maps (deletion, insertion, randomisation, stability, localisation) or the pointing game",
    ),
    "compare": ("jobs.cli.compare", "what a model update changed between two runs"),
    "audit": ("jobs.cli.audit", "where a run's maps point across its images: shortcut clusters, atlases, paste test"),
    "localise": (
        "jobs.cli.localise",
        "weak labels from a run's maps: calibrated boxes and masks, MaxBoxAccV2/PxAP, COCO and DICOM SEG",
    ),
    "export": (
        "jobs.cli.export",
        "a run's maps as DICOM objects for a viewer (Secondary Capture, Segmentation) or PNGs",
    ),
    "report": ("jobs.cli.report", "a run as a static web page: overview, map quality, galleries of overlays"),
    "synth": ("jobs.cli.synth", "write a synthetic MURA-v1.1 tree with lesion boxes (PNG, or DICOM with --dicom)"),
    "keygen": ("jobs.cli.keygen", "create a key for the pseudonyms of DICOM patient, study and instance identifiers"),
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
