"""DICOM archives as manifests: found by content, DICOMDIR followed, allowlisted metadata, pseudonyms."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file
from support.dicom_reference import dataset, to_bytes

from densecam_core import in_clear, load_identifiers, read_manifest
from densecam_core.data.dicom_metadata import METADATA_COLUMNS, body_part
from densecam_core.data.pseudonyms import PseudonymKeyError, create_key

data_store = pytest.importorskip("data_store")
NEMA = Path(data_store.__file__).parent / "data"


@pytest.fixture()
def key(tmp_path) -> str:
    return str(create_key(tmp_path / "keys" / "group.key"))


def write(path: Path, **elements) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_bytes(dataset(np.arange(64).reshape(8, 8), **elements)))
    return path


def test_a_folder_walk_finds_dicom_by_content_whatever_its_name(tmp_path, key):
    write(tmp_path / "archive" / "1.2.840.99" / "IM0001")  # a PACS export: no extension
    write(tmp_path / "archive" / "b.dcm")
    (tmp_path / "archive" / "notes.txt").write_text("not an image")
    frame = read_manifest(tmp_path / "archive", identifiers=load_identifiers(key))
    assert sorted(frame["image_id"]) == ["1.2.840.99/IM0001", "b.dcm"]
    assert "notes.txt" in str(frame.attrs["skipped"])


def test_a_dicomdir_is_followed():
    folder = Path(get_testdata_file("DICOMDIR")).parent
    frame = read_manifest(folder, identifiers=in_clear())
    assert len(frame) == 31  # the IMAGE records the DICOMDIR lists
    assert frame["image_id"].str.startswith(("77654033/", "98892001/", "98892003/")).all()
    assert frame["modality"].isin(["CR", "MR", "CT"]).all()
    assert frame["path"].map(os.path.exists).all()
    direct = read_manifest(Path(get_testdata_file("DICOMDIR")), identifiers=in_clear())
    assert direct["image_id"].tolist() == frame["image_id"].tolist()


def test_metadata_columns_from_the_allowlist_typed_and_null_when_absent(tmp_path, key):
    for name in ("RG3_UNCR.dcm", "RG1_UNCR.dcm", "vlut_04.dcm"):
        shutil.copy(NEMA / name, tmp_path / name)
    frame = read_manifest(tmp_path, identifiers=load_identifiers(key)).set_index("image_id")
    assert set(METADATA_COLUMNS) <= set(frame.columns)
    tibia, chest, lut = frame.loc["RG3_UNCR.dcm"], frame.loc["RG1_UNCR.dcm"], frame.loc["vlut_04.dcm"]
    assert (tibia["modality"], tibia["body_part"], tibia["view_position"], tibia["laterality"]) == (
        "CR",
        "EXTREMITY",
        "AP",
        "R",
    )
    assert (tibia["photometric"], tibia["bits_stored"], tibia["transfer_syntax"]) == (
        "MONOCHROME1",
        10,
        "1.2.840.10008.1.2.1",
    )
    assert (tibia["voi"], tibia["window_center"], tibia["window_width"]) == ("window", 550.0, 1024.0)
    assert chest["body_part"] == "CHEST" and (chest["window_center"], chest["window_width"]) == (15000.0, 30000.0)
    assert chest["spacing_y_mm"] is pd_na() and chest["spacing_x_mm"] is pd_na(), "a zero spacing is null, not 0"
    assert lut["voi"] == "lut" and isinstance(lut["voi_lut"], str) and lut["window_center"] is pd_na()
    assert str(frame["spacing_y_mm"].dtype) == "Float64" and str(frame["bits_stored"].dtype) == "Int16"


def pd_na():
    import pandas as pd

    return pd.NA


def test_spacing_prefers_pixel_spacing_then_imager_pixel_spacing(tmp_path, key):
    write(tmp_path / "a.dcm", PixelSpacing=["0.2", "0.25"], ImagerPixelSpacing=["0.1", "0.1"])
    write(tmp_path / "b.dcm", ImagerPixelSpacing=["0.139", "0.15"])
    frame = read_manifest(tmp_path, identifiers=load_identifiers(key)).set_index("image_id")
    assert tuple(frame.loc["a.dcm", ["spacing_y_mm", "spacing_x_mm"]]) == (0.2, 0.25)
    assert tuple(frame.loc["b.dcm", ["spacing_y_mm", "spacing_x_mm"]]) == (0.139, 0.15)


@pytest.mark.parametrize(
    "written, indexed",
    [
        ("WRIST", "WRIST"),
        ("wrist", "WRIST"),
        ("ARM", "HUMERUS"),
        ("THUMB", "FINGER"),
        ("CHEST", "CHEST"),
        ("Knee", "KNEE"),
        ("EXTREMITY", "EXTREMITY"),
        ("Jane Doe", "OTHER"),
    ],
)
def test_body_parts_map_to_murs_seven_or_the_fixed_vocabulary(written, indexed):
    assert body_part(written) == indexed


def test_free_text_body_parts_are_kept_only_when_identifiers_are():
    """Someone typed a name into BodyPartExamined once: free text reaches the index only with
    --keep-identifiers."""
    assert body_part("Jane Doe", keep_text=True) == "Jane Doe"
    assert body_part("Jane Doe", keep_text=False) == "OTHER"


def test_pseudonyms_are_stable_under_one_key_and_differ_under_another(tmp_path, key):
    write(tmp_path / "a" / "x.dcm", PatientID="MRN-0042", StudyInstanceUID="1.2.3.4", SOPInstanceUID="1.2.3.4.5")
    first = read_manifest(tmp_path / "a", identifiers=load_identifiers(key)).iloc[0]
    again = read_manifest(tmp_path / "a", identifiers=load_identifiers(key)).iloc[0]
    other = read_manifest(tmp_path / "a", identifiers=load_identifiers(create_key(tmp_path / "other.key"))).iloc[0]
    for column in ("patient_id", "study_id", "instance_id"):
        assert first[column] == again[column] != other[column]
    assert first["patient_id"].startswith("p-") and "MRN-0042" not in first["patient_id"]
    assert first["study_id"].startswith("s-") and first["instance_id"].startswith("i-")
    clear = read_manifest(tmp_path / "a", identifiers=in_clear()).iloc[0]
    assert (clear["patient_id"], clear["study_id"], clear["instance_id"]) == ("MRN-0042", "1.2.3.4", "1.2.3.4.5")


def test_a_manifests_own_columns_win_over_the_header(tmp_path, key):
    path = write(tmp_path / "img.dcm", PatientID="MRN-1", BodyPartExamined="HAND")
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,patient_id\n{path},research-7\n")
    row = read_manifest(manifest, identifiers=load_identifiers(key)).iloc[0]
    assert row["patient_id"] == "research-7" and row["body_part"] == "HAND"


def test_png_archives_need_no_key(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")

    def no_key():
        raise AssertionError("a key was asked for without DICOM sources")

    frame = read_manifest(tmp_path, identifiers=no_key)
    assert "instance_id" not in frame.columns


def test_a_missing_key_file_is_refused_saying_how_to_create_one(tmp_path):
    with pytest.raises(PseudonymKeyError, match=r"does not exist; create one with `densecam keygen"):
        load_identifiers(tmp_path / "nope.key")


def test_an_unreadable_or_foreign_key_is_refused(tmp_path):
    bad = tmp_path / "bad.key"
    bad.write_text("short\n")
    with pytest.raises(PseudonymKeyError, match=r"is not a densecam key"):
        load_identifiers(bad)


def test_the_default_key_is_created_on_first_use_owner_only(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("DENSECAM_PSEUDONYM_KEY", raising=False)
    first = load_identifiers()
    assert first.created and Path(first.key_path).stat().st_mode & 0o777 == 0o600
    second = load_identifiers()
    assert not second.created and second.key == first.key and second.key_id == first.key_id


def test_a_key_inside_the_store_is_refused(tmp_path):
    inside = create_key(tmp_path / "store" / "pseudonym.key")
    with pytest.raises(PseudonymKeyError, match=r"lies inside the store"):
        load_identifiers(inside, store=str(tmp_path / "store"))


def test_a_dicomdir_record_whose_file_is_missing_stays_a_row_and_becomes_an_error_row(tmp_path):
    """The record must not vanish ("2 ok, 0 error rows" for 3 records): its row reads as a missing file,
    which the job records as an error row and ``--redo-errors`` redoes once the file is back."""
    from densecam_core.data.decode import read_image
    from densecam_core.data.errors import ImageError

    folder = tmp_path / "archive"
    shutil.copytree(Path(get_testdata_file("DICOMDIR")).parent, folder, ignore=shutil.ignore_patterns("*.py"))
    frame = read_manifest(folder / "DICOMDIR", identifiers=in_clear(), dicom_metadata=False)
    gone = Path(frame["path"].iloc[2])
    gone.unlink()
    again = read_manifest(folder / "DICOMDIR", identifiers=in_clear())
    assert again["image_id"].tolist() == frame["image_id"].tolist()
    with pytest.raises(ImageError, match="missing file"):
        read_image(str(gone))


def test_a_mura_shaped_dicom_tree_has_pseudonymous_patients_and_studies(tmp_path, key):
    from densecam_core import generate_mura

    generate_mura(tmp_path / "tree", images=4, seed=2, min_side=48, max_side=64, dicom=True, rgb_fraction=0.0)
    frame = read_manifest(tmp_path / "tree", identifiers=load_identifiers(key))
    assert len(frame) == 4
    assert frame["patient_id"].str.match(r"^p-[0-9a-f]{20}$").all(), frame["patient_id"].tolist()
    assert frame["study_id"].str.match(r"^s-[0-9a-f]{20}$").all(), frame["study_id"].tolist()
    assert not frame["patient_id"].str.contains("patient").any()
