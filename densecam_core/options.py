"""Config fields that carry their command-line form: a field is a flag because it exists.

``jobs/cli/generated.py`` builds each command's parser from its config dataclass's fields, so the command
line and the config cannot disagree; configs of the library (``TrainConfig``) declare their fields here too,
without the library knowing any command line. Torch- and Ray-free.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

UNSET: Any = dataclasses.MISSING


def option(
    default: Any = UNSET,
    help: str = "",
    *,
    choices: tuple[Any, ...] | None = None,
    parse: Callable[[str], Any] | None = None,
    positional: bool = False,
    cli_default: Any = UNSET,
    group: str | None = None,
) -> Any:
    """A dataclass field with its command-line form.

    ``parse`` turns the flag's text into the field's value (its ``ValueError`` becomes argparse's error);
    ``cli_default`` is what the parser passes when the flag is absent, when that differs from the field's
    default (e.g. None: "decide from the store"); fields of one ``group`` are mutually exclusive flags;
    ``positional``: an argument, not a flag (optional when it has a default).
    """
    metadata = {"help": help, "choices": choices, "parse": parse, "positional": positional}
    metadata |= {"cli_default": cli_default, "group": group}
    return dataclasses.field(default=default, metadata=metadata)
