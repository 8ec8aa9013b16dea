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


def test_a_planted_text_token_is_named_and_changes_nothing_else(tmp_path: Path):
    from densecam_core.data.shortcuts import Shortcut

    shortcut = Shortcut.parse("text:0.7:0.5")
    generate_mura(tmp_path / "plain", images=60, seed=3, min_side=64, max_side=96, rgb_fraction=0.0)
    summary = generate_mura(
        tmp_path / "token", images=60, seed=3, min_side=64, max_side=96, rgb_fraction=0.0, shortcut=shortcut
    )
    planted = pd.read_csv(tmp_path / "token" / "shortcuts.csv")
    frame = read_manifest(tmp_path / "token").set_index("image_id")
    assert len(planted) == summary.shortcuts > 0 and (planted["artefact"] == "text:PORTABLE").all()
    assert (frame.loc[planted["image_id"], "label"] == 1).all(), "only abnormal images carry it"
    abnormal = int((frame["label"] == 1).sum())
    assert 0.4 * abnormal <= len(planted) <= abnormal  # about 70 % of them
    for image_id in frame.index:
        plain = np.asarray(Image.open(tmp_path / "plain" / image_id), dtype=np.int16)
        token = np.asarray(Image.open(tmp_path / "token" / image_id), dtype=np.int16)
        row = planted[planted["image_id"] == image_id]
        if row.empty:
            assert (plain == token).all(), f"{image_id} carries no token: drawn exactly as without --shortcut"
            continue
        x0, y0, x1, y1 = row[["x0", "y0", "x1", "y1"]].iloc[0]
        assert x0 <= 0.1 * token.shape[1] and y0 <= 0.1 * token.shape[0], "in the top-left corner"
        assert 0.4 <= (x1 - x0) / token.shape[1] <= 0.6, "half the image wide"
        outside = np.ones(token.shape, bool)
        outside[max(0, y0 - 3) : y1 + 3, max(0, x0 - 3) : x1 + 3] = False
        assert (plain[outside] == token[outside]).all(), "nothing outside the token's box changes"
        assert np.abs(plain[y0:y1, x0:x1] - token[y0:y1, x0:x1]).mean() > 10, "the token is visible"


def test_a_bad_shortcut_is_refused_with_the_form_it_takes():
    import pytest

    from densecam_core.data.shortcuts import Shortcut

    for text, message in [
        ("box:0.3", "text:FRACTION"),
        ("text:1.5", "must be in \\(0, 1\\]"),
        ("text:0.3:0.95", "width must be 0.1 to 0.9"),
        ("text:0.3:0.5:middle", "corner must be one of"),
        ("text:a", "are numbers"),
    ]:
        with pytest.raises(ValueError, match=message):
            Shortcut.parse(text)


def test_lesion_masks_are_the_outlines_inside_their_boxes(tmp_path):
    import numpy as np
    import pandas as pd
    from PIL import Image

    from densecam_core import generate_mura

    generate_mura(tmp_path, images=30, seed=2, min_side=64, max_side=128, lesion_masks=True)
    boxes = pd.read_csv(tmp_path / "lesion_boxes.csv")
    assert len(boxes) >= 5
    for row in boxes.itertuples():
        mask = np.asarray(Image.open(tmp_path / "lesion_masks" / f"{row.image_id}.png")) > 0
        assert mask.shape == np.asarray(Image.open(tmp_path / row.image_id)).shape[:2]
        ys, xs = np.nonzero(mask)
        assert (
            mask.any() and row.x0 <= xs.min() and xs.max() < row.x1 + 1 and row.y0 <= ys.min() and ys.max() < row.y1 + 1
        )
