"""``densecam keygen [PATH]``: create a key for the pseudonyms of DICOM patient, study and instance identifiers."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
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


if __name__ == "__main__":
    sys.exit(main())
