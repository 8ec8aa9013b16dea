"""`densecam explain` on a folder of DICOM files, end to end through a local Ray, as a user runs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from densecam_core import open_store

pytestmark = pytest.mark.slow  # a local Ray
data_store = pytest.importorskip("data_store")
NEMA = Path(data_store.__file__).parent / "data"
REPO = Path(__file__).resolve().parents[2]


def test_explain_a_dicom_folder_with_extensionless_files_creates_the_key_and_names_it(tmp_path):
    archive = tmp_path / "export" / "1.2.840.113619"
    archive.mkdir(parents=True)
    shutil.copy(NEMA / "RG3_UNCR.dcm", archive / "IM0001")  # PACS exports often carry no extension
    shutil.copy(NEMA / "vlut_04.dcm", archive / "IM0002")
    shutil.copy(get_testdata_file("rtplan.dcm"), archive / "IM0003")
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "PYTHONPATH": str(REPO)}
    env.pop("DENSECAM_PSEUDONYM_KEY", None)
    store = tmp_path / "store"
    command = [sys.executable, "-m", "jobs.cli.main", "explain", str(tmp_path / "export"), "--store", str(store)]
    command += ["--size", "64", "--shard-size", "4", "--workers", "1", "--methods", "gradcam", "--no-progress"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    key = tmp_path / "config" / "densecam" / "pseudonym.key"
    assert key.exists() and f"pseudonymised with the key {key} (created now" in result.stderr
    assert "3 explained now (2 ok, 1 error rows); 3 in the manifest" in result.stdout, result.stdout
    run = open_store(str(store)).run("latest")
    index = run.index.set_index("image_id")
    assert index.loc["1.2.840.113619/IM0003", "error"] == "DICOM without pixel data (RT Plan Storage)"
    assert run.heatmap("1.2.840.113619/IM0001").shape == (1760, 1760)
    assert run.meta["identifiers"]["identifiers"] == "pseudonymised"
    assert "11RG3" not in (store / "runs").joinpath(run.run_id, "run.json").read_text()
    # the pseudonyms are the key's: the same key gives them again (a later job links the same patient)
    import pydicom

    from densecam_core.data.pseudonyms import load_identifiers

    source = pydicom.dcmread(archive / "IM0001", stop_before_pixels=True)
    pseudonyms = load_identifiers(key)
    assert index.loc["1.2.840.113619/IM0001", "patient_id"] == pseudonyms("patient", source.PatientID)
    assert index.loc["1.2.840.113619/IM0001", "instance_id"] == pseudonyms("instance", source.SOPInstanceUID)
    # another run of the same store refuses a second key
    other = tmp_path / "other.key"
    subprocess.run([sys.executable, "-m", "jobs.cli.main", "keygen", str(other)], check=True, env=env, timeout=60)
    windowed = subprocess.run(
        [*command, "--dicom-window", "minmax"], capture_output=True, text=True, env=env, timeout=600
    )
    assert windowed.returncode == 0 and "catalog was not updated" not in windowed.stderr, windowed.stderr[-2000:]
    assert sorted(p.name for p in (store / "inputs").iterdir()) == ["s64-stretch-p1", "s64-stretch-p1-wminmax"]
    assert (store / "inputs" / "s64-stretch-p1-wminmax" / "_catalog.json").exists()
    refused = subprocess.run(
        [*command, "--pseudonym-key", str(other)], capture_output=True, text=True, env=env, timeout=600
    )
    assert refused.returncode == 2 and "pseudonymised under the key with id" in refused.stderr
    assert "Traceback" not in refused.stderr
