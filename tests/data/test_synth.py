"""The synthetic MURA tree: official layout, round trip through read_manifest, determinism."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from densecam_core import generate_mura, read_manifest
from densecam_core.data.manifest import BODY_PARTS


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def test_tree_round_trips_and_is_deterministic(tmp_path: Path):
    summary = generate_mura(tmp_path / "a", images=60, seed=3, min_side=48, max_side=96)
    frame = read_manifest(tmp_path / "a")
    assert len(frame) == summary.images == 60
    assert set(frame["split"]) == {"train", "valid"}
    assert set(frame["body_part"]) == set(BODY_PARTS)
    assert frame["label"].notna().all() and set(frame["label"]) == {0, 1}
    per_study = frame.groupby("study_id")["view"].agg(["count", "max"])
    assert per_study["count"].between(1, 5).all() and (per_study["count"] == per_study["max"]).all()
    studies_per_patient = frame.groupby(["split", "patient_id"])["study_id"].nunique()
    assert studies_per_patient.between(1, 4).all()
    assert (tmp_path / "a/MURA-v1.1/train_labeled_studies.csv").read_text().splitlines()[0].endswith(("/,0", "/,1"))
    modes = {Image.open(p).mode for p in frame["path"]}
    assert modes == {"L", "RGB"}
    sizes = [Image.open(p).size for p in frame["path"]]
    assert max(max(s) for s in sizes) <= 96 and len(set(sizes)) > 5
    boxes = pd.read_csv(tmp_path / "a/lesion_boxes.csv")
    assert len(boxes) == summary.lesions > 0
    labelled = frame.set_index("image_id").loc[boxes["image_id"]]
    assert (labelled["label"] == 1).all(), "lesions only in abnormal studies"
    for row in boxes.itertuples():
        pixels = np.asarray(Image.open(tmp_path / "a" / row.image_id).convert("L"), dtype=np.int32)
        assert 0 <= row.x0 < row.x1 <= pixels.shape[1] and 0 <= row.y0 < row.y1 <= pixels.shape[0]
        inside = pixels[row.y0 : row.y1, row.x0 : row.x1]
        assert inside.max() >= np.median(pixels) + 80, "a visible, bright lesion"
    generate_mura(tmp_path / "b", images=60, seed=3, min_side=48, max_side=96)
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    generate_mura(tmp_path / "c", images=60, seed=4, min_side=48, max_side=96)
    assert tree_digest(tmp_path / "a") != tree_digest(tmp_path / "c")
