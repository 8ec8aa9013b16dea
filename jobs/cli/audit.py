"""``densecam audit STORE --run RUN``: is the model right for the right reasons? Where every stored map points
across the run's images: per-image spatial scores, clusters of maps within each label (and body part) group,
clusters flagged by a stated rule, atlases; ``--confirm --checkpoint CKPT`` pastes each flagged cluster's
region onto images of the other label and measures the logit change.

    densecam audit STORE --run RUN
    densecam audit STORE --run RUN --methods gradcam --blocks 3 --confirm --checkpoint model.pt
"""

from __future__ import annotations

import argparse
import sys

from jobs.cli.generated import DefaultsFormatter, add_config_arguments, config_from_args, on_the_command_line


def build_parser() -> argparse.ArgumentParser:
    from jobs.audit.config import AuditConfig

    parser = argparse.ArgumentParser(prog="densecam audit", description=__doc__, formatter_class=DefaultsFormatter)
    add_config_arguments(parser, AuditConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    from jobs.audit.config import AuditConfig

    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(AuditConfig, args)
        config.validate()
        from jobs.audit.job import run_audit

        return run_audit(config)
    except (ValueError, KeyError, FileNotFoundError, PermissionError) as exc:
        print(f"densecam audit: {on_the_command_line(exc, AuditConfig)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
