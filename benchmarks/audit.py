"""The audit at dataset scale: time and peak memory of ``audit_run`` over one map, as the run grows, and
``Run.similar`` against a run of 40,000 images. The maps are written straight into a store (no model):
Gaussian bumps at random places, a planted 5 % whose maps sit in a corner.

    python benchmarks/audit.py                          # 10,000 / 40,000 / 100,000 images, gradcam block 3
    python benchmarks/audit.py --sizes 2000,8000        # quick

Each size is audited in a fresh process (peak resident memory is that process's); the time of the audit alone
(the store written beforehand, untimed) is compared with n log n from the smallest size. MURA's groups: two
labels x seven body parts.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import describe_cpu  # benchmarks/machine.py

SIZE = 320  # block 3 is 10x10, block 1 40x40 (pooled to 16x16)
BODY_PARTS = ("ELBOW", "FINGER", "FOREARM", "HAND", "HUMERUS", "SHOULDER", "WRIST")


def bumps(rng: np.random.Generator, n: int, h: int, w: int, corner: np.ndarray) -> np.ndarray:
    yy, xx = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
    cy = np.where(corner, 0.1, rng.uniform(0.25, 0.75, n))[:, None, None]
    cx = np.where(corner, 0.1, rng.uniform(0.25, 0.75, n))[:, None, None]
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 0.12**2)).astype(np.float32)


def write_store(store: str, n: int, seed: int = 0) -> str:
    """A committed run of ``n`` constructed images (cam and gradcam at every block); returns its id."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from support.audit_maps import write_constructed_run  # tests/support: the audit tests' runs, at scale

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    corner = (labels == 1) & (rng.random(n) < 0.1)

    def arrays_for(numbers: np.ndarray, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        return {name: bumps(rng, len(numbers), *shape[-2:], corner[numbers])[:, None] for name, shape in shapes.items()}

    run = write_constructed_run(
        store,
        labels,
        arrays_for,
        size=SIZE,
        fingerprint="e" * 64,
        probs=rng.uniform(0.05, 0.95, n),
        body_parts=rng.choice(BODY_PARTS, n),
        shard_size=1024,
    )
    return run.run_id


def audit_once(store: str, run_id: str) -> dict[str, float]:
    """In this process: the audit of gradcam block 3 (written to the store, as the command does)."""
    from densecam_core import open_store
    from densecam_core.analysis.audit import AuditRequest, audit_run
    from densecam_core.store.analyses import write_audit

    run = open_store(store).run(run_id)
    started = time.perf_counter()
    result = audit_run(run, AuditRequest(methods=("gradcam",), blocks=(3,)))
    tables = {"images": result.images, "clusters": result.clusters, "atlases": result.atlases}
    write_audit(run.url, settings=result.settings, tables=tables, arrays=result.arrays, messages=result.messages)
    seconds = time.perf_counter() - started
    flagged = result.images["flagged"]
    return {
        "seconds": seconds,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "flagged_share": float(flagged.mean()),
    }


def similar_once(store: str, run_id: str) -> float:
    from densecam_core import open_store

    run = open_store(store).run(run_id)
    ids = run.index["image_id"].head(6).tolist()
    run.similar(ids[0], "gradcam", 3, k=10)  # the audit's vectors read once
    started = time.perf_counter()
    for image_id in ids[1:]:
        run.similar(image_id, "gradcam", 3, k=10)
    return (time.perf_counter() - started) / 5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,40000,100000")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(audit_once(*args.child) | {"similar_seconds": similar_once(*args.child)}))
        return 0
    print(describe_cpu())
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for n in sizes:
            store = str(Path(folder) / f"store{n}")
            tick = time.perf_counter()
            run_id = write_store(store, n)
            written = time.perf_counter() - tick
            out = subprocess.run(
                [sys.executable, __file__, "--child", store, run_id], capture_output=True, text=True, check=True
            )
            results[n] = json.loads(out.stdout.strip().splitlines()[-1])
            r = results[n]
            print(
                f"{n:>7} images: audit of gradcam block 3 {r['seconds']:7.1f} s, peak memory {r['peak_mb']:6.0f} MB, "
                f"{r['flagged_share']:.1%} flagged (10 % of abnormal planted); run.similar {r['similar_seconds'] * 1000:.0f} ms "
                f"(store written in {written:.0f} s, untimed)"
            )
    first = sizes[0]
    for n in sizes[1:]:
        growth = results[n]["seconds"] / results[first]["seconds"]
        nlogn = (n * np.log(n)) / (first * np.log(first))
        print(
            f"{first} -> {n}: time x{growth:.2f}, n log n x{nlogn:.2f}: {'within' if growth <= nlogn * 1.1 else 'ABOVE'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
