"""A store the job wrote, read in fresh processes: by pyarrow/pandas, xarray and DuckDB without densecam,
and through densecam's whole reader API without torch or Ray being imported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from densecam_core import generate_mura, load_densenet169, open_store

pytestmark = pytest.mark.slow  # the job runs on a local Ray

REPO = Path(__file__).resolve().parents[2]
METHODS = ("gradcam", "hirescam")


@pytest.fixture(scope="module")
def job_store(tmp_path_factory) -> dict:
    """Two runs (two checkpoints) of the Ray job over a small synthetic tree."""
    ray = pytest.importorskip("ray")
    from jobs.explain.job import ExplainConfig, run_explain

    root = tmp_path_factory.mktemp("readers")
    generate_mura(root / "tree", images=12, seed=4, min_side=48, max_side=96)
    checkpoint = root / "other.pt"
    torch.save(load_densenet169(seed=3).state_dict(), checkpoint)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        runs = [
            run_explain(
                ExplainConfig(
                    manifest=str(root / "tree"),
                    store=str(root / "store"),
                    size=64,
                    batch_size=4,
                    shard_size=4,
                    workers=1,
                    methods=METHODS,
                    progress=False,
                    checkpoint=ckpt,
                )
            ).run_id
            for ckpt in (None, str(checkpoint))
        ]
    finally:
        ray.shutdown()
    return {"store": root / "store", "runs": runs, "boxes": root / "tree" / "lesion_boxes.csv"}


def run_alone(code: str) -> dict:
    """Run ``code`` in a fresh interpreter (no densecam on its path); it prints one JSON object last."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300, cwd="/"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_pyarrow_and_pandas_read_the_index_without_densecam(job_store):
    run_dir = job_store["store"] / "runs" / job_store["runs"][0]
    out = run_alone(f"""
        import json, sys
        import pyarrow.dataset as ds
        import pandas as pd
        dataset = ds.dataset("{run_dir}/index", format="parquet")
        wrists = dataset.to_table(filter=ds.field("status") == "ok").to_pandas()
        frame = pd.read_parquet("{run_dir}/index")
        print(json.dumps({{"ok": len(wrists), "rows": len(frame), "mean_prob": float(frame["prob"].mean()),
                           "densecam": "densecam_core" in sys.modules}}))
    """)
    index = open_store(str(job_store["store"])).run(job_store["runs"][0]).index
    assert out == {
        "ok": int((index["status"] == "ok").sum()),
        "rows": len(index),
        "mean_prob": pytest.approx(float(index["prob"].mean()), rel=1e-6),
        "densecam": False,
    }


def test_xarray_opens_every_group_without_densecam(job_store):
    run = open_store(str(job_store["store"])).run(job_store["runs"][0])
    zarr_dir = job_store["store"] / "runs" / run.run_id / "heatmaps.zarr"
    out = run_alone(f"""
        import json, sys
        import xarray as xr
        found = {{}}
        for group in (None, *{list(METHODS)!r}):
            ds = xr.open_zarr("{zarr_dir}", group=group, chunks=None)
            found[group or "/"] = {{name: [list(v.dims), float(v[:4].astype("float64").sum())] for name, v in ds.data_vars.items()}}
        print(json.dumps({{"groups": found, "densecam": "densecam_core" in sys.modules}}))
    """)
    assert not out["densecam"]
    groups = out["groups"]
    assert groups["/"]["cam"][0] == ["image", "target", "y_b4", "x_b4"]
    assert groups["/"]["logits"][0] == ["image", "class"] and groups["/"]["targets"][0] == ["image", "target"]
    for method in METHODS:
        for block in (1, 2, 3, 4):
            dims, total = groups[method][f"block{block}"]
            assert dims == ["image", "target", f"y_b{block}", f"x_b{block}"]
            assert total == pytest.approx(float(np.nansum(run.maps(method, block, rows=[0, 1, 2, 3]))), rel=1e-5)


def test_duckdb_queries_every_runs_index_as_one_table(job_store):
    store = job_store["store"]
    out = run_alone(f"""
        import json, sys
        import duckdb
        rows = duckdb.sql(
            "SELECT run_id, body_part, avg(prob) AS mean_prob, count(*) AS images "
            "FROM read_parquet('{store}/runs/*/index/*.parquet', union_by_name = true) "
            "WHERE status = 'ok' GROUP BY run_id, body_part ORDER BY run_id, body_part").fetchall()
        print(json.dumps({{"rows": rows, "densecam": "densecam_core" in sys.modules}}))
    """)
    frames = [open_store(str(store)).run(r).index for r in job_store["runs"]]
    expected = (
        pd.concat(frames)
        .query("status == 'ok'")
        .groupby(["run_id", "body_part"])["prob"]
        .agg(["mean", "count"])
        .reset_index()
    )
    assert not out["densecam"] and len(out["rows"]) == len(expected)
    for (run_id, part, mean, count), (_, want) in zip(out["rows"], expected.iterrows()):
        assert (run_id, part, count) == (want["run_id"], want["body_part"], want["count"])
        assert mean == pytest.approx(want["mean"], rel=1e-6)


def test_the_whole_reader_api_runs_without_torch_or_ray(job_store, tmp_path):
    store, (first, second) = job_store["store"], job_store["runs"]
    out = run_alone(f"""
        import json, sys
        sys.path.insert(0, "{REPO}")
        from densecam_core import open_store, compare_runs, pointing_game
        from densecam_core.analysis.comparison_summary import summarise_changes, most_changed
        from densecam_core.analysis.figures import image_panel, contact_sheet
        store = open_store("{store}")
        listing = store.runs
        run = store.run("{first}")
        ok = run.read_index(filters=[("status", "=", "ok")])
        ids = ok["image_id"].tolist()
        maps = run.maps("gradcam", 2, image_ids=ids[:3])
        heat = run.heatmap(ids[0], method="hirescam", block=3)
        rgb = run.overlay(ids[0], method="gradcam", block=4)
        values = run.to_xarray(methods=["gradcam"])["gradcam_block1"].values
        changes = compare_runs(run, store.run("{second}"), "gradcam", 4)
        summary = summarise_changes(changes)
        table = pointing_game(run, "{job_store["boxes"]}")
        image_panel(run, ids[0], "{tmp_path}/panel.png")
        contact_sheet(run, ids[:4], "{tmp_path}/sheet.png", method="cam")
        print(json.dumps({{"runs": len(listing), "maps": list(maps.shape), "heat": bool(0 <= heat.min()),
                           "rgb": list(rgb.shape[2:]), "xarray": list(values.shape), "changes": len(changes),
                           "torch": "torch" in sys.modules, "ray": "ray" in sys.modules}}))
    """)
    assert out["runs"] == 2 and out["maps"][0] == 3 and out["rgb"] == [3] and out["changes"] > 0
    assert out["torch"] is False and out["ray"] is False
    assert (tmp_path / "panel.png").stat().st_size > 0


def test_the_command_without_the_job_extra_names_the_extra(tmp_path):
    """A reader-only install: torch cannot be imported; `densecam explain` says which extra to install."""
    blocker = tmp_path / "block" / "sitecustomize.py"
    blocker.parent.mkdir()
    blocker.write_text(
        textwrap.dedent("""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "torchvision", "ray"):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        sys.meta_path.insert(0, Block())
    """)
    )
    env = {"PYTHONPATH": f"{blocker.parent}:{REPO}", "PATH": "/usr/bin:/bin"}

    def densecam(*argv: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "jobs.cli.main", *argv]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)

    helped = densecam("explain", "--help")  # the parser comes from the torch-free config: help works
    assert helped.returncode == 0 and "--input-norm" in helped.stdout, helped.stderr
    result = densecam("explain", "--store", str(tmp_path / "store"))
    assert result.returncode == 2, result.stderr
    assert "pip install 'densecam[job]'" in result.stderr and "Traceback" not in result.stderr
