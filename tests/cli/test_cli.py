"""The `densecam` command's own behaviour (fast): help, unknown commands, and settings refused before work."""

from __future__ import annotations

from jobs.cli.main import main


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


def test_evaluate_and_compare_on_a_small_store(tmp_path, capsys):
    """The two analysis commands on a store of two fabricated runs (the demo's test covers a real one)."""
    import pandas as pd
    from support.store import commit_all, manifest, spec

    from densecam_core.store.writer import RunWriter

    url = str(tmp_path / "store")
    for fingerprint in ("a" * 64, "b" * 64):
        writer = RunWriter(url, spec(fingerprint=fingerprint))
        writer.create_or_open("m")
        commit_all(writer, writer.plan(manifest(8)))
    boxes = tmp_path / "boxes.csv"
    pd.DataFrame({"image_id": ["img001.png"], "x0": [0], "y0": [0], "x1": [40], "y1": [25]}).to_csv(boxes, index=False)
    assert main(["evaluate", url, "--boxes", str(boxes)]) == 0
    assert "pointing game hit rate over 1 images" in capsys.readouterr().out
    first, second = (RunWriter(url, spec(fingerprint=f * 64)).spec.run_id for f in "ab")
    assert main(["compare", url, first, second, "--method", "gradcam", "--block", "2"]) == 0
    assert "ALL" in capsys.readouterr().out
    assert main(["compare", url, first, first]) == 2
