"""Weak labels of a run explained from DICOM files as binary Segmentations: one per image, a segment per map,
frames equal to the masks computed, valid by the standard's validator (the NEMA chest CR with its zero
PixelSpacing included), referencing the source, and the same object for the same settings."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import data_store  # pydicom-data: the NEMA radiographs
import highdicom
import numpy as np
import pandas as pd
import pydicom
import pytest
from pycocotools import mask as coco_mask
from support.dicom_runs import explain
from support.system import require

from densecam_core import generate_mura, open_store
from densecam_core.data.pseudonyms import create_key
from densecam_core.export.run_export import file_stem
from jobs.cli.main import main

NEMA = Path(data_store.__file__).parent / "data"


@pytest.fixture(scope="module")
def dicom_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("weak")
    generate_mura(root / "mura", images=5, seed=4, min_side=48, max_side=96, dicom=True, rgb_fraction=0.0)
    sources = root / "sources"
    sources.mkdir()
    for number, path in enumerate(sorted((root / "mura").rglob("*.dcm"))):
        shutil.copy(path, sources / f"synthetic{number}.dcm")
    shutil.copy(NEMA / "RG1_UNCR.dcm", sources / "chest.dcm")  # PixelSpacing [0, 0]
    key = str(create_key(root / "group.key"))
    run_id = explain(sources, root / "store", key)
    run = open_store(str(root / "store")).run(run_id)
    ok = run.index[run.index["status"] == "ok"]
    boxes = pd.DataFrame(
        {
            "image_id": ok["image_id"],
            "x0": ok["orig_width"] * 0.25,
            "y0": ok["orig_height"] * 0.25,
            "x1": ok["orig_width"] * 0.75,
            "y1": ok["orig_height"] * 0.75,
        }
    )
    boxes.to_csv(root / "boxes.csv", index=False)
    (root / "calibration.txt").write_text("\n".join(ok["image_id"].iloc[:2]))
    return root, run, key


def localise(dicom_run, out: Path, *extra: str) -> int:
    root, run, key = dicom_run
    return main(["localise", run.store_url, "--boxes", str(root / "boxes.csv"), "--out", str(out), "--methods",
                 "cam,gradcam", "--blocks", "2,4", "--calibrate", str(root / "calibration.txt"), "--min-split-images",
                 "1", "--bootstrap", "0", "--pseudonym-key", key, *extra])  # fmt: skip


@pytest.mark.slow  # a real DICOM run
def test_each_image_gets_a_binary_segmentation_whose_frames_are_its_masks(dicom_run, tmp_path):
    _, run, _ = dicom_run
    out = tmp_path / "out"
    assert localise(dicom_run, out) == 0
    chex = {name: json.loads((out / "chexlocalize" / f"{name}.json").read_text())
            for name in ("cam_block4", "gradcam_block2", "gradcam_block4")}  # fmt: skip
    ok = run.index[run.index["status"] == "ok"]
    assert len(ok) == 6 and len(list((out / "seg").glob("*.seg.dcm"))) == 6
    for image_id in ok["image_id"]:
        seg = highdicom.seg.segread(out / "seg" / f"{file_stem(image_id)}.seg.dcm")
        source = pydicom.dcmread(run.source_path(image_id))
        assert seg.SegmentationType == "BINARY" and seg.StudyInstanceUID == source.StudyInstanceUID
        assert seg.PatientID == source.PatientID
        assert (
            seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
            == source.SOPInstanceUID
        )
        frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=[source.SOPInstanceUID])[0]
        labels = [s.SegmentLabel for s in seg.SegmentSequence]
        assert labels == ["cam/block4/abnormal", "gradcam/block2/abnormal", "gradcam/block4/abnormal"]
        for number, name in enumerate(("cam_block4", "gradcam_block2", "gradcam_block4")):
            mask = coco_mask.decode(chex[name][image_id]["abnormal"]).astype(bool)
            assert frames.shape[:2] == mask.shape == (source.Rows, source.Columns)
            assert np.array_equal(frames[..., number].astype(bool), mask), (image_id, name)


@pytest.mark.slow  # the validator on every object
def test_the_segmentations_pass_the_standards_validator(dicom_run, tmp_path):
    require("dciodvfy")
    out = tmp_path / "out"
    assert localise(dicom_run, out) == 0
    for path in sorted((out / "seg").glob("*.seg.dcm")):
        report = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        lines = (report.stdout + report.stderr).splitlines()
        assert "Segmentation" in lines[:2], lines[:3]  # after a warning the chest CR's own header carries
        assert not [line for line in lines if line.startswith("Error")], (path.name, lines)


@pytest.mark.slow  # three localisations of the run
def test_the_same_settings_make_the_same_object_and_others_another(dicom_run, tmp_path):
    assert localise(dicom_run, tmp_path / "a") == 0
    assert localise(dicom_run, tmp_path / "b") == 0
    assert localise(dicom_run, tmp_path / "c", "--mask-rule", "otsu") == 0
    for path in sorted((tmp_path / "a" / "seg").glob("*.dcm")):
        a, b = (pydicom.dcmread(tmp_path / f / "seg" / path.name) for f in ("a", "b"))
        c = pydicom.dcmread(tmp_path / "c" / "seg" / path.name)
        assert path.read_bytes() == (tmp_path / "b" / "seg" / path.name).read_bytes()
        assert a.SOPInstanceUID == b.SOPInstanceUID != c.SOPInstanceUID
