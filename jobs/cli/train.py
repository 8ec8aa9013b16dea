"""``densecam train MANIFEST --out CKPT``: fine-tune a DenseNet (169 by default; one output) the MURA-paper way.

Weighted BCE per body part, Adam (lr 1e-4), lr / 10 on a validation-loss plateau, flips and
rotations up to 30 degrees. Writes a torchvision-format checkpoint (``load_densenet`` and
``densecam explain --checkpoint`` read it) and ``<name>.metrics.json`` beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass

from densecam_core.model.training import TrainConfig
from densecam_core.options import option
from jobs.cli.generated import DefaultsFormatter, add_config_arguments, config_from_args, on_the_command_line


@dataclass(frozen=True, kw_only=True)
class TrainCommand(TrainConfig):
    """The training's settings (``TrainConfig``, every field a flag) and where the images and the checkpoint are."""

    manifest: str = option(
        help="MURA-v1.1 folder, *_labeled_studies.csv, or a CSV/Parquet with path,label,split", positional=True
    )
    out: str = option(help="checkpoint to write (e.g. model.pt); metrics go to model.metrics.json")
    image_root: str | None = option(None, help="folder relative image paths are resolved against")
    progress: bool = option(True, help="progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="densecam train", description=__doc__, formatter_class=DefaultsFormatter)
    add_config_arguments(parser, TrainCommand)
    return parser


def main(argv: list[str] | None = None) -> int:
    command = config_from_args(TrainCommand, build_parser().parse_args(argv))
    import torch

    from densecam_core.data.errors import ManifestError
    from densecam_core.data.manifest import read_manifest
    from densecam_core.model.checkpoint import CheckpointError
    from densecam_core.model.training import train
    from densecam_core.model.training_data import split_for_training

    settings = {f.name: getattr(command, f.name) for f in dataclasses.fields(TrainConfig)}
    if settings["device"] is None:
        settings["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    if settings["loader_workers"] is None:
        settings["loader_workers"] = 0 if (os.cpu_count() or 1) <= 4 else 4
    config = TrainConfig(**settings)
    args = command
    try:
        config.validate()
        frame = read_manifest(args.manifest, args.image_root)
        train_rows, valid_rows = split_for_training(frame)
    except (ManifestError, ValueError) as exc:
        print(f"densecam train: {on_the_command_line(exc, TrainCommand)}", file=sys.stderr)
        return 2
    print(
        f"training on {len(train_rows)} images, validating on {len(valid_rows)}; {config.size} px, "
        f"{config.epochs} epochs, {config.precision} on {config.device}"
    )
    try:
        result = train(frame, args.out, config, progress=args.progress)
    except CheckpointError as exc:
        print(f"densecam train: {on_the_command_line(exc, TrainCommand)}", file=sys.stderr)
        return 2
    study, image = result.final["study"], result.final["image"]
    print(
        f"study level: AUROC {study['auroc']:.3f}, sensitivity {study['sensitivity']:.3f}, "
        f"specificity {study['specificity']:.3f}, kappa {study['kappa']:.3f}"
    )
    print(
        f"image level: AUROC {image['auroc']:.3f}, sensitivity {image['sensitivity']:.3f}, "
        f"specificity {image['specificity']:.3f}, kappa {image['kappa']:.3f}"
    )
    if result.skipped:
        print(f"skipped {len(result.skipped)} unreadable images (listed in the metrics file)")
    print(f"checkpoint: {result.checkpoint} (model {result.fingerprint[:12]})\nmetrics: {result.metrics_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
