"""``densecam explain``: explain every image of a manifest into a heatmap store (Ray).

densecam explain MANIFEST --store STORE [--checkpoint CKPT] [...]
ray job submit --working-dir . -- python -m jobs.cli.explain s3://bucket/manifest.parquet --store s3://bucket/store ...
"""

from __future__ import annotations

import argparse
import sys
import traceback

from jobs.cli.generated import DefaultsFormatter, add_config_arguments, config_from_args, on_the_command_line
from jobs.explain.config import ExplainConfig, shard_size_for


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="densecam explain",
        description="Explain every image of a manifest into a heatmap store (Ray).",
        formatter_class=DefaultsFormatter,
    )
    add_config_arguments(parser, ExplainConfig)
    return parser


def config_from(args: argparse.Namespace) -> ExplainConfig:
    """The job's config; without --shard-size, the shard size of the store's runs."""
    config: ExplainConfig = config_from_args(
        ExplainConfig, args, shard_size=shard_size_for(args.store, args.shard_size)
    )
    return config


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from densecam_core.data.errors import ManifestError
    from densecam_core.model.checkpoint import CheckpointError
    from densecam_core.store.layout import StoreError
    from jobs.explain.job import run_explain
    from jobs.runtime.actor_pool import ActorStartError

    try:
        summary = run_explain(config_from(args))
    except (ManifestError, CheckpointError, StoreError, ValueError, TypeError) as exc:
        print(f"densecam explain: error: {on_the_command_line(exc, ExplainConfig)}", file=sys.stderr)
        return 2
    except ActorStartError as exc:
        print(f"densecam explain: error: {on_the_command_line(exc, ExplainConfig)}", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        return 1
    print(summary.render())
    return 1 if summary.shards_failed else 0


if __name__ == "__main__":
    sys.exit(main())
