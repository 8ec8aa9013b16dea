"""Every config field is a flag: the parsers are generated from the configs, so a test can derive the flags."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from support import REPO

from jobs.audit.config import AuditConfig
from jobs.cli.audit import build_parser as audit_parser
from jobs.cli.cache import CacheConfig
from jobs.cli.cache import build_parser as cache_parser
from jobs.cli.compact import CompactConfig
from jobs.cli.compact import build_parser as compact_parser
from jobs.cli.compare import CompareConfig
from jobs.cli.compare import build_parser as compare_parser
from jobs.cli.demo import DemoCommand
from jobs.cli.demo import build_parser as demo_parser
from jobs.cli.evaluate import build_parser as evaluate_parser
from jobs.cli.explain import build_parser as explain_parser
from jobs.cli.export import ExportConfig
from jobs.cli.export import build_parser as export_parser
from jobs.cli.keygen import KeygenConfig
from jobs.cli.keygen import build_parser as keygen_parser
from jobs.cli.localise import build_parser as localise_parser
from jobs.cli.report import ReportConfig
from jobs.cli.report import build_parser as report_parser
from jobs.cli.synth import SynthConfig
from jobs.cli.synth import build_parser as synth_parser
from jobs.cli.train import TrainCommand
from jobs.cli.train import build_parser as train_parser
from jobs.cli.verify import VerifyConfig
from jobs.cli.verify import build_parser as verify_parser
from jobs.evaluate.config import EvaluateConfig
from jobs.explain.config import ExplainConfig
from jobs.localise.config import LocaliseConfig
from jobs.runtime.options import RuntimeOptions


def options(parser) -> dict[str, object]:
    """Each argument's destination and its action, as argparse holds them."""
    return {a.dest: a for a in parser._actions if a.dest != "help"}


@pytest.mark.parametrize(
    "config, parser",
    [
        (ExplainConfig, explain_parser),
        (EvaluateConfig, evaluate_parser),
        (AuditConfig, audit_parser),
        (LocaliseConfig, localise_parser),
        (SynthConfig, synth_parser),
        (ExportConfig, export_parser),
        (ReportConfig, report_parser),
        (CompareConfig, compare_parser),
        (TrainCommand, train_parser),
        (CacheConfig, cache_parser),
        (DemoCommand, demo_parser),
        (CompactConfig, compact_parser),
        (VerifyConfig, verify_parser),
        (KeygenConfig, keygen_parser),
    ],
)
def test_every_config_field_is_an_argument_with_the_fields_default(config, parser):
    actions = options(parser())
    fields = {f.name: f for f in dataclasses.fields(config)}
    assert set(fields) <= set(actions), set(fields) - set(actions)
    for name, field in fields.items():
        flag = name if field.metadata["positional"] else "--" + name.replace("_", "-")
        action = actions[name]
        assert flag in action.option_strings or (not action.option_strings and flag == name)
        assert action.help == fields[name].metadata["help"] or action.help.startswith(fields[name].metadata["help"])


def test_every_command_is_generated_from_a_config():
    """Each command of ``densecam`` builds its parser from a config's fields (none adds arguments by hand)."""
    import importlib
    import inspect

    from jobs.cli.main import COMMANDS

    for name, (module, _) in COMMANDS.items():
        source = inspect.getsource(importlib.import_module(module))
        assert "add_config_arguments(" in source and ".add_argument(" not in source, name


def test_the_runtime_options_mean_the_same_in_both_commands():
    """Same flag, same help, same default, unless the evaluation declares its own (a longer shard timeout)."""
    explain, evaluate = options(explain_parser()), options(evaluate_parser())
    own = {f.name for f in dataclasses.fields(EvaluateConfig)} & set(vars(EvaluateConfig)["__annotations__"])
    for field in dataclasses.fields(RuntimeOptions):
        a, b = explain[field.name], evaluate[field.name]
        assert a.option_strings == b.option_strings
        if field.name not in own:
            assert (a.help, a.default) == (b.help, b.default), field.name
    for flag in ("--start-timeout", "--max-image-bytes", "--actor-start-retries", "--max-in-flight"):
        assert any(flag in a.option_strings for a in evaluate.values()), flag


def test_parsed_flags_reach_the_config():
    from jobs.cli.generated import config_from_args

    args = evaluate_parser().parse_args(
        [
            "store",
            "--metrics",
            "deletion",
            "--start-timeout",
            "5",
            "--max-in-flight",
            "4",
            "--actor-start-retries",
            "0",
            "--max-image-bytes",
            "1000",
            "--no-progress",
            "--sample",
            "3",
        ]
    )
    config = config_from_args(EvaluateConfig, args)
    assert (config.start_timeout, config.max_in_flight, config.actor_start_retries, config.max_image_bytes) == (
        5.0,
        4,
        0,
        1000,
    )
    assert config.metrics == ("deletion",) and config.progress is False and config.sample == 3
    defaults = config_from_args(EvaluateConfig, evaluate_parser().parse_args(["store", "--metrics", "deletion"]))
    assert defaults.shard_timeout == EvaluateConfig(store="s").shard_timeout == 3600.0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bogus-command"], "unknown command"),
        (["explain", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["explain", "--methods", "nope"], "unknown method(s)"),
        (["explain", "--targets", "a,b"], "--targets must be"),
        (["evaluate", "store", "--sample", "2", "--fraction", "0.5"], "not allowed with argument"),
    ],
)
def test_a_users_mistake_gets_a_message_and_status_2_never_a_traceback(argv, message):
    result = subprocess.run(
        [sys.executable, "-m", "jobs.cli.main", *argv], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr[
        -800:
    ]
