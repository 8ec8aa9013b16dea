"""The library names its parameters, never a command-line flag (a notebook calling ``export_run`` is told about
`to`, not --to); the command line maps each parameter to its flag. A flag may appear only inside a command line
the message tells the user to run (``densecam verify STORE --repair``)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from jobs.cli.export import ExportConfig
from jobs.cli.generated import on_the_command_line

REPO = Path(__file__).resolve().parents[1]
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _docstrings(tree: ast.AST) -> set[int]:
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
    }


def _strings(tree: ast.AST):
    """Each string literal, a whole implicitly joined or formatted string at a time (its constant parts)."""
    parts_of_fstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = [v for v in node.values if isinstance(v, ast.Constant)]
            parts_of_fstrings |= {id(v) for v in parts}
            yield node.lineno, "".join(str(v.value) for v in parts)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in parts_of_fstrings:
            yield node.lineno, node
    return


def test_no_library_message_names_a_flag():
    offenders = []
    for path in sorted((REPO / "densecam_core").rglob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = _docstrings(tree)
        for line, item in _strings(tree):
            if isinstance(item, ast.Constant):
                if id(item) in docstrings:
                    continue
                item = item.value
            if FLAG.search(item) and "densecam " not in item:
                offenders.append(f"{path.relative_to(REPO)}:{line}: {FLAG.findall(item)}")
    assert offenders == []


@pytest.mark.parametrize(
    "message, shown",
    [
        ("`to` must be one of ('dicom', 'png')", "--to must be one of ('dicom', 'png')"),
        ("pass `overwrite`, or `pseudonym_key`", "pass --overwrite, or --pseudonym-key"),
        ("`store` is STORE: it is positional", "STORE is STORE: it is positional"),
        ("`unknown_name` and `densecam verify` stay", "`unknown_name` and `densecam verify` stay"),
    ],
)
def test_the_command_line_names_the_flag_of_each_parameter(message: str, shown: str):
    assert on_the_command_line(ValueError(message), ExportConfig) == shown
