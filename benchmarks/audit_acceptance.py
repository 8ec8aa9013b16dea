"""The audit's acceptance on a planted shortcut, per training seed (the medians decide):

    python benchmarks/audit_acceptance.py --seeds 0,1,2 --work /tmp/audit-acceptance

For each seed: a synthetic tree with a mid-grey PORTABLE token in a share of its abnormal images, and the same
tree without it; a DenseNet121 trained on each (densecam's recipe: 128 px, 3 epochs); both explained over the
token tree. Then:

* artefact valid: the token pasted onto the normal images moves the control model's logit by <= 2.5;
* learned: it moves the token model's by >= 4, and ``--confirm`` gives the flagged cluster an interval above 0;
* found: the images flagged at block 2 (the finest grid the rule flags at 128 px after block 1: blocks 3 and 4 are
  4x4 there, too coarse, and the audit says so) have precision and recall >= 0.8 for the token-bearing abnormal
  images; corner-mass AUROC (token-bearing vs other abnormal images) >= 0.95;
* no false alarm: the control model's audit flags <= 5 % of images at every map, and an audit of the clean
  tree's run flags no cluster.

Prints every seed and the medians; exits 1 when a median misses its bound. CPU kind printed beside the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from machine import describe_cpu  # benchmarks/machine.py

SIZE, EPOCHS, IMAGES = 128, 3, 900
SHORTCUT = "text:0.7:0.5"


def sh(*args: str) -> str:
    done = subprocess.run(["densecam", *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"densecam {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def prepare(work: Path, seed: int) -> dict[str, str]:
    """Trees, models, runs (each step skipped when its output exists)."""
    work.mkdir(parents=True, exist_ok=True)
    for name, extra in (("token", ["--shortcut", SHORTCUT]), ("clean", [])):
        if not (work / name / "MURA-v1.1").exists():
            sh("synth", str(work / name), "--images", str(IMAGES), "--seed", "0", "--min-side", "128",
               "--max-side", "192", "--lesion-scale", "3", *extra)  # fmt: skip
    for name in ("token", "clean"):
        checkpoint = work / f"{name}{seed}.pt"
        if not checkpoint.exists():
            sh("train", str(work / name / "MURA-v1.1"), "--out", str(checkpoint), "--size", str(SIZE),
               "--epochs", str(EPOCHS), "--arch", "densenet121", "--seed", str(seed), "--no-progress")  # fmt: skip
    runs = {}
    for model, tree in (("token", "token"), ("clean", "token"), ("clean_on_clean", "clean")):
        checkpoint = work / f"{model.split('_')[0]}{seed}.pt"
        store = work / (
            f"store{seed}" if tree == "token" else f"store{seed}-clean"
        )  # one run id per model: a store per tree
        summary = work / f"{model}{seed}.summary.json"
        if not summary.exists():
            sh("explain", str(work / tree / "MURA-v1.1"), "--checkpoint", str(checkpoint), "--store", str(store),
               "--size", str(SIZE), "--methods", "gradcam", "--no-progress", "--summary-json", str(summary))  # fmt: skip
        runs[model] = json.loads(summary.read_text())["run_id"]
    return runs


def paste_token(work: Path, seed: int) -> dict[str, float]:
    """Mean logit change of each model when each token (its own box, model-input pixels) is pasted onto normal
    images at the same place; the token's pixels come from the token tree's images."""
    import torch

    from densecam_core import read_manifest
    from densecam_core.data.preprocess import load_model_input
    from densecam_core.model.checkpoint import load_densenet
    from densecam_core.model.conventions import imagenet_statistics, pixels_to_input

    tree = work / "token" / "MURA-v1.1"
    planted = pd.read_csv(work / "token" / "shortcuts.csv")
    manifest = read_manifest(tree).set_index("image_id")
    normals = manifest[manifest["label"] == 0].sample(64, random_state=seed)
    donors = planted.sample(64, replace=True, random_state=seed).reset_index(drop=True)
    originals, pasted = [], []
    for (_, normal), (_, donor) in zip(normals.iterrows(), donors.iterrows()):
        recipient = load_model_input(str(normal["path"]), SIZE).pixels
        source_input = load_model_input(str(manifest.loc[donor["image_id"], "path"]), SIZE)
        g = source_input.geometry
        sy, sx = SIZE / g.orig_height, SIZE / g.orig_width
        y0, y1 = int(donor["y0"] * sy), int(np.ceil(donor["y1"] * sy))
        x0, x1 = int(donor["x0"] * sx), int(np.ceil(donor["x1"] * sx))
        both = recipient.copy()
        both[:, y0:y1, x0:x1] = source_input.pixels[: both.shape[0], y0:y1, x0:x1]
        originals.append(np.broadcast_to(recipient, (3, SIZE, SIZE)))
        pasted.append(np.broadcast_to(both, (3, SIZE, SIZE)))
    out = {}
    for name in ("token", "clean"):
        model = load_densenet(str(work / f"{name}{seed}.pt"))
        stats = imagenet_statistics("cpu")

        def logits(batch: list[np.ndarray]) -> np.ndarray:
            x = torch.from_numpy(np.stack(batch).astype(np.float32) / 255.0)
            with torch.inference_mode():
                return model(pixels_to_input(x, 3, "imagenet", stats))[:, 0].numpy()  # noqa: B023

        out[name] = float((logits(pasted) - logits(originals)).mean())
    return out


def audit_figures(work: Path, seed: int, runs: dict[str, str]) -> dict[str, float]:
    from densecam_core import open_store
    from densecam_core.analysis.flagging import auroc

    figures: dict[str, float] = {}
    planted = set(pd.read_csv(work / "token" / "shortcuts.csv")["image_id"])
    for name, run_id in runs.items():
        store = str(work / (f"store{seed}-clean" if name == "clean_on_clean" else f"store{seed}"))
        started = time.perf_counter()
        extra = ["--confirm", "--checkpoint", str(work / f"token{seed}.pt")] if name == "token" else []
        print(sh("audit", store, "--run", run_id, "--methods", "gradcam", *extra))
        figures[f"{name}_audit_seconds"] = time.perf_counter() - started
        audit = open_store(store).run(run_id).audit()
        images = audit.images
        per_map = images.groupby(["method", "block"])["flagged"].mean()
        figures[f"{name}_max_flagged_share"] = float(per_map.max())
        figures[f"{name}_flagged_clusters"] = int(audit.clusters["flagged"].sum())
        if name != "token":
            continue
        for block in (1, 2, 3):
            abnormal = images[(images["label"] == 1) & (images["block"] == block)]
            truth = abnormal["image_id"].isin(planted)
            flagged = abnormal["flagged"]
            figures[f"precision_block{block}"] = float((flagged & truth).sum() / max(1, flagged.sum()))
            figures[f"recall_block{block}"] = float((flagged & truth).sum() / max(1, truth.sum()))
            figures[f"corner_auroc_block{block}"] = auroc(truth.to_numpy(float), abnormal["corner_mass"].to_numpy())
        confirmations = audit.confirmations
        # nothing flagged, nothing confirmed: below any bound (a NaN would make the median meaningless)
        figures["confirmed_low"] = float(confirmations["low"].max()) if len(confirmations) else float("-inf")
    return figures


BOUNDS = {
    "paste_clean": ("<=", 2.5),
    "paste_token": (">=", 4.0),
    "confirmed_low": (">", 0.0),
    "precision_block2": (">=", 0.8),
    "recall_block2": (">=", 0.8),
    "corner_auroc_block2": (">=", 0.95),
    "clean_max_flagged_share": ("<=", 0.05),
    "clean_on_clean_flagged_clusters": ("<=", 0),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--work", default="audit-acceptance")
    args = parser.parse_args()
    print(describe_cpu())
    per_seed = []
    for seed in (int(s) for s in args.seeds.split(",")):
        work = Path(args.work)
        runs = prepare(work, seed)
        figures = {f"paste_{k}": v for k, v in paste_token(work, seed).items()} | audit_figures(work, seed, runs)
        print(f"seed {seed}: " + json.dumps({k: round(v, 3) for k, v in figures.items()}))
        per_seed.append(figures)
    failed = []
    for name, (op, bound) in BOUNDS.items():
        median = statistics.median(f[name] for f in per_seed)
        ok = {"<=": median <= bound, ">=": median >= bound, ">": median > bound}[op]
        print(
            f"{name:<34} median {median:8.3f} {op} {bound}: {'ok' if ok else 'MISSED'}   seeds {[round(f[name], 3) for f in per_seed]}"
        )
        failed += [] if ok else [name]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
