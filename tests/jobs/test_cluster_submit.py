"""The cluster path: a started head and `ray job submit`, with no other Ray of this process beside it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import REPO
from support.runs import assert_every_row_once

from densecam_core import generate_mura

SIZE = 64

pytestmark = pytest.mark.slow  # Ray, the demo or a notebook kernel: see `pytest -m "not slow"`


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mura-submit")
    generate_mura(root, images=10, seed=6, min_side=48, max_side=96)
    return root


def test_ray_job_submit_to_a_started_head(tree, tmp_path):
    """The cluster path: `ray start --head`, then `ray job submit -- python -m jobs.cli.explain ...`."""
    ray_bin = Path(sys.executable).with_name("ray")
    ray = pytest.importorskip("ray")
    if ray.is_initialized():  # another module's Ray would be joined instead of the head
        ray.shutdown()
    assert ray_bin.exists(), "the ray CLI comes with ray[default]: run bash tests/setup.sh"
    # Ray 2.60 enables token authentication: the head writes ~/.ray/auth_token, the CLI sends it
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "token"
    started = subprocess.run(
        [
            str(ray_bin),
            "start",
            "--head",
            "--num-cpus",
            "2",
            "--port",
            "6391",
            "--dashboard-port",
            "8299",
            "--include-dashboard",
            "true",
            "--disable-usage-stats",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        store = tmp_path / "submitted"
        command = [
            str(ray_bin),
            "job",
            "submit",
            "--address",
            "http://127.0.0.1:8299",
            "--working-dir",
            str(REPO),
            "--",
            "python",
            "-m",
            "jobs.cli.explain",
            str(tree),
            "--store",
            str(store),
            "--size",
            str(SIZE),
            "--batch-size",
            "4",
            "--shard-size",
            "8",
            "--workers",
            "1",
            "--cpus-per-worker",
            "1",
            "--methods",
            "gradcam",
            "--no-progress",
        ]
        for _ in range(30):  # the head's job agent comes up a few seconds after `ray start` returns
            submitted = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
            if "No available agent" not in submitted.stdout + submitted.stderr:
                break
            time.sleep(2)
        assert submitted.returncode == 0, (submitted.stdout + submitted.stderr)[-3000:]
        assert "succeeded" in submitted.stdout.lower()
        assert_every_row_once(store, tree)
    finally:
        subprocess.run([str(ray_bin), "stop", "--force"], env=env, capture_output=True, timeout=120)
