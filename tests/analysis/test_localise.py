"""``densecam localise`` on runs whose maps are constructed: thresholds chosen on the calibration split only,
metrics that fail where the maps miss, weak labels that decode to the masks computed, and bad input refused."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pycocotools import mask as coco_mask
from support.audit_maps import blob, run_with_maps

from densecam_core import open_store
from densecam_core.analysis.localise import LocaliseRequest, localise_run
from densecam_core.analysis.localise_inputs import check_boxes, split_images
from densecam_core.analysis.regions import mask_at, regions
from densecam_core.data.geometry import Geometry
from jobs.cli.main import main

SIZE = 192
N = 60


def centres(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.3, 0.7, size=(N, 2))


def box_table(run, where: np.ndarray, half: float = 0.1) -> pd.DataFrame:
    ids = run.index.sort_values("row")["image_id"].to_numpy()
    return pd.DataFrame(
        {
            "image_id": ids,
            "x0": (where[:, 1] - half) * SIZE,
            "y0": (where[:, 0] - half) * SIZE,
            "x1": (where[:, 1] + half) * SIZE,
            "y1": (where[:, 0] + half) * SIZE,
        }
    )


@pytest.fixture(scope="module")
def on_target(tmp_path_factory):
    """Every map a blob on its image's lesion box: localises well."""
    where = centres()
    run = run_with_maps(
        str(tmp_path_factory.mktemp("on") / "store"),
        [1] * N,
        lambda i, h, w: blob(h, w, where[i, 0], where[i, 1], 0.08),
        size=SIZE,
        probs=list(np.linspace(0.05, 0.95, N)),
    )
    return run, box_table(run, where)


def split_of(run, boxes, calibrate=0.2):
    ok = run.index[run.index["image_id"].isin(boxes["image_id"])]
    return split_images(ok, calibrate, seed=0, min_images=5)


def test_maps_on_the_boxes_beat_the_centred_baseline_and_maps_elsewhere_do_not(on_target, tmp_path):
    run, boxes = on_target
    result = localise_run(run, boxes, split_of(run, boxes), LocaliseRequest(methods=("cam",), bootstrap=200))
    cam = result.metrics[result.metrics["method"] == "cam"].iloc[0]
    assert cam["maxboxacc_v2"] > cam["baseline_maxboxacc_v2"] + 0.3
    assert cam["box_acc_50"] >= 0.9 and cam["hit_rate"] == 1.0
    assert cam["maxboxacc_v2_low"] <= cam["maxboxacc_v2"] <= cam["maxboxacc_v2_high"]
    elsewhere = run_with_maps(
        str(tmp_path / "store"), [1] * N, lambda i, h, w: blob(h, w, 0.1, 0.9, 0.08), size=SIZE
    )  # every map in a corner: a metric that cannot fail would not see it
    moved = box_table(elsewhere, centres())
    missed = localise_run(elsewhere, moved, split_of(elsewhere, moved), LocaliseRequest(methods=("cam",), bootstrap=0))
    row = missed.metrics[missed.metrics["method"] == "cam"].iloc[0]
    assert row["maxboxacc_v2"] <= row["baseline_maxboxacc_v2"] + 0.05 and row["hit_rate"] == 0.0


def test_thresholds_are_chosen_on_the_calibration_images_only(tmp_path):
    """Calibration images have boxes twice as wide as their blob, the reported ones boxes as wide: the chosen
    threshold suits the first, the oracle the second, and the gap is what that choice cost."""
    where = centres(1)
    run = run_with_maps(
        str(tmp_path / "store"), [1] * N, lambda i, h, w: blob(h, w, where[i, 0], where[i, 1], 0.08), size=SIZE
    )
    ids = run.index.sort_values("row")["image_id"].to_numpy()
    calibration = list(ids[:20])
    wide, narrow = box_table(run, where, half=0.2), box_table(run, where, half=0.08)
    boxes = pd.concat([wide[wide["image_id"].isin(calibration)], narrow[~narrow["image_id"].isin(calibration)]])
    split = split_of(run, boxes, calibrate=calibration)
    result = localise_run(run, boxes, split, LocaliseRequest(methods=("cam",), bootstrap=0))
    cam = result.metrics[result.metrics["method"] == "cam"].iloc[0]
    alone = localise_run(run, narrow, split, LocaliseRequest(methods=("cam",), bootstrap=0))
    tau_if_calibrated_on_narrow = alone.metrics[alone.metrics["method"] == "cam"].iloc[0]["tau"]
    assert cam["tau"] < tau_if_calibrated_on_narrow, "wide calibration boxes pull the threshold down"
    assert cam["oracle_gap"] > 0.2 and cam["oracle_box_acc_50"] == pytest.approx(cam["maxboxacc_50"])
    assert set(result.images.loc[result.images["split"] == "calibration", "image_id"]) == set(calibration)


def test_the_command_writes_tables_weak_labels_and_the_store_reads_them(on_target, tmp_path, capsys):
    run, boxes = on_target
    path = tmp_path / "boxes.csv"
    bad = pd.DataFrame(
        {"image_id": [boxes["image_id"][0]] * 3, "x0": [-1, 5, 5], "y0": [0, 5, 5], "x1": [5, 5, 500], "y1": [5, 9, 9]}
    )
    pd.concat([boxes, bad]).to_csv(path, index=False)
    out = tmp_path / "out"
    code = main(["localise", run.store_url, "--run", run.run_id, "--boxes", str(path), "--out", str(out),
                 "--methods", "cam,gradcam", "--blocks", "4", "--bootstrap", "100", "--min-split-images", "5"])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0 and "3 boxes skipped" in printed
    metrics = pd.read_csv(out / "metrics.csv")
    for column in ("method", "block", "target", "tau", "box_acc_50", "maxboxacc_v2", "pxap", "miou", "hit_rate",
                   "oracle_gap", "n_images", "maxboxacc_v2_low", "maxboxacc_v2_high"):  # fmt: skip
        assert column in metrics.columns, column
    assert list(metrics["method"]) == ["centre_baseline", "cam", "gradcam"]
    assert list(pd.read_csv(out / "skipped_boxes.csv")["reason"]) == [
        "negative coordinate", "zero-sized or inverted (need x1 > x0, y1 > y0)", "outside its image"
    ]  # fmt: skip
    stored = open_store(run.store_url).run(run.run_id).localisation()
    pd.testing.assert_frame_equal(stored.metrics.reset_index(drop=True), metrics, check_dtype=False)
    coco = json.loads((out / "coco.json").read_text())
    assert {c["name"] for c in coco["categories"]} == {"cam/block4/abnormal", "gradcam/block4/abnormal"}
    assert len(coco["info"]["calibration_images"]) == int(metrics["n_calibration"].iloc[0])
    image = coco["images"][3]
    assert image["densecam_image_id"] == run.index.sort_values("row")["image_id"].iloc[3]
    chex = json.loads((out / "chexlocalize" / "cam_block4.json").read_text())
    assert set(chex) == set(run.index["image_id"]) and set(chex[image["densecam_image_id"]]) == {"abnormal"}


def test_coco_masks_decode_to_the_masks_computed_bit_for_bit(on_target, tmp_path):
    run, boxes = on_target
    out = tmp_path / "out"
    assert main(["localise", run.store_url, "--boxes", _csv(boxes, tmp_path), "--out", str(out), "--methods", "cam",
                 "--bootstrap", "0", "--min-split-images", "5"]) == 0  # fmt: skip
    coco = json.loads((out / "coco.json").read_text())
    tau = coco["info"]["thresholds"]["cam/block4/abnormal"]["tau"]
    index = run.index.set_index("image_id")
    for image in coco["images"][:10]:
        record = index.loc[image["densecam_image_id"]]
        values = Geometry(int(record["orig_height"]), int(record["orig_width"]), SIZE, "stretch").to_original(
            run.maps("cam", None, image_ids=[image["densecam_image_id"]], target=0)[0]
        )
        expected = regions(values, round(tau * 100), 100, largest_only=False)
        mine = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        assert len(mine) == len(expected) >= 1
        for annotation, region in zip(mine, expected):
            decoded = coco_mask.decode(annotation["segmentation"]).astype(bool)
            assert np.array_equal(decoded, region.mask)
            assert list(coco_mask.toBbox(annotation["segmentation"])) == annotation["bbox"]
        chex = json.loads((out / "chexlocalize" / "cam_block4.json").read_text())
        tau_mask = coco["info"]["thresholds"]["cam/block4/abnormal"]["tau_mask"]
        decoded = coco_mask.decode(chex[image["densecam_image_id"]]["abnormal"]).astype(bool)
        assert np.array_equal(decoded, mask_at(values, round(tau_mask * 100), 100))


def test_the_probability_cutoff_leaves_images_below_it_without_regions(on_target, tmp_path):
    run, boxes = on_target
    out = tmp_path / "out"
    assert main(["localise", run.store_url, "--boxes", _csv(boxes, tmp_path), "--out", str(out), "--methods", "cam",
                 "--bootstrap", "0", "--min-split-images", "5", "--min-probability", "0.5", "--box-rule", "largest",
                 ]) == 0  # fmt: skip
    coco = json.loads((out / "coco.json").read_text())
    low = set(run.index.loc[run.index["prob"] < 0.5, "image_id"])
    labelled = [coco["images"][a["image_id"] - 1]["densecam_image_id"] for a in coco["annotations"]]
    assert labelled and not set(labelled) & low
    assert len(labelled) == len(set(labelled)), "the largest component only: one box per image and map"
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics.loc[metrics["method"] == "cam", "hit_rate"].iloc[0] == pytest.approx(0.5, abs=0.1)


def _csv(boxes: pd.DataFrame, folder) -> str:
    path = folder / "boxes.csv"
    boxes.to_csv(path, index=False)
    return str(path)


def test_bad_input_is_refused_with_what_to_do(on_target, tmp_path, capsys):
    run, boxes = on_target
    common = ["--out", str(tmp_path / "out"), "--bootstrap", "0"]
    assert main(["localise", run.store_url, "--boxes", str(tmp_path / "none.csv"), *common]) == 2
    assert "no box file" in capsys.readouterr().err
    other = boxes.assign(image_id="elsewhere/" + boxes["image_id"])
    assert main(["localise", run.store_url, "--boxes", _csv(other, tmp_path), *common]) == 2
    err = capsys.readouterr().err
    assert "no image in common" in err and "elsewhere/" in err and run.run_id in err
    assert main(["localise", run.store_url, "--boxes", _csv(boxes, tmp_path), *common, "--min-split-images", "50"]) == 2
    assert "12 images to choose thresholds on and 48 to report on" in capsys.readouterr().err
    assert main(["localise", run.store_url, "--boxes", _csv(boxes, tmp_path), *common, "--target", "fracture",
                 "--min-split-images", "5"]) == 2  # fmt: skip
    assert "no target 'fracture'; its targets are: abnormal" in capsys.readouterr().err
    assert main(["localise", run.store_url, "--boxes", _csv(boxes, tmp_path), *common, "--calibrate", "1.5"]) == 2
    assert "--calibrate takes a fraction between 0 and 1" in capsys.readouterr().err
    assert main(["localise", run.store_url, "--boxes", _csv(boxes, tmp_path), *common, "--calibrate", "ids.txt"]) == 2
    assert "no calibration file at ids.txt" in capsys.readouterr().err
    assert not (tmp_path / "out").exists(), "nothing written before the checks pass"


def test_the_calibration_split_keeps_studies_whole():
    images = pd.DataFrame({"image_id": [f"i{k}" for k in range(40)], "study_id": [f"s{k // 4}" for k in range(40)]})
    split = split_images(images, 0.3, seed=3, min_images=4)
    studies = images.set_index("image_id")["study_id"]
    assert not {studies[i] for i in split.calibration} & {studies[i] for i in split.reported}
    assert len(split.calibration) == 12 and split == split_images(images, 0.3, seed=3, min_images=4)


def test_boxes_are_checked_row_by_row():
    sizes = pd.DataFrame({"image_id": ["a", "b"], "orig_height": [10, 10], "orig_width": [20, 20]})
    boxes = pd.DataFrame(
        {
            "image_id": ["a", "a", "b", "c", "b"],
            "x0": [0, 0, "x", 0, 19],
            "y0": [0, 0, 0, 0, 0],
            "x1": [20, 21, 5, 5, 19],
            "y1": [10, 5, 5, 5, 5],
        }
    )
    kept, skipped = check_boxes(boxes, sizes)
    assert list(kept["image_id"]) == ["a"] and list(skipped["file_row"]) == [3, 4, 6]
    assert list(skipped["reason"]) == [
        "outside its image",
        "not a number",
        "zero-sized or inverted (need x1 > x0, y1 > y0)",
    ]


@pytest.mark.slow  # a real run, or a whole page
def test_the_report_page_shows_the_localisation(tmp_path):
    from densecam_core.export.report import ReportRequest, write_report

    where = centres(2)
    run = run_with_maps(
        str(tmp_path / "store"),
        [1] * N,
        lambda i, h, w: blob(h, w, where[i, 0], where[i, 1], 0.08),
        size=SIZE,
        probs=[0.9] * N,
    )
    page = tmp_path / "report"
    write_report(run, page, ReportRequest(per_gallery=4))
    assert "No weak labels of this run yet" in (page / "index.html").read_text()
    boxes = box_table(run, where).assign(target="abnormal")  # the file names the class its boxes outline
    assert main(["localise", run.store_url, "--boxes", _csv(boxes, tmp_path), "--out", str(tmp_path / "out"),
                 "--methods", "cam", "--bootstrap", "50", "--min-split-images", "5"]) == 0  # fmt: skip
    write_report(run, tmp_path / "report2", ReportRequest(per_gallery=4))
    html = (tmp_path / "report2" / "index.html").read_text()
    assert "Best: <b>cam block 4 (abnormal)</b>" in html and "centred box (abnormal)" in html
    assert "per lesion size" in html


@pytest.mark.slow  # two localisations
def test_true_masks_replace_boxes_where_given_and_a_wrong_size_is_refused(on_target, tmp_path):
    from PIL import Image

    run, boxes = on_target
    masks = tmp_path / "masks"
    masks.mkdir()
    for row in boxes.iloc[::2].itertuples():
        mask = np.zeros((SIZE, SIZE), np.uint8)
        mask[int(row.y0) : int(row.y1), int(row.x0) : int(row.x1)] = 255
        Image.fromarray(mask).save(masks / f"{row.image_id}.png")
    split = split_of(run, boxes)
    request = LocaliseRequest(methods=("cam",), bootstrap=0)
    result = localise_run(run, boxes, split, request, masks_folder=str(masks))
    assert set(result.metrics["truth"]) == {"masks where given, else boxes"}
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(masks / f"{boxes['image_id'][0]}.png")
    with pytest.raises(ValueError, match="is 5x5; its image is 192x192"):
        localise_run(run, boxes, split, request, masks_folder=str(masks))
