"""Parsers generated from config dataclasses: one argument per field, its help from the field's metadata.

Types come from the annotations (``int``, ``float``, ``str``, ``bool``, each optionally ``| None``);
other types need a ``parse`` function. A bool defaulting to False is a switch (``--force``), one
defaulting to True can be turned off (``--cuda-graphs`` / ``--no-cuda-graphs``).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from collections.abc import Callable
from typing import Any

from densecam_core.options import UNSET

_SIMPLE = (int, float, str, bool)


class DefaultsFormatter(argparse.RawDescriptionHelpFormatter):
    """Help with each option's default (when it has a value to show), the description kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = action.default not in (None, False, argparse.SUPPRESS) and "%(default)" not in text
        if shown and (action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE)):
            text += " (default: %(default)s)"
        return text


def _kind(annotation: Any) -> type | None:
    """The simple type of ``X`` or ``X | None``; None for anything else (the field must then parse)."""
    if annotation in _SIMPLE:
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(kinds) == 1 and kinds[0] in _SIMPLE:
            return kinds[0]
    return None


def _checked(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """argparse reports a type function's ValueError without its message; keep the message."""

    def run(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    run.__name__ = getattr(parse, "__name__", "value")
    return run


def _shown(value: Any) -> Any:
    """A tuple default as the comma-separated text the flag takes (its ``parse`` reads it back)."""
    return ",".join(map(str, value)) if isinstance(value, tuple) else value


def config_fields(config_class: type) -> list[dataclasses.Field]:
    """The fields that are options, the config's own before those it inherits (the shared runtime's);
    every field must carry help (``option(...)``)."""
    own = set(vars(config_class).get("__annotations__", {}))
    fields = sorted((f for f in dataclasses.fields(config_class) if f.init), key=lambda f: f.name not in own)
    missing = [f.name for f in fields if not f.metadata.get("help")]
    if missing:
        raise TypeError(
            f"{config_class.__name__} fields without command-line help: {missing} (declare them with option())"
        )
    return fields


def add_config_arguments(parser: argparse.ArgumentParser, config_class: type) -> None:
    """One argument per field of ``config_class``, in ``config_fields`` order."""
    hints = typing.get_type_hints(config_class)
    groups: dict[str, Any] = {}
    for f in config_fields(config_class):
        meta = f.metadata
        default = f.default if f.default is not dataclasses.MISSING else UNSET
        if meta["cli_default"] is not UNSET:
            default = meta["cli_default"]
        kind, parse = _kind(hints[f.name]), meta["parse"]
        target = parser
        if meta["group"]:
            if meta["group"] not in groups:
                groups[meta["group"]] = parser.add_mutually_exclusive_group()
            target = groups[meta["group"]]
        kwargs: dict[str, Any] = {"help": meta["help"]}
        if meta["choices"] is not None:
            kwargs["choices"] = meta["choices"]
        if meta["positional"]:
            if default is not UNSET:
                kwargs |= {"nargs": "?", "default": default}
            target.add_argument(f.name, **kwargs)
            continue
        flag = "--" + f.name.replace("_", "-")
        if kind is bool and parse is None:
            action = "store_true" if default is False else argparse.BooleanOptionalAction
            target.add_argument(flag, dest=f.name, action=action, default=default, **kwargs)
            continue
        if parse is not None:
            kwargs["type"] = _checked(parse)
        elif kind is not None and kind is not str:
            kwargs["type"] = kind
        elif kind is None:
            raise TypeError(f"{config_class.__name__}.{f.name}: {hints[f.name]} needs option(parse=...)")
        if default is UNSET:
            kwargs["required"] = True
        else:
            kwargs["default"] = _shown(default)
        target.add_argument(flag, dest=f.name, **kwargs)


_PARAMETER = re.compile(r"`([a-z][a-z0-9_]*)`")


def on_the_command_line(error: object, config_class: type) -> str:
    """A library message as the command's user reads it: the library names its parameters (`pacs_cache`), the
    command line names the flag that sets each of its config's fields (--pacs-cache; a positional field: its
    name in capitals)."""
    fields = {f.name: f for f in config_fields(config_class)}

    def flag(match: re.Match[str]) -> str:
        field = fields.get(match[1])
        if field is None:
            return match[0]
        return field.name.upper() if field.metadata["positional"] else "--" + field.name.replace("_", "-")

    return _PARAMETER.sub(flag, str(error))


def config_from_args(config_class: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """The config of the parsed arguments (``overrides`` win: values the command derives itself)."""
    values = {f.name: getattr(args, f.name) for f in config_fields(config_class) if hasattr(args, f.name)}
    return config_class(**{**values, **overrides})
