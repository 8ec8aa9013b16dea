"""The `densecam` command's own behaviour (fast): help, unknown commands, and settings refused before work."""

from __future__ import annotations

from jobs.cli import main


def test_help_lists_every_command_and_unknown_ones_are_refused(capsys):
    assert main(["--help"]) == 0
    listing = capsys.readouterr().out
    for command in ("demo", "explain", "cache", "verify", "compact", "train", "evaluate", "compare", "synth"):
        assert f"  {command}" in listing
    assert main([]) == 2
    assert main(["explian"]) == 2
    assert "unknown command 'explian'" in capsys.readouterr().err


def test_demo_refuses_settings_that_cannot_work_before_writing_anything(tmp_path, capsys):
    assert main(["demo", "--workdir", str(tmp_path / "demo"), "--images", "0"]) == 2
    assert "--images >= 20" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()
