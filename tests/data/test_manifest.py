"""Manifest formats: MURA folder and CSVs, labelled studies, generic CSV/Parquet, bad manifests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from densecam_core import ManifestError, plan_shards, read_manifest


def make_mura(root: Path) -> None:
    rows = {
        "train": [
            "MURA-v1.1/train/XR_SHOULDER/patient00001/study1_positive/image1.png",
            "MURA-v1.1/train/XR_SHOULDER/patient00001/study1_positive/image2.png",
            "MURA-v1.1/train/XR_WRIST/patient00001/study1_negative/image1.png",
            "MURA-v1.1/train/XR_WRIST/patient00001/study2_positive/image3.png",
        ],
        "valid": ["MURA-v1.1/valid/XR_HAND/patient11185/study1_negative/image1.png"],
    }
    studies = {
        "train": [
            "MURA-v1.1/train/XR_SHOULDER/patient00001/study1_positive/,1",
            "MURA-v1.1/train/XR_WRIST/patient00001/study1_negative/,0",
            "MURA-v1.1/train/XR_WRIST/patient00001/study2_positive/,1",
        ],
        "valid": ["MURA-v1.1/valid/XR_HAND/patient11185/study1_negative/,0"],
    }
    for split in ("train", "valid"):
        for rel in rows[split]:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(b"png")
        (root / "MURA-v1.1" / f"{split}_image_paths.csv").write_text("\n".join(rows[split]) + "\n")
        (root / "MURA-v1.1" / f"{split}_labeled_studies.csv").write_text("\n".join(studies[split]) + "\n")
    (root / "MURA-v1.1/train/XR_SHOULDER/patient00001/study1_positive/._image1.png").write_bytes(b"x")


def test_official_folder_parses_fields(tmp_path: Path):
    make_mura(tmp_path)
    for source in (tmp_path, tmp_path / "MURA-v1.1"):
        frame = read_manifest(source)
        assert list(frame["image_id"]) == [
            "MURA-v1.1/train/XR_SHOULDER/patient00001/study1_positive/image1.png",
            "MURA-v1.1/train/XR_SHOULDER/patient00001/study1_positive/image2.png",
            "MURA-v1.1/train/XR_WRIST/patient00001/study1_negative/image1.png",
            "MURA-v1.1/train/XR_WRIST/patient00001/study2_positive/image3.png",
            "MURA-v1.1/valid/XR_HAND/patient11185/study1_negative/image1.png",
        ]
        assert list(frame["label"]) == [1, 1, 0, 1, 0]
        assert list(frame["split"]) == ["train"] * 4 + ["valid"]
        assert list(frame["body_part"]) == ["SHOULDER", "SHOULDER", "WRIST", "WRIST", "HAND"]
        assert list(frame["view"]) == [1, 2, 1, 3, 1]
        # the same patient under two body parts, study numbers restarting: distinct studies
        assert frame["study_id"].nunique() == 4
        assert frame.loc[0, "study_id"] != frame.loc[2, "study_id"]
        assert frame.loc[0, "patient_id"] == frame.loc[2, "patient_id"] == "patient00001"
        assert Path(frame.loc[0, "path"]).is_file()


def test_image_paths_csv_and_labelled_studies_csv(tmp_path: Path):
    make_mura(tmp_path)
    paths = read_manifest(tmp_path / "MURA-v1.1" / "train_image_paths.csv")
    assert len(paths) == 4 and paths["split"].eq("train").all()
    studies = read_manifest(tmp_path / "MURA-v1.1" / "train_labeled_studies.csv")
    assert list(studies["image_id"]) == list(paths["image_id"])  # hidden ._image1.png not picked up
    assert list(studies["label"]) == [1, 1, 0, 1]


def test_contradicting_study_labels_are_rejected(tmp_path: Path):
    make_mura(tmp_path)
    csv = tmp_path / "MURA-v1.1" / "train_labeled_studies.csv"
    csv.write_text(csv.read_text().replace("study1_negative/,0", "study1_negative/,1"))
    with pytest.raises(ManifestError, match="contradict"):
        read_manifest(tmp_path)


def test_generic_csv_and_parquet_keep_extra_columns(tmp_path: Path):
    (tmp_path / "imgs").mkdir()
    table = pd.DataFrame(
        {
            "path": ["imgs/a.png", "imgs/b.jpg", "/abs/c.png", "s3://bucket/d.png"],
            "label": [1, 0, None, 1],
            "hospital": ["x", "y", "x", "z"],
        }
    )
    table.to_csv(tmp_path / "m.csv", index=False)
    table.to_parquet(tmp_path / "m.parquet")
    for source in ("m.csv", "m.parquet"):
        frame = read_manifest(tmp_path / source)
        assert list(frame["image_id"]) == ["imgs/a.png", "imgs/b.jpg", "/abs/c.png", "s3://bucket/d.png"]
        assert frame.loc[0, "path"] == str(tmp_path / "imgs/a.png")
        assert frame.loc[3, "path"] == "s3://bucket/d.png"
        assert list(frame["hospital"]) == ["x", "y", "x", "z"]
        assert frame["label"].isna().tolist() == [False, False, True, False]
        assert frame["body_part"].isna().all() and frame["split"].isna().all()
    rooted = read_manifest(tmp_path / "m.csv", image_root="/data")
    assert rooted.loc[0, "path"] == "/data/imgs/a.png"


def test_folder_walk_skips_hidden_and_non_images(tmp_path: Path):
    for name in ("b/2.png", "a/1.jpg", "a/._1.jpg", ".hidden/3.png", "a/notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert list(read_manifest(tmp_path)["image_id"]) == ["a/1.jpg", "b/2.png"]


@pytest.mark.parametrize(
    "rows, message",
    [
        ("path\nx/../../etc/passwd\nok.png\n", "escape the image root"),
        ("path\na.png\na.png\n", "duplicate image ids"),
        ("file\na.png\n", "header with a 'path' column"),
        ("", "empty"),
        ("path,label\na.png,7\n", "'label' must be 0, 1"),
        ("hello world\n", "neither a header"),
    ],
)
def test_bad_manifests_are_rejected_with_a_reason(tmp_path: Path, rows: str, message: str):
    path = tmp_path / "bad.csv"
    path.write_text(rows)
    with pytest.raises(ManifestError, match=message):
        read_manifest(path)


def test_missing_listed_file_stays_a_row(tmp_path: Path):
    (tmp_path / "m.csv").write_text("path\nnot-there.png\n")
    assert len(read_manifest(tmp_path / "m.csv")) == 1
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "nope.csv")


def test_plan_shards_is_contiguous_and_chunk_aligned():
    shards = plan_shards(10, 4, first_row=8)
    assert [(s.index, s.row_start, s.row_stop) for s in shards] == [(2, 8, 12), (3, 12, 16), (4, 16, 18)]
    with pytest.raises(ValueError, match="multiple"):
        plan_shards(3, 4, first_row=2)


def test_one_file_one_identity_however_its_path_is_spelled(tmp_path):
    table = pd.DataFrame({"path": ["/x/a.png", "/x//a.png", "/x/../x/a.png", "s3://b/y//a.png"]})
    table.to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(ManifestError, match=r"duplicate image ids.*'/x/a.png'"):
        read_manifest(tmp_path / "m.csv")
    table.iloc[[0, 3]].to_csv(tmp_path / "ok.csv", index=False)
    assert read_manifest(tmp_path / "ok.csv")["image_id"].tolist() == ["/x/a.png", "s3://b/y/a.png"]


def test_unreadable_csv_text_names_the_file_and_line(tmp_path):
    mura = tmp_path / "MURA-v1.1"
    mura.mkdir()
    good = "MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/image1.png\n"
    (mura / "train_image_paths.csv").write_text(good + '"' + "x" * 200_000 + '"\n')
    with pytest.raises(ManifestError, match=r"train_image_paths.csv: line 2: field larger than field limit"):
        read_manifest(tmp_path)
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"path\n/x/a.png\n/x/caf\xe9.png\n")
    with pytest.raises(ManifestError, match=r"latin.csv' is not UTF-8 text: byte b'\\xe9' on line 3"):
        read_manifest(latin)


def test_folder_walk_reports_what_it_skipped(tmp_path):
    import os

    from densecam_core.data.folders import skipped_summary

    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("L", (40, 40)).save(folder / "a.png")
    (folder / "b.dcm").write_bytes(b"DICM")
    (folder / "c.tif").write_bytes(b"II*")
    os.symlink(folder / "gone.png", folder / "link.png")
    os.close(os.open(os.path.join(os.fsencode(folder), b"caf\xe9.png"), os.O_CREAT | os.O_WRONLY))
    frame = read_manifest(folder)
    # one undecodable name does not refuse the folder; b.dcm is listed by its name (decoding then
    # makes it an error row: no DICM preamble, no DICOM elements)
    assert frame["image_id"].tolist() == ["a.png", "b.dcm"]
    summary = skipped_summary(frame)
    for part in ("1 broken link", "1 file name not UTF-8", "1 not an image or DICOM (.tif)"):
        assert part in summary


def test_a_folder_walk_never_follows_a_link_out_of_the_folder(tmp_path: Path):
    """A linked image leading outside stays a row whose read is refused (the job's error row); a linked
    sub-folder or other file leading outside is named among the skipped; one inside the folder is walked once,
    and a cycle of links ends."""
    import os

    from densecam_core.data.decode import decode_pixels
    from densecam_core.data.errors import ImageError
    from densecam_core.data.folders import OUTSIDE

    archive, elsewhere = tmp_path / "archive", tmp_path / "elsewhere"
    (archive / "a").mkdir(parents=True)
    elsewhere.mkdir()
    Image.new("L", (8, 8)).save(archive / "a" / "x.png")
    Image.new("L", (8, 8)).save(elsewhere / "secret.png")
    os.symlink(elsewhere / "secret.png", archive / "a" / "linked.png")
    (elsewhere / "notes.txt").write_text("private")
    os.symlink(elsewhere / "notes.txt", archive / "a" / "linked-notes")
    os.symlink(elsewhere, archive / "linked-folder")
    os.symlink(archive / "a", archive / "b")  # inside: walked once, under one of its names
    os.symlink(archive, archive / "a" / "loop")
    frame = read_manifest(archive)
    assert frame["image_id"].tolist() == ["a/linked.png", "a/x.png"]
    assert sorted(frame.attrs["skipped"][OUTSIDE]) == ["a/linked-notes", "linked-folder"]
    walked = frame.attrs["walked_folder"]
    assert decode_pixels(str(archive / "a" / "x.png"), within=walked).shape == (8, 8)
    with pytest.raises(ImageError, match="a symbolic link leading outside the folder .*: not read"):
        decode_pixels(str(archive / "a" / "linked.png"), within=walked)
