"""``densecam evaluate``: score a run's maps (faithfulness, randomisation, stability, localisation) as a
Ray job, or, with ``--boxes`` alone, the quick pointing game of the stored maps.

    densecam evaluate STORE --run RUN --checkpoint CKPT --metrics deletion,insertion,randomization,stability
    densecam evaluate STORE --boxes lesion_boxes.csv            # pointing game only (no model, no Ray)
"""

from __future__ import annotations

import argparse
import sys
import traceback

import pandas as pd


def build_parser() -> argparse.ArgumentParser:
    from jobs.evaluate.config import EVALUATE_INPUT_CACHE_MODES, EvaluateConfig

    d = EvaluateConfig(store="")
    parser = argparse.ArgumentParser(
        prog="densecam evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("store", help="heatmap store path or URL")
    parser.add_argument("--run", default=d.run, help="run id, model fingerprint (prefixes work) or 'latest'")
    parser.add_argument(
        "--metrics",
        default=None,
        help="comma-separated: deletion, insertion, randomization, stability, localization (needs --boxes); "
        "omitted with --boxes: the pointing game of the stored maps only",
    )
    parser.add_argument(
        "--checkpoint", default=d.checkpoint, help="the run's model weights (.pt); must match its fingerprint"
    )
    parser.add_argument(
        "--boxes", default=None, help="CSV with image_id,x0,y0,x1,y1 in original-image pixels (x1, y1 exclusive)"
    )
    parser.add_argument("--steps", type=int, default=d.steps, help="deletion/insertion steps K")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--sample", type=int, default=None, help="score N images (stratified by body part and label)")
    group.add_argument("--fraction", type=float, default=None, help="score this fraction of the images (stratified)")
    parser.add_argument("--seed", type=int, default=d.seed, help="sample, random maps, noise and randomised weights")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="images scored together on an actor")
    parser.add_argument(
        "--input-cache",
        choices=EVALUATE_INPUT_CACHE_MODES,
        default=d.input_cache,
        help="read model inputs from the cache",
    )
    parser.add_argument("--force", action="store_true", help="drop the run's metrics and score afresh")
    parser.add_argument("--workers", type=int, default=None, help="Ray actors (default: as for densecam explain)")
    parser.add_argument("--gpus-per-worker", type=float, default=d.gpus_per_worker)
    parser.add_argument("--cpus-per-worker", type=float, default=None)
    parser.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--retries", type=int, default=d.retries, help="times a failed shard is retried")
    parser.add_argument(
        "--shard-timeout", type=float, default=d.shard_timeout, help="seconds an actor may hold one shard"
    )
    parser.add_argument("--resamples", type=int, default=d.resamples, help="bootstrap resamples of studies")
    parser.add_argument("--summary-json", default=None, help="also write the job summary to this JSON file")
    parser.add_argument(
        "--tolerance", type=float, default=0.0, help="pointing game only: grow boxes by this many pixels"
    )
    parser.add_argument(
        "--csv", default=None, help="also write the table to this CSV (job: default metrics/_summary.csv)"
    )
    parser.add_argument("--plot", default=None, help="job: the table as a figure (default metrics/_summary.png)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def format_table(table: pd.DataFrame) -> str:
    """Hit rates as a method x block grid, CAM first, with the random baseline underneath."""
    grid = table.pivot(index="method", columns="block", values="hit_rate")
    order = ["cam"] + [m for m in grid.index if m != "cam"]
    grid = grid.loc[order]
    grid.columns = [f"block {b}" for b in grid.columns]
    images = int(table["images"].iloc[0])
    baseline = float(table["random_baseline"].iloc[0])
    text = grid.to_string(float_format=lambda v: f"{v:.3f}", na_rep="")
    return f"pointing game hit rate over {images} images with a lesion box\n{text}\nrandom baseline (mean box area fraction): {baseline:.3f}"


def pointing_game_main(args: argparse.Namespace) -> int:
    from densecam_core import open_store, pointing_game

    run = open_store(args.store).run(args.run)
    table = pointing_game(run, args.boxes, tolerance=args.tolerance)
    print(f"run {run.run_id} (model {run.fingerprint[:12]})")
    print(format_table(table))
    if args.csv:
        table.to_csv(args.csv, index=False)
    return 0


def job_main(args: argparse.Namespace) -> int:
    from jobs.evaluate.config import EvaluateConfig
    from jobs.evaluate.job import main_job

    config = EvaluateConfig(
        store=args.store,
        run=args.run,
        checkpoint=args.checkpoint,
        metrics=args.metrics,
        boxes=args.boxes,
        steps=args.steps,
        sample=args.sample,
        fraction=args.fraction,
        seed=args.seed,
        batch_size=args.batch_size,
        input_cache=args.input_cache,
        force=args.force,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker,
        address=args.address,
        retries=args.retries,
        shard_timeout=args.shard_timeout,
        resamples=args.resamples,
        summary_json=args.summary_json,
        progress=not args.no_progress,
    )
    return main_job(config, csv=args.csv, plot=args.plot)


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
        print(f"densecam evaluate: {exc}", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
