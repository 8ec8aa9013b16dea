"""``densecam keygen [PATH]``: create a key for the pseudonyms of DICOM patient, study and instance identifiers."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from densecam_core.options import option
from jobs.cli.generated import DefaultsFormatter, add_config_arguments, config_from_args, on_the_command_line


@dataclass(kw_only=True)
class KeygenConfig:
    """Where to write the key: one field per argument (the parser is generated from them)."""

    path: str | None = option(
        None,
        help="where to write it (default: $DENSECAM_PSEUDONYM_KEY, else $XDG_CONFIG_HOME or ~/.config, "
        "densecam/pseudonym.key)",
        positional=True,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="densecam keygen",
        description="Create a key for the pseudonyms of DICOM identifiers (never overwrites a file). Keep it "
        "outside every store: whoever holds it can test guesses of identifiers against a store's pseudonyms.",
        formatter_class=DefaultsFormatter,
    )
    add_config_arguments(parser, KeygenConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    from densecam_core.data.pseudonyms import PseudonymKeyError, create_key, default_key_path

    args = config_from_args(KeygenConfig, build_parser().parse_args(argv))
    try:
        path = create_key(args.path or default_key_path())
    except (PseudonymKeyError, OSError) as exc:
        print(f"densecam keygen: error: {on_the_command_line(exc, KeygenConfig)}", file=sys.stderr)
        return 2
    print(f"wrote a new pseudonym key to {path} (readable by you only); pass it as --pseudonym-key {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
