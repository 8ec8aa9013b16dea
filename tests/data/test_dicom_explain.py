"""Explaining a folder of real and broken DICOM files (the worker without Ray): ok rows with their
metadata, error rows with their reasons, maps on each file's own grid, no identifier in clear."""

from __future__ import annotations

import functools
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pydicom
import pytest
from pydicom.data import get_testdata_file
from support.dicom_reference import dataset, to_bytes

from densecam_core import load_densenet169, load_identifiers, open_store, read_manifest
from densecam_core.data.pseudonyms import create_key
from densecam_core.model.checkpoint import model_fingerprint, state_dict_bytes
from densecam_core.store.layout import Shard
from densecam_core.store.writer import RunSpec, RunWriter
from densecam_core.vocabulary import block_grid
from jobs.explain.settings import ExplainSettings
from jobs.explain.worker import ExplainWorker

data_store = pytest.importorskip("data_store")
NEMA = Path(data_store.__file__).parent / "data"
SIZE = 64
REAL = ["RG3_UNCR.dcm", "RG1_J2KR.dcm", "RG3_J2KI.dcm", "mlut_18.dcm", "vlut_04.dcm"]
BROKEN = {
    "notes.dcm": r"not a DICOM file despite its 'dcm' extension",
    "report.dcm": r"DICOM without pixel data \(Comprehensive SR Storage\)",
    "truncated.dcm": r"truncated or corrupt DICOM pixel data",
    "cine.dcm": r"multi-frame DICOM \(10 frames",
    "flat-window.dcm": r"window width 0 is not usable",
}


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("archive")
    for name in REAL:
        shutil.copy(NEMA / name, root / name)
    (root / "notes.dcm").write_text("referral letter\n" * 50)
    shutil.copy(get_testdata_file("test-SR.dcm"), root / "report.dcm")
    shutil.copy(get_testdata_file("MR_truncated.dcm"), root / "truncated.dcm")
    shutil.copy(NEMA / "emri_small.dcm", root / "cine.dcm")
    flat = dataset(np.arange(64).reshape(8, 8), WindowCenter="10", WindowWidth="0", PatientID="FLAT-PATIENT-77")
    (root / "flat-window.dcm").write_bytes(to_bytes(flat))
    return root


@functools.cache
def weights() -> tuple[bytes, str]:
    model = load_densenet169(seed=0)
    return state_dict_bytes(model), model_fingerprint(model)


def explain(archive: Path, store: Path, key: str, window: str = "first") -> tuple[str, list]:
    state, fingerprint = weights()
    settings = ExplainSettings(
        methods=("gradcam",), size=SIZE, batch_size=4, input_cache="readwrite", dicom_window=window
    )
    identifiers = load_identifiers(key)
    spec = RunSpec(fingerprint, "x.pt", settings.run_settings(), 1, 1, block_grid(SIZE), 4, identifiers.as_json())
    manifest = read_manifest(archive, identifiers=identifiers, dicom_window=window)
    writer = RunWriter(str(store), spec)
    writer.create_or_open(str(archive), manifest)
    planned = writer.plan(manifest)
    worker = ExplainWorker(state, settings, warm_up=False, store_url=str(store))
    results = []
    for index, rows in planned.groupby("shard"):
        shard = Shard(int(index), int(index) * 4, int(rows["row"].max()) + 1)
        results.append(worker.process_shard(writer.run_url, spec.run_id, shard, 4, rows))
    return spec.run_id, results


@pytest.fixture(scope="module")
def explained(archive, tmp_path_factory):
    key = str(create_key(tmp_path_factory.mktemp("keys") / "group.key"))
    store = tmp_path_factory.mktemp("store") / "store"
    run_id, results = explain(archive, store, key)
    return store, run_id, results, key


@pytest.mark.slow  # seconds end to end; the fast loop keeps a smaller test of this path
def test_every_real_image_is_ok_with_its_metadata_and_every_broken_one_an_error_row(explained):
    store, run_id, _, _ = explained
    index = open_store(str(store)).run(run_id).index.set_index("image_id")
    assert sorted(index.index) == sorted(REAL + list(BROKEN))
    for name in REAL:
        assert index.loc[name, "status"] == "ok", index.loc[name, "error"]
    for name, reason in BROKEN.items():
        assert index.loc[name, "status"] == "error"
        assert re.search(reason, index.loc[name, "error"]), index.loc[name, "error"]
    tibia = index.loc["RG3_UNCR.dcm"]
    assert (tibia["modality"], tibia["photometric"], tibia["body_part"], tibia["window_width"]) == (
        "CR",
        "MONOCHROME1",
        "EXTREMITY",
        1024.0,
    )
    assert (tibia["orig_height"], tibia["orig_width"]) == (1760, 1760)


def test_heatmaps_map_back_to_each_files_own_pixel_grid(explained):
    store, run_id, _, _ = explained
    run = open_store(str(store)).run(run_id)
    assert run.heatmap("RG3_UNCR.dcm").shape == (1760, 1760)
    assert run.heatmap("RG1_J2KR.dcm", "gradcam", 2).shape == (1955, 1841)
    assert run.image("RG3_UNCR.dcm").shape == (1760, 1760)
    assert run.overlay("vlut_04.dcm").shape == (512, 512, 3)


def identifiers_of(path: Path) -> set[str]:
    try:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
    except Exception:
        return set()
    keywords = (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "AccessionNumber",
        "InstitutionName",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
    )
    values = {str(ds.get(k, "") or "").strip() for k in keywords}
    return {v for v in values if len(v) >= 4}


def store_strings(store: Path) -> list[str]:
    """Every value of every Parquet file and the text of every JSON file in the store."""
    strings = []
    for path in store.rglob("*"):
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            strings += [
                json.dumps(table.schema.metadata and {k.decode(): v.decode() for k, v in table.schema.metadata.items()})
            ]
            strings += [str(value) for column in table.to_pydict().values() for value in column]
        elif path.suffix == ".json":
            strings.append(path.read_text())
    return strings


def test_no_identifier_of_any_source_file_is_in_the_store_in_clear(explained, archive):
    store, _, _, _ = explained
    secrets = set().union(*(identifiers_of(p) for p in archive.iterdir()))
    assert {"CompressedSamples^RG3", "11RG3", "FLAT-PATIENT-77"} <= secrets  # the scan knows what to look for
    text = "\n".join(store_strings(store))
    assert len(text) > 1000
    leaked = sorted(s for s in secrets if s in text)
    assert not leaked
    _, _, _, key = explained
    assert Path(key).read_text().strip() not in text, "the pseudonym key itself is in the store"
    assert "PANDAS_ATTRS" not in text, "a manifest's attrs (walk details, the key's object) reached Parquet metadata"


@pytest.mark.slow  # seconds of whole shards; the fast loop keeps a smaller test of this path
def test_the_input_cache_is_keyed_by_the_dicom_window(explained, archive):
    store, _, first, key = explained
    assert sum(r.images_decoded for r in first) == len(REAL) + len(BROKEN)
    _, again = explain(archive, store, key)  # the same window: every readable image from the cache
    assert sum(r.images_from_cache for r in again) == len(REAL)
    _, minmax = explain(archive, store, key, window="minmax")
    assert sum(r.images_from_cache for r in minmax) == 0, "another window must decode again"
    cache_folders = sorted(p.name for p in (store / "inputs").iterdir() if p.is_dir())
    assert cache_folders == ["s64-stretch-p1", "s64-stretch-p1-wminmax"]


def test_the_dicom_window_is_part_of_the_run_id_and_the_default_keeps_earlier_ids():
    from densecam_core.store.record import RunSettings, run_id_for
    from jobs.explain.settings import ExplainSettings

    default = ExplainSettings(methods=("gradcam",)).run_settings()
    assert "dicom_window" not in default.recorded()
    recorded = {"methods": ["gradcam"], "size": 320, "resize": "stretch", "precision": "fp32", "targets": None}
    before = run_id_for("f" * 64, RunSettings.from_recorded(recorded))
    assert run_id_for("f" * 64, default) == before
    other = ExplainSettings(methods=("gradcam",), dicom_window="percentile").run_settings()
    assert run_id_for("f" * 64, other) != before


@pytest.mark.slow  # seconds of whole shards; the fast loop keeps a smaller test of this path
def test_the_evaluation_scores_a_dicom_run_from_its_cache_with_the_pointing_game(explained):
    """Sampling by body part and label, deletion and the pointing game on a DICOM run: what the
    evaluation job's actors run, reading the inputs the explanation cached (with the run's window)."""
    from densecam_core.evaluation.sampling import stratified_sample
    from densecam_core.evaluation.scorer import ScoreSettings
    from jobs.evaluate.worker import EvaluateSettings, EvaluateWorker

    store, run_id, _, _ = explained
    run = open_store(str(store)).run(run_id)
    ok = run.index[run.index["status"] == "ok"]
    sample = stratified_sample(ok, count=3, seed=0)
    assert len(sample) == 3 and sample["image_id"].is_unique
    settings = EvaluateSettings(
        score=ScoreSettings(metrics=("deletion", "localisation"), steps=2),
        methods=("gradcam",),
        size=SIZE,
        resize="stretch",
        batch_size=4,
    )
    worker = EvaluateWorker(weights()[0], settings, store_url=str(store), run_id=run_id)
    tibia = ok[ok["image_id"] == "RG3_UNCR.dcm"]
    boxes = {"RG3_UNCR.dcm": np.array([[700.0, 700.0, 1060.0, 1060.0]])}
    cached = 0
    for shard_index, rows in ok.groupby("shard"):
        shard = Shard(int(shard_index), int(shard_index) * 4, int(shard_index) * 4 + 4)
        cached += worker.process_shard(run.url, shard, rows.reset_index(drop=True), boxes).images_from_cache
    assert cached == len(ok), "every input came from the cache the explanation wrote"
    scores = run.metrics()
    assert set(scores["image_id"]) == set(ok["image_id"]) and "error" not in set(scores["metric"])
    pointing = scores[(scores["metric"] == "pointing_game") & (scores["method"] == "cam")].set_index("image_id")[
        "value"
    ]
    assert pointing.loc[tibia["image_id"].iloc[0]] in (0.0, 1.0)
    assert pointing.drop(index=tibia["image_id"].iloc[0]).isna().all()  # no box: not a localisation case
    from densecam_core import pointing_game

    frame = pd.DataFrame({"image_id": ["RG3_UNCR.dcm"], "x0": [700.0], "y0": [700.0], "x1": [1060.0], "y1": [1060.0]})
    table = pointing_game(run, frame).set_index(["method", "block"])
    assert table.loc[("cam", 4), "hit_rate"] == pointing.loc["RG3_UNCR.dcm"]
