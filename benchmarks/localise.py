"""``densecam localise`` at dataset scale: time and peak memory of the whole command (scoring CAM and the
baseline, choosing thresholds, 1,000 bootstrap replicates, the COCO and CheXlocalize exports) as the run grows.
The maps are written straight into a store (no model): a Gaussian bump per image near its lesion box.

    python benchmarks/localise.py                         # 10,000 and 40,000 images
    python benchmarks/localise.py --sizes 2000,8000       # quick

Each size runs in a fresh process (``densecam localise``; peak resident memory is that process's, the scoring
workers' own peaks beside it); the time of the command alone (the store written beforehand, untimed).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from machine import describe_cpu  # benchmarks/machine.py

SIZE = 192  # block 4 is 6x6
STUDY_IMAGES = 3  # images per study, as MURA's


def write_store(store: str, n: int, seed: int = 0) -> tuple[str, pd.DataFrame]:
    """A committed run of ``n`` constructed images and their boxes; returns its id and the boxes."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from support.audit_maps import bumps_near, write_constructed_run  # tests/support

    rng = np.random.default_rng(seed)
    where = rng.uniform(0.25, 0.75, size=(n, 2))

    def arrays_for(numbers: np.ndarray, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        return {name: bumps_near(where[numbers], *shape[-2:])[:, None] for name, shape in shapes.items()}

    run = write_constructed_run(
        store,
        np.ones(n, dtype=int),
        arrays_for,
        size=SIZE,
        fingerprint="f" * 64,
        probs=rng.uniform(0.05, 0.95, n),
        body_parts=["WRIST"] * n,
        shard_size=1024,
        studies=np.arange(n) // STUDY_IMAGES,
    )
    ids = run.index.sort_values("row")["image_id"].to_numpy()
    half = 0.1 * SIZE
    boxes = pd.DataFrame(
        {
            "image_id": ids,
            "x0": where[:, 1] * SIZE - half,
            "y0": where[:, 0] * SIZE - half,
            "x1": where[:, 1] * SIZE + half,
            "y1": where[:, 0] * SIZE + half,
        }
    )
    return run.run_id, boxes


def measure(n: int, workers: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        store = str(Path(folder) / "store")
        run_id, boxes = write_store(store, n)
        boxes.to_csv(Path(folder) / "boxes.csv", index=False)
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        started = time.perf_counter()
        done = subprocess.run(
            ["densecam", "localise", store, "--run", run_id, "--boxes", str(Path(folder) / "boxes.csv"), "--out",
             str(Path(folder) / "out"), "--methods", "cam", "--workers", str(workers)],
            capture_output=True, text=True,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            sys.exit(done.stderr[-2000:])
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        coco = (Path(folder) / "out" / "coco.json").stat().st_size
    return {"images": n, "seconds": seconds, "peak_mb": max(peak, before) / 1024, "coco_mb": coco / 2**20}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,40000")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(describe_cpu())
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        row = measure(n, args.workers)
        rows.append(row)
        print(
            f"{n:>7} images: {row['seconds']:7.1f} s ({n / row['seconds']:6.0f} images/s), "
            f"largest process {row['peak_mb']:6.0f} MB, coco.json {row['coco_mb']:.1f} MB"
        )
    first = rows[0]
    for row in rows[1:]:
        print(
            f"{row['images'] / first['images']:.0f}x the images: {row['seconds'] / first['seconds']:.2f}x the time, "
            f"{row['peak_mb'] / first['peak_mb']:.2f}x the peak memory"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
