"""``densecam train MANIFEST --out CKPT``: fine-tune a DenseNet (169 by default; one output) the MURA-paper way.

Weighted BCE per body part, Adam (lr 1e-4), lr / 10 on a validation-loss plateau, flips and
rotations up to 30 degrees. Writes a torchvision-format checkpoint (``load_densenet`` and
``densecam explain --checkpoint`` read it) and ``<name>.metrics.json`` beside it.
"""

from __future__ import annotations

import argparse
import os
import sys

from densecam_core.vocabulary import ARCHITECTURES, DEFAULT_ARCHITECTURE, PRECISIONS, RESIZE_MODES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="densecam train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "manifest", help="MURA-v1.1 folder, *_labeled_studies.csv, or a CSV/Parquet with path,label,split"
    )
    parser.add_argument(
        "--out", required=True, help="checkpoint to write (e.g. model.pt); metrics go to model.metrics.json"
    )
    parser.add_argument("--image-root", default=None, help="folder relative image paths are resolved against")
    parser.add_argument("--size", type=int, default=320, help="input side in pixels (default 320, the MURA paper's)")
    parser.add_argument("--resize", choices=RESIZE_MODES, default="stretch", help="how images become square")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    parser.add_argument(
        "--patience", type=int, default=1, help="epochs without validation-loss improvement before lr / 10"
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="autocast dtype: bf16 on CPUs with AVX512-BF16/AMX or CUDA; fp16 on CUDA",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda when available)")
    parser.add_argument(
        "--init",
        default=None,
        help="start from this weights file (torchvision ImageNet densenet169 or a MURA checkpoint); "
        "never downloaded. Default: seeded random init",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds init, shuffling and augmentation")
    parser.add_argument(
        "--arch",
        choices=tuple(ARCHITECTURES),
        default=DEFAULT_ARCHITECTURE,
        help="the DenseNet to train (default densenet169)",
    )
    parser.add_argument(
        "--loader-workers",
        type=int,
        default=None,
        help="decode processes (default: 0 on machines with <= 4 CPUs, else 4)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from densecam_core.data.errors import ManifestError
    from densecam_core.data.manifest import read_manifest
    from densecam_core.model.checkpoint import CheckpointError
    from densecam_core.model.training import TrainConfig, train
    from densecam_core.model.training_data import split_for_training

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    workers = args.loader_workers if args.loader_workers is not None else (0 if (os.cpu_count() or 1) <= 4 else 4)
    config = TrainConfig(
        size=args.size,
        resize=args.resize,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        plateau_patience=args.patience,
        precision=args.precision,
        device=device,
        seed=args.seed,
        loader_workers=workers,
        init=args.init,
        arch=args.arch,
    )
    try:
        config.validate()
        frame = read_manifest(args.manifest, args.image_root)
        train_rows, valid_rows = split_for_training(frame)
    except (ManifestError, ValueError) as exc:
        print(f"densecam train: {exc}", file=sys.stderr)
        return 2
    print(
        f"training on {len(train_rows)} images, validating on {len(valid_rows)}; {config.size} px, "
        f"{config.epochs} epochs, {config.precision} on {config.device}"
    )
    try:
        result = train(frame, args.out, config, progress=not args.no_progress)
    except CheckpointError as exc:
        print(f"densecam train: {exc}", file=sys.stderr)
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
