"""Exports for radiologists' viewers: each exported object read back with highdicom and pydicom and held
against the run, checked by the DICOM standard's validator (dciodvfy) where it is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import data_store  # pydicom-data: the NEMA radiographs
import highdicom
import numpy as np
import pydicom
import pytest
from support.dicom_runs import explain
from support.system import require

from densecam_core import generate_mura, open_store
from densecam_core.data.pseudonyms import create_key, load_identifiers
from densecam_core.export.run_export import SUMMARY, ExportRequest, export_run, file_stem
from densecam_core.store.layout import StoreError

NEMA = Path(data_store.__file__).parent / "data"
SIZE = 64


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    """A synthetic DICOM tree (CR, MONOCHROME1/2, three transfer syntaxes) and the NEMA vlut radiograph."""
    root = tmp_path_factory.mktemp("export")
    generate_mura(root / "mura", images=5, seed=4, min_side=48, max_side=96, dicom=True, rgb_fraction=0.0)
    sources = root / "sources"  # a folder of DICOM files, as an archive export gives them
    sources.mkdir()
    for number, path in enumerate(sorted((root / "mura").rglob("*.dcm"))):
        shutil.copy(path, sources / f"synthetic{number}.dcm")
    shutil.copy(NEMA / "vlut_04.dcm", sources / "vlut_04.dcm")
    key = str(create_key(root / "group.key"))
    run_id = explain(sources, root / "store", key)
    return root, open_store(str(root / "store")).run(run_id), load_identifiers(key)


def _export(explained, out: Path, **request):
    _, run, identifiers = explained
    return export_run(run, out, ExportRequest(**request), identifiers=identifiers)


def test_the_segmentation_holds_the_runs_map_on_the_source_grid_and_references_it(explained, tmp_path):
    _, run, _ = explained
    summary = _export(explained, tmp_path / "out", method="gradcam", block=3)
    ok = run.index[run.index["status"] == "ok"]
    assert summary.exported == len(ok) == 6 and not summary.skipped
    for image_id in ok["image_id"]:
        stem = file_stem(image_id)
        seg = highdicom.seg.segread(tmp_path / "out" / f"{stem}.seg.dcm")
        source = pydicom.dcmread(run.source_path(image_id))
        values = seg.get_pixels_by_source_instance(source_sop_instance_uids=[source.SOPInstanceUID]).squeeze()
        heat = run.heatmap(image_id, "gradcam", 3, normalise=True)
        assert values.shape == heat.shape == (source.Rows, source.Columns)
        assert np.abs(values - heat).max() <= 1 / 255 + 1e-6, "within one 8-bit step"
        assert seg.SegmentationType == "FRACTIONAL" and seg.SegmentationFractionalType == "PROBABILITY"
        assert run.run_id in seg.SegmentSequence[0].SegmentDescription
        assert seg.StudyInstanceUID == source.StudyInstanceUID and seg.PatientID == source.PatientID
        sc = pydicom.dcmread(tmp_path / "out" / f"{stem}.sc.dcm")
        assert (sc.Rows, sc.Columns, sc.SamplesPerPixel) == (source.Rows, source.Columns, 3)
        assert sc.BurnedInAnnotation == "YES" and sc.StudyInstanceUID == source.StudyInstanceUID
        assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert sc.SeriesInstanceUID != source.SeriesInstanceUID and sc.SOPInstanceUID != source.SOPInstanceUID


def test_two_exports_write_the_same_objects(explained, tmp_path):
    _export(explained, tmp_path / "a", limit=2)
    _export(explained, tmp_path / "b", limit=2)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert len(names) == 5  # two images' SC and SEG, and the summary
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


@pytest.mark.slow  # spawns two worker processes
def test_worker_processes_write_the_same_objects(explained, tmp_path, monkeypatch):
    from densecam_core.export import run_export

    monkeypatch.setattr(run_export, "CHUNK_IMAGES", 1)  # three tasks for the two processes
    _export(explained, tmp_path / "one", limit=3)
    _, run, identifiers = explained
    export_run(run, tmp_path / "two", ExportRequest(limit=3), identifiers=identifiers, workers=2)
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "two").iterdir()) and len(names) == 7
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_every_exported_object_passes_the_standards_validator(explained, tmp_path):
    require("dciodvfy")
    _export(explained, tmp_path / "out", method="cam", block=None)
    objects = sorted((tmp_path / "out").glob("*.dcm"))
    assert len(objects) == 12
    for path in objects:
        report = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        lines = (report.stdout + report.stderr).splitlines()
        assert lines[0] == ("Segmentation" if path.name.endswith(".seg.dcm") else "SCImage"), lines[:3]
        errors = [line for line in lines if line.startswith("Error")]
        assert not errors, f"{path.name}: {errors}"


def test_bad_requests_are_refused_before_any_file_and_bad_sources_skipped(explained, tmp_path):
    run = explained[1]
    with pytest.raises(StoreError, match=r"has no 'layercam' maps; it has cam, gradcam"):
        _export(explained, tmp_path / "x", method="layercam")
    with pytest.raises(KeyError, match=r"1 image ids are not in run"):
        _export(explained, tmp_path / "x", images=["nope.dcm"])
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds other files"):
        _export(explained, tmp_path / "busy")
    assert not (tmp_path / "x").exists()
    moved = run.source_path(run.index["image_id"].iloc[0])
    backup = tmp_path / "backup.dcm"
    shutil.move(moved, backup)
    try:
        summary = _export(explained, tmp_path / "partial")
    finally:
        shutil.move(backup, moved)
    assert summary.exported == 5 and list(summary.skipped.values()) == [
        f"the source file {moved} is gone since the run"
    ]
    assert "gone since the run" in (tmp_path / "partial" / SUMMARY).read_text()


def test_a_source_changed_since_the_run_is_skipped_by_the_input_caches_identity(explained, tmp_path):
    run = explained[1]
    row = run.index.iloc[1]
    path = Path(run.source_path(row["image_id"]))
    before = path.stat()
    assert (row["source_size"], row["source_stamp"]) == (before.st_size, f"{before.st_mtime_ns}")
    try:  # the same bytes, a new modification time: a rewrite in place, as the input cache sees it
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
        summary = _export(explained, tmp_path / "changed")
    finally:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert summary.exported == 5 and list(summary.skipped.values()) == [
        f"the source file {path} changed since the run (its size or modification time differs)"
    ]


def test_the_command_exports_png_panels_of_a_run_without_dicom_sources_and_refuses_dicom(tmp_path, capsys):
    from support.runs import explain_tree

    from jobs.cli.main import main

    generate_mura(tmp_path / "tree", images=3, seed=1, min_side=48, max_side=64)
    store = tmp_path / "store"
    explain_tree(tmp_path / "tree", store)
    assert main(["export", str(store), "--to", "dicom", "--out", str(tmp_path / "dicom"), "--no-progress"]) == 2
    assert "was not explained from DICOM files: export it with --to png" in capsys.readouterr().err
    assert main(["export", str(store), "--to", "png", "--out", str(tmp_path / "png"), "--no-progress"]) == 0
    assert "exported 3 images, skipped 0" in capsys.readouterr().out
    assert len(list((tmp_path / "png").glob("*.png"))) == 3
    assert main(["export", str(store), "--to", "png", "--out", str(tmp_path / "png"), "--no-progress"]) == 2
    assert "holds other files" in capsys.readouterr().err


def test_an_export_killed_mid_write_leaves_no_partial_object(explained, tmp_path, monkeypatch):
    from pydicom.dataset import Dataset

    writes = []

    def dies_half_way(self, handle, **kwargs):  # the bytes start to land, then the process is killed
        writes.append(Path(os.readlink(f"/proc/self/fd/{handle.fileno()}")))  # the file behind the handle
        handle.write(b"\0" * 64)
        raise KeyboardInterrupt

    monkeypatch.setattr(Dataset, "save_as", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        _export(explained, tmp_path / "out", limit=1)
    assert writes and all(path.parent == tmp_path / "out" for path in writes)
    assert list((tmp_path / "out").iterdir()) == [], "neither the object nor its temporary file is left"


def test_a_link_planted_at_a_temporary_name_is_never_written_through(explained, tmp_path):
    """The temporary files are created exclusively under random names: links planted at the names an
    export used to write first (``_tmp-<object>``) and at the objects' own names are left or replaced,
    and the files they point to are untouched."""
    run = explained[1]
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    stem = file_stem(run.index[run.index["status"] == "ok"].sort_values("row")["image_id"].iloc[0])
    for name in (f"_tmp-{stem}.sc.dcm", f"_tmp-{stem}.seg.dcm", f"{stem}.sc.dcm"):
        (out / name).symlink_to(victim)
    summary = _export(explained, out, limit=1, overwrite=True)
    assert summary.exported == 1 and victim.read_text() == "keep me"
    assert not (out / f"{stem}.sc.dcm").is_symlink() and pydicom.dcmread(out / f"{stem}.sc.dcm").Modality


def _replaced_source(explained, tmp_path, replace) -> tuple[str, object]:
    """Export with the first source replaced by ``replace(path)`` (restored afterwards): (its path, summary)."""
    run = explained[1]
    path = run.source_path(run.index[run.index["status"] == "ok"].sort_values("row")["image_id"].iloc[0])
    backup = tmp_path / "backup.dcm"
    shutil.move(path, backup)
    stat = backup.stat()
    try:
        replace(path, stat)
        summary = _export(explained, tmp_path / "out", limit=2)
    finally:
        os.unlink(path)
        shutil.move(backup, path)
    return path, summary


def test_a_source_replaced_by_a_fifo_is_skipped_without_blocking(explained, tmp_path, monkeypatch):
    """As in a run made with ``--input-cache off`` (no identity recorded to compare): the read itself refuses
    the FIFO instead of waiting forever for a writer."""
    from densecam_core.export import run_export

    monkeypatch.setattr(run_export, "_check_identity", lambda path, row: None)

    def fifo(path, stat):
        os.mkfifo(path)

    path, summary = _replaced_source(explained, tmp_path, fifo)
    assert summary.exported == 1
    assert list(summary.skipped.values()) == [
        f"the source file {path} cannot be read now: not a regular file (a FIFO, socket or device): {path}"
    ]


def test_a_source_that_is_no_longer_dicom_is_skipped_with_its_reason(explained, tmp_path):
    """Replaced by text of the same size and modification time: the input cache's identity cannot tell, the
    parse does; the summary says why and the other image is exported."""

    def text(path, stat):
        Path(path).write_bytes(b"x" * stat.st_size)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    path, summary = _replaced_source(explained, tmp_path, text)
    assert summary.exported == 1
    (reason,) = summary.skipped.values()
    assert reason.startswith(f"the source file {path} is no longer a readable DICOM file: not a DICOM file")
    assert "no longer a readable DICOM file" in (tmp_path / "out" / SUMMARY).read_text()


@pytest.mark.slow  # three exports and the validator
def test_a_binary_segmentation_holds_the_thresholded_map_and_passes_the_validator(explained, tmp_path):
    """``--seg binary:T``, the Segmentation OHIF renders: the map at or above T of its range, one segment, valid;
    another threshold is another object, and a blend other than the default another Secondary Capture."""
    require("dciodvfy")
    _, run, _ = explained
    _export(explained, tmp_path / "out", method="gradcam", block=3, seg="binary:0.5", limit=3)
    _export(explained, tmp_path / "other", method="gradcam", block=3, seg="binary:0.6", alpha=0.3, limit=3)
    _export(explained, tmp_path / "default", method="gradcam", block=3, limit=3)
    ok = run.index[run.index["status"] == "ok"].sort_values("row")
    for image_id in ok["image_id"].iloc[:3]:
        stem = file_stem(image_id)
        seg = highdicom.seg.segread(tmp_path / "out" / f"{stem}.seg.dcm")
        source = pydicom.dcmread(run.source_path(image_id))
        frame = seg.get_pixels_by_source_instance(source_sop_instance_uids=[source.SOPInstanceUID])[0, ..., 0]
        assert seg.SegmentationType == "BINARY"
        assert np.array_equal(frame.astype(bool), run.heatmap(image_id, "gradcam", 3) >= 0.5)
        other = pydicom.dcmread(tmp_path / "other" / f"{stem}.seg.dcm")
        assert other.SOPInstanceUID != seg.SOPInstanceUID
        sc = [pydicom.dcmread(tmp_path / f / f"{stem}.sc.dcm").SOPInstanceUID for f in ("out", "other", "default")]
        assert sc[0] == sc[2] != sc[1]
        report = subprocess.run(["dciodvfy", str(tmp_path / "out" / f"{stem}.seg.dcm")], capture_output=True,
                                text=True, timeout=60)  # fmt: skip
        assert not [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]
    with pytest.raises(ValueError, match="'binary:T' with 0 < T < 1"):
        _export(explained, tmp_path / "bad", seg="binary:2")
    assert not (tmp_path / "bad").exists()
