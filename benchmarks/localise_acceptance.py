"""Weak labels on trained models, per training seed (the medians decide):

    python benchmarks/localise_acceptance.py --seeds 0,1,2 --work /tmp/localise-acceptance

Per seed: two synthetic trees with known lesion boxes, lesion scale 3 and lesion scale 1 (lesions smaller than
one block-4 cell at 192 px); a DenseNet121 trained on each (`densecam train`, 192 px, 3 epochs) and a DenseNet121
with random weights; each model's maps of its tree (`densecam explain`, Grad-CAM besides CAM), then
`densecam localise` with a 20 % calibration split and the lesions' outlines as true masks (PxAP, mIoU). Then, for CAM at block 4:

* the calibrated threshold gives box accuracy (IoU 0.5) on the reported images within 0.05 of the best threshold's;
* scale 3 beats the centred-box baseline's MaxBoxAccV2 by >= 0.2;
* MaxBoxAcc at IoU 0.7 drops by >= 0.2 from scale 3 to scale 1;
* the random-weights model scores MaxBoxAccV2 <= the baseline's + 0.05.

Prints every seed and the medians, and the table of every map at scale 3; exits 1 when a median misses.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
from machine import describe_cpu  # benchmarks/machine.py

SIZE, EPOCHS, IMAGES = 192, 3, 900


def sh(*args: str) -> str:
    done = subprocess.run(["densecam", *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"densecam {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def random_checkpoint(path: Path, seed: int) -> None:
    import torch

    from densecam_core.model.checkpoint import load_densenet

    torch.save(load_densenet(None, 1, architecture="densenet121", seed=seed).state_dict(), path)


def metrics(work: Path, seed: int, tree: str, model: str) -> pd.DataFrame:
    """The localise table of ``model``'s maps of ``tree`` (each step skipped when its output exists)."""
    root = work / tree
    if not (root / "lesion_masks").exists():
        made = work / f"{tree}-making"  # the same seed draws the same tree: masks for a tree drawn before them
        sh("synth", str(made), "--images", str(IMAGES), "--seed", "0", "--min-side", "160", "--max-side", "256",
           "--lesion-scale", tree.removeprefix("scale"), "--lesion-masks")  # fmt: skip
        if (root / "MURA-v1.1").exists():
            (made / "lesion_masks").rename(root / "lesion_masks")
            shutil.rmtree(made)
        else:
            made.rename(root)
    checkpoint = work / f"{model}{seed}.pt"
    if not checkpoint.exists():
        if model == "random":
            random_checkpoint(checkpoint, seed)
        else:
            sh("train", str(root / "MURA-v1.1"), "--out", str(checkpoint), "--size", str(SIZE), "--epochs",
               str(EPOCHS), "--arch", "densenet121", "--seed", str(seed), "--no-progress")  # fmt: skip
    store, summary = work / f"store-{model}{seed}", work / f"{model}{seed}.summary.json"
    if not summary.exists():
        sh("explain", str(root / "MURA-v1.1"), "--checkpoint", str(checkpoint), "--store", str(store), "--size",
           str(SIZE), "--methods", "gradcam", "--no-progress", "--summary-json", str(summary))  # fmt: skip
    out = work / f"localise-{model}{seed}"
    if not (out / "metrics.csv").exists():
        run_id = json.loads(summary.read_text())["run_id"]
        print(sh("localise", str(store), "--run", run_id, "--boxes", str(root / "lesion_boxes.csv"), "--masks",
                 str(root / "lesion_masks"), "--out", str(out), "--seed", str(seed), "--workers", "2",
                 "--overwrite"))  # fmt: skip
    return pd.read_csv(out / "metrics.csv")


def cam4(table: pd.DataFrame) -> pd.Series:
    return table[(table["method"] == "cam") & (table["block"] == 4)].iloc[0]


def figures(work: Path, seed: int) -> dict[str, float]:
    big, small = metrics(work, seed, "scale3", "scale3"), metrics(work, seed, "scale1", "scale1")
    random = metrics(work, seed, "scale3", "random")
    print(big.to_string(index=False, float_format=lambda v: f"{v:.3f}", columns=[
        "method", "block", "tau", "box_acc_50", "maxboxacc_50", "maxboxacc_70", "maxboxacc_v2", "pxap", "miou",
        "hit_rate", "oracle_gap", "maxboxacc_v2_low", "maxboxacc_v2_high"]))  # fmt: skip
    b, s, r = cam4(big), cam4(small), cam4(random)
    return {
        "oracle_gap_scale3": float(b["oracle_gap"]),
        "cam4_over_baseline": float(b["maxboxacc_v2"] - b["baseline_maxboxacc_v2"]),
        "drop_at_iou_0.7": float(b["maxboxacc_70"] - s["maxboxacc_70"]),
        "random_over_baseline": float(r["maxboxacc_v2"] - r["baseline_maxboxacc_v2"]),
        "cam4_maxboxacc_v2_scale3": float(b["maxboxacc_v2"]),
        "cam4_maxboxacc_v2_scale1": float(s["maxboxacc_v2"]),
        "cam4_box_acc_50_scale3": float(b["box_acc_50"]),
        "baseline_maxboxacc_v2": float(b["baseline_maxboxacc_v2"]),
    }


BOUNDS = {
    "oracle_gap_scale3": ("<=", 0.05),
    "cam4_over_baseline": (">=", 0.2),
    "drop_at_iou_0.7": (">=", 0.2),
    "random_over_baseline": ("<=", 0.05),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--work", default="localise-acceptance")
    args = parser.parse_args()
    print(describe_cpu())
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    per_seed = []
    for seed in (int(s) for s in args.seeds.split(",")):
        found = figures(work, seed)
        print(f"seed {seed}: " + json.dumps({k: round(v, 3) for k, v in found.items()}))
        per_seed.append(found)
    failed = []
    for name, (op, bound) in BOUNDS.items():
        median = statistics.median(f[name] for f in per_seed)
        ok = median <= bound if op == "<=" else median >= bound
        print(f"{name:<24} median {median:7.3f} {op} {bound}: {'ok' if ok else 'MISSED'}   "
              f"seeds {[round(f[name], 3) for f in per_seed]}")  # fmt: skip
        failed += [] if ok else [name]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
