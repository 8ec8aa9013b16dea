"""``densecam demo``: the whole loop on one machine in minutes, on generated data.

synthetic MURA tree (lesion boxes known) -> train DenseNet169 -> explain the valid split with the
Ray job -> study AUROC, pointing game per map vs the random baseline, overlay figures -> one more
epoch of training -> second run -> what the update changed. Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import sys

from jobs.demo import DemoConfig, run_demo


def build_parser() -> argparse.ArgumentParser:
    defaults = DemoConfig()
    parser = argparse.ArgumentParser(
        prog="densecam demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", default="densecam-demo", help="folder for data, checkpoints, store and figures")
    parser.add_argument("--images", type=int, default=defaults.images, help="synthetic images to generate")
    parser.add_argument("--size", type=int, default=defaults.size, help="model input size for training and explaining")
    parser.add_argument(
        "--epochs", type=int, default=defaults.epochs, help="epochs of the first model (the update adds one)"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--workers", type=int, default=None, help="Ray actors for the explanation job")
    parser.add_argument(
        "--evaluate-images",
        type=int,
        default=defaults.evaluate_images,
        help="valid images whose maps the quality evaluation scores (0: skip it)",
    )
    parser.add_argument(
        "--shortcut",
        default=defaults.shortcut,
        help="the token planted in abnormal images for the audit to find (text:FRACTION[:WIDTH]; 'none': no token)",
    )
    parser.add_argument("--device", default=None, help="training device (default: cuda when available, else cpu)")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = DemoConfig(
        images=args.images,
        size=args.size,
        epochs=args.epochs,
        seed=args.seed,
        workers=args.workers,
        evaluate_images=args.evaluate_images,
        device=args.device,
        shortcut=None if args.shortcut in (None, "none") else args.shortcut,
        progress=not args.no_progress,
    )
    try:
        run_demo(args.workdir, config)
    except ValueError as exc:
        print(f"densecam demo: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
