"""The demo end to end at a tiny size, and the evaluate / compare commands on the store it leaves."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from densecam_core import load_densenet169, model_fingerprint, open_store
from densecam_core.analysis.pointing import pointing_game
from jobs.cli.main import main as cli_main

pytestmark = pytest.mark.slow  # Ray, the demo or a notebook kernel: see `pytest -m "not slow"`


def test_demo_produces_its_summary_and_files(demo_result):
    work = Path(demo_result["workdir"])

    def refuse(token: str) -> None:
        raise AssertionError(f"demo-summary.json is not strict JSON: {token}")

    summary = json.loads((work / "demo-summary.json").read_text(), parse_constant=refuse)
    assert summary["runs"] == demo_result["runs"] and len(set(summary["runs"])) == 2
    assert 0.0 <= summary["study_auroc"] <= 1.0
    table = pd.DataFrame(summary["pointing_game"])
    assert len(table) == 1 + 5 * 4, "CAM plus every method x block"
    assert table["hit_rate"].between(0, 1).all()
    assert 0 < summary["random_baseline"] < 1
    for path in [*summary["overlays"], summary["contact_sheet"], summary["compare_plot"]]:
        assert Path(path).is_file() and Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    assert len(summary["overlays"]) == 2
    # the report page of run A: its galleries (the update's changes among them), the pointing game, the quality grid
    page = Path(summary["report"]).read_text()
    assert summary["report"] == str(work / "report" / "index.html")
    for part in ('id="gallery-confident"', 'id="gallery-changed"', 'id="pointing"', 'id="quality"', 'id="body-parts"'):
        assert part in page, part
    assert page.count('class="card"') >= 24 and all(
        (work / "report" / name).is_file() for name in re.findall(r'src="(thumbs/[^"]+)"', page)
    )
    # run A's audit: stored beside the run, on the report page, scored against the planted token's images
    audit = open_store(summary["store"]).run(summary["runs"][0]).audit()
    assert audit.folder == summary["audit"]["a"]["folder"] and "Audit: right for the right reasons?" in page
    assert open_store(summary["store"]).run(summary["runs"][1]).audit().folder == summary["audit"]["b"]["folder"]
    assert (work / "data" / "shortcuts.csv").is_file()
    assert {r["map"] for r in summary["audit"]["a"]["token"]} == {"cam/4", *(f"gradcam/{b}" for b in (1, 2, 3, 4)),
        *(f"{m}/{b}" for m in ("gradcampp", "layercam", "xgradcam", "hirescam") for b in (1, 2, 3, 4))}  # fmt: skip
    # each run holds exactly the valid split, explained by the checkpoint it names
    store = open_store(summary["store"])
    valid = pd.read_csv(work / "valid.csv")
    for run_id, checkpoint in zip(summary["runs"], summary["checkpoints"]):
        run = store.run(run_id)
        assert sorted(run.index["image_id"]) == sorted(valid["path"])
        assert run.fingerprint == model_fingerprint(load_densenet169(checkpoint))
    # the map-quality evaluation of run A: every map scored, its per-image scores stored beside the maps
    quality = pd.DataFrame(summary["quality"])
    assert len(quality) == 21 and {"deletion_auc", "insertion_auc", "randomisation_spearman", "stability_r"} <= set(
        quality.columns
    )
    scores = store.run(summary["runs"][0]).metrics()
    assert scores["image_id"].nunique() == 4 and "error" not in set(scores["metric"])  # the fixture's sample
    assert set(scores.loc[scores["metric"].str.startswith("randomisation"), "stage"]) == {1, 2, 3, 4, 5}
    assert store.run(summary["runs"][1]).metrics().empty, "only run A is scored"
    # the printed table is the library's pointing game over the stored run
    again = pointing_game(store.run(summary["runs"][0]), work / "data" / "lesion_boxes.csv")
    assert again["hit_rate"].tolist() == table["hit_rate"].tolist()


def test_evaluate_and_compare_commands(demo_result, capsys, tmp_path):
    work = Path(demo_result["workdir"])
    store = str(work / "store")
    assert (
        cli_main(
            ["evaluate", store, "--boxes", str(work / "data" / "lesion_boxes.csv"), "--run", demo_result["runs"][0]]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "pointing game hit rate" in out and "block 4" in out and "random baseline" in out
    run_a, run_b = demo_result["runs"]
    plot, csv = tmp_path / "cmp.png", tmp_path / "cmp.csv"
    assert cli_main(["compare", store, run_a, run_b, "--method", "cam", "--plot", str(plot), "--csv", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "ALL" in out and "changed most" in out and plot.is_file()
    per_image = pd.read_csv(csv)
    assert len(per_image) == len(pd.read_csv(work / "valid.csv"))
    assert cli_main(["compare", store, run_a, run_a]) == 2
    assert "same run" in capsys.readouterr().err
    assert cli_main(["evaluate", store, "--boxes", str(tmp_path / "none.csv")]) == 2
    # the evaluation job from the command line, on a copy (the demo's own scores stay as they are)
    import shutil

    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    checkpoint = demo_result["checkpoints"][0]
    table = tmp_path / "quality.csv"
    argv = ["evaluate", str(copy), "--run", run_a, "--checkpoint", checkpoint, "--metrics", "deletion,insertion"]
    argv += ["--steps", "2", "--sample", "3", "--force", "--no-progress", "--csv", str(table)]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert "3 scored now" in out and "deletion_beats_random" in out and "map - random" in out
    assert set(pd.read_csv(table)["metric"]) == {"deletion_auc", "insertion_auc"}
    metrics_dir = copy / "runs" / run_a / "metrics"
    assert (metrics_dir / "_summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # pandas reads the scores without densecam: the settings and summary files beside the parts are skipped
    plain = pd.read_parquet(metrics_dir)
    assert len(plain) == len(open_store(str(copy)).run(run_a).metrics()) and plain["image_id"].nunique() == 3
    assert cli_main([*argv[:-4], "--checkpoint", demo_result["checkpoints"][1]]) == 2
    assert "but run" in capsys.readouterr().err


def test_demo_is_deterministic_for_a_seed(demo_result, tmp_path):
    """Data, weights, run ids, maps and their pointing game again; the rerun skips the map-quality scoring,
    whose determinism the evaluation job's resumed-equals-clean test holds (tests/jobs/test_evaluation_job.py)."""
    from jobs.demo import run_demo
    from jobs.demo_config import DemoConfig

    config = DemoConfig(**{**demo_result["config"], "overlays": 0, "sheet_images": 1, "evaluate_images": 0})
    again = run_demo(tmp_path, config)
    assert again["runs"] == demo_result["runs"], "same data, same weights, same settings -> same run ids"
    assert again["pointing_game"] == demo_result["pointing_game"]
    pd.testing.assert_frame_equal(pd.DataFrame(again["changes"]), pd.DataFrame(demo_result["changes"]))
    np.testing.assert_equal(again["study_auroc"], demo_result["study_auroc"])
    assert again["quality"] is None
