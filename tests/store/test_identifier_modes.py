"""One run holds one kind of identifier. A run created from PNGs (no identifiers yet) is fixed to the mode of
the first job that brings DICOM rows; a later job with the other mode is refused before any work, so the
index never holds a raw PatientID beside pseudonyms."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from support.store import manifest, spec

from densecam_core.data.pseudonyms import create_key, in_clear, load_identifiers
from densecam_core.store import layout
from densecam_core.store.writer import RunWriter


def test_three_jobs_cannot_mix_clear_and_pseudonymised_identifiers_in_one_run(tmp_path):
    store = str(tmp_path / "store")
    png_job = spec()
    clear = dataclasses.replace(png_job, identifiers=in_clear().as_json())
    keyed = dataclasses.replace(png_job, identifiers=load_identifiers(create_key(tmp_path / "k")).as_json())
    assert png_job.run_id == clear.run_id == keyed.run_id  # the identifier mode is not part of the run id
    assert RunWriter(store, png_job).create_or_open("pngs", manifest(4)) is True
    run_json = Path(store) / layout.RUNS_DIR / png_job.run_id / layout.RUN_JSON
    assert "identifiers" not in json.loads(run_json.read_text())
    assert RunWriter(store, clear).create_or_open("dicom in clear", manifest(4)) is False
    assert json.loads(run_json.read_text())["identifiers"] == {"identifiers": "clear", "pseudonym_key_id": None}
    with pytest.raises(layout.StoreError, match=r"holds DICOM identifiers in clear.*this job's would be pseudonymised"):
        RunWriter(store, keyed).create_or_open("dicom pseudonymised", manifest(4))
    assert RunWriter(store, png_job).create_or_open("more pngs", manifest(4)) is False  # no identifiers: fine
