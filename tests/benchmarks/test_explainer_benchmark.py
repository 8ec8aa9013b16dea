"""The explainer benchmark still runs end to end, and its noise floor is the size it claims."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from densecam_core.data.preprocess import IMAGENET_STD
from densecam_core.data.synth import generate_mura

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from explainer import half_grey_level_jitter  # noqa: E402


def test_jitter_is_at_most_half_a_grey_level_per_channel():
    x = torch.zeros(2, 3, 16, 16)
    grey_levels = (half_grey_level_jitter(x) - x) * torch.from_numpy(IMAGENET_STD).view(1, 3, 1, 1) * 255.0
    assert grey_levels.abs().max() <= 0.5 + 1e-5
    assert grey_levels.abs().max() > 0.4  # uniform over +-0.5, not a no-op
    assert torch.equal(half_grey_level_jitter(x), half_grey_level_jitter(x))


@pytest.mark.slow
def test_benchmark_runs_on_a_folder_of_images(tmp_path):
    generate_mura(tmp_path / "tree", images=6, seed=0, min_side=48, max_side=64)
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/explainer.py",
            "--size",
            "64",
            "--batch",
            "2",
            "--rounds",
            "1",
            "--warmup",
            "1",
            "--skip-gradcam-lib",
            "--images",
            str(tmp_path / "tree"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    names = [row.split("|")[1].strip() for row in rows]
    assert "Explainer, all methods, fp32" in names and "Explainer, all methods, bf16" in names
    agreement = {row.split("|")[1].strip(): row for row in rows if "/block" in row or row.startswith("| cam ")}
    assert len(agreement) == 1 + 5 * 4
    r_cam = float(agreement["cam"].split("|")[2])
    assert np.isfinite(r_cam) and r_cam > 0.9
