"""The batch scorer: every metric against a plain reference, seeded baselines, and the randomisation test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from densecam_core.cam.explainer import Explainer
from densecam_core.data.geometry import Geometry
from densecam_core.evaluation.faithfulness import deletion_insertion
from densecam_core.evaluation.quality import metrics_table, verdicts
from densecam_core.evaluation.randomisation import RANDOMISATION_STAGES, cascade
from densecam_core.evaluation.scorer import BatchScorer, ScoreSettings, image_seed, random_maps, validate_families
from densecam_core.evaluation.similarity import spearman
from densecam_core.vocabulary import MapKey

SIZE = 64


def _pixels(count: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    grey = torch.randint(0, 256, (count, 1, SIZE, SIZE), generator=g, dtype=torch.uint8)
    return grey.expand(-1, 3, -1, -1).clone()


def _stored(explainer: Explainer, pixels: torch.Tensor) -> dict:
    result = explainer(pixels)
    stored = {MapKey("cam"): result.cam[:, 0]}
    for method, per_block in result.maps.items():
        stored.update({MapKey(method, b): v[:, 0] for b, v in per_block.items()})
    return stored


def test_unknown_metric_is_refused():
    with pytest.raises(ValueError, match="unknown metrics.*choose from"):
        validate_families("deletion,faithfulness")


def test_deletion_rows_equal_the_library_function_on_the_plain_model(model):
    pixels = _pixels(2)
    stored = _stored(Explainer(model, methods=("gradcam",)), pixels)
    scorer = BatchScorer(model, ScoreSettings(metrics=("deletion", "insertion"), steps=4), methods=("gradcam",))
    rows = scorer.score(pixels, stored, ["a", "b"])
    assert set(rows["metric"]) == {"deletion_auc", "insertion_auc"}
    assert set(zip(rows["method"], rows["block"])) == {("cam", 4), *(("gradcam", b) for b in (1, 2, 3, 4))} | {
        ("random", b) for b in (1, 2, 3, 4)
    }
    for key in [MapKey("cam"), MapKey("gradcam", 2), MapKey("random", 3)]:
        maps = (
            stored[key]
            if key.method != "random"
            else random_maps(["a", "b"], stored[MapKey("gradcam", 3)].shape[-2:], 0, 3)
        )
        want = deletion_insertion(model.eval(), pixels, maps, steps=4)  # the unfused model, NCHW: plain
        got = rows[(rows["method"] == key.method) & (rows["block"] == key.block)].set_index(["metric", "image_id"])[
            "value"
        ]
        for n, image_id in enumerate(["a", "b"]):
            assert got[("deletion_auc", image_id)] == pytest.approx(float(want.deletion_auc[n]), abs=1e-5, nan_ok=True)
            assert got[("insertion_auc", image_id)] == pytest.approx(
                float(want.insertion_auc[n]), abs=1e-5, nan_ok=True
            )
    assert rows["value"].notna().sum() > len(rows) // 2, "most maps are not flat: the comparison compared numbers"


@pytest.mark.slow
def test_baselines_and_noise_depend_on_the_image_not_its_batch(model):
    pixels = _pixels(2, seed=3)
    settings = ScoreSettings(metrics=("deletion", "stability"), steps=2)
    scorer = BatchScorer(model, settings, methods=("layercam",))
    stored = _stored(Explainer(model, methods=("layercam",)), pixels)
    together = scorer.score(pixels, stored, ["a", "b"])
    alone = scorer.score(pixels[1:], {k: v[1:] for k, v in stored.items()}, ["b"])
    keys = ["method", "block", "metric"]
    merged = together[together["image_id"] == "b"].merge(alone, on=keys, suffixes=("", "_alone"))
    assert len(merged) == len(alone) > 0
    # equal up to float rounding (a batch of two and a batch of one take different kernels)
    np.testing.assert_allclose(merged["value"], merged["value_alone"], rtol=1e-4, atol=1e-5)
    assert image_seed(0, "a", "x") != image_seed(0, "b", "x") != image_seed(1, "b", "x")


def test_stability_equals_a_plain_reference(model):
    """Per image and sample: the seeded noise, one Explainer call, numpy's Pearson r and max change."""
    from densecam_core.model.conventions import normalise01

    pixels = _pixels(2, seed=5)
    scorer = BatchScorer(model, ScoreSettings(metrics=("stability",)), methods=("layercam",))
    rows = scorer.score(pixels, {}, ["p", "q"])
    explainer = Explainer(model, methods=("layercam",))
    for n, image_id in enumerate(["p", "q"]):
        original = explainer(pixels[n : n + 1]).maps["layercam"][3][0, 0].numpy().ravel()
        rs, changes = [], []
        for sample in range(2):
            g = torch.Generator().manual_seed(image_seed(0, image_id, f"noise-{sample}"))
            noise = torch.rand((1, SIZE, SIZE), generator=g)
            noisy = pixels[n : n + 1].float() + (noise * 2 - 1) * 0.5
            other = explainer(normalise01(noisy / 255.0)).maps["layercam"][3][0, 0].numpy().ravel()
            rs.append(np.corrcoef(original, other)[0, 1])
            changes.append(np.abs(other - original).max() / (original.max() - original.min()))
        got = rows[(rows["image_id"] == image_id) & (rows["method"] == "layercam") & (rows["block"] == 3)]
        got = got.set_index("metric")["value"]
        assert got["stability_r"] == pytest.approx(np.mean(rs), abs=1e-4)
        assert got["stability_max_change"] == pytest.approx(max(changes), rel=1e-3, abs=1e-6)


def test_localisation_rows_per_map(model):
    pixels = _pixels(2, seed=7)
    scorer = BatchScorer(model, ScoreSettings(metrics=("localisation",)), methods=("gradcam",))
    stored = {MapKey("cam"): torch.zeros(2, 2, 2)}
    stored[MapKey("cam")][:, 0, 0] = 1.0  # the top-left quarter of each image
    geometries = [Geometry(40, 40, SIZE, "stretch")] * 2
    boxes = {"a": np.array([[0, 0, 20, 20]])}  # image a: its box is the top-left quarter; b has none
    rows = scorer.score(pixels, stored, ["a", "b"], geometries=geometries, boxes=boxes)
    cam = rows[(rows["method"] == "cam")].set_index(["image_id", "metric"])["value"]
    assert cam[("a", "pointing_game")] == 1.0
    assert 0.5 < cam[("a", "relevance_mass")] <= 1.0  # bilinear upsampling spreads a little mass outside
    assert 0.5 < cam[("a", "otsu_iou")] <= 1.0
    assert np.isnan(cam[("b", "pointing_game")])  # no box: not a localisation case


def test_localisation_of_a_batch_without_any_box_is_nan_not_missing(model):
    """A shard of the sample with no box used to give no rows at all, and its part failed on every retry."""
    scorer = BatchScorer(model, ScoreSettings(metrics=("localisation",)), methods=("gradcam",))
    stored = {MapKey("cam"): torch.ones(2, 2, 2)}
    rows = scorer.score(_pixels(2, seed=7), stored, ["a", "b"], geometries=[Geometry(40, 40, SIZE, "stretch")] * 2)
    assert len(rows) > 0 and rows["value"].isna().all()
    assert set(rows["metric"]) == {"pointing_game", "relevance_mass", "otsu_iou"}


def test_relevance_mass_and_otsu_iou_by_hand():
    from densecam_core.analysis.regions import box_mask
    from densecam_core.evaluation.localisation import otsu_iou, relevance_mass

    heatmap = np.zeros((10, 10))
    heatmap[2:6, 2:6] = 1.0
    heatmap[8, 8] = -5.0  # negative values carry no relevance
    mask = box_mask(np.array([[2, 2, 4, 6]]), 10, 10)  # x 2..3, y 2..5: half of the hot square
    assert relevance_mass(heatmap, mask) == pytest.approx(0.5)
    assert otsu_iou(heatmap, mask) == pytest.approx(8 / 16)
    assert np.isnan(otsu_iou(np.ones((4, 4)), mask[:4, :4])) and np.isnan(relevance_mass(-heatmap.clip(0), mask))


def test_otsu_threshold_equals_scikit_image():
    threshold_otsu = pytest.importorskip("skimage.filters").threshold_otsu
    from densecam_core.analysis.otsu import otsu_threshold

    rng = np.random.default_rng(0)
    for _ in range(5):
        values = np.concatenate([rng.normal(0.2, 0.05, 400), rng.normal(0.7, 0.1, 200)]).clip(0, 1)
        assert otsu_threshold(values) == pytest.approx(threshold_otsu(values, nbins=256))


@pytest.mark.slow
def test_cascade_reinitialises_top_down_and_leaves_the_model(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stages = cascade(model, seed=4)
    assert len(stages) == len(RANDOMISATION_STAGES)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    first, last = stages[0].state_dict(), stages[-1].state_dict()
    assert not torch.equal(first["classifier.weight"], before["classifier.weight"])
    assert torch.equal(
        first["features.denseblock4.denselayer1.conv1.weight"], before["features.denseblock4.denselayer1.conv1.weight"]
    )
    assert torch.equal(stages[1].state_dict()["classifier.weight"], first["classifier.weight"]), "cascading"
    assert not torch.equal(last["features.conv0.weight"], before["features.conv0.weight"])
    assert torch.equal(last["features.norm0.running_var"], torch.ones_like(last["features.norm0.running_var"]))
    again = cascade(model, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(again[2].state_dict().values(), stages[2].state_dict().values()))


def _sobel(pixels: torch.Tensor) -> torch.Tensor:
    """Image edges: a "map" that never looks at the model."""
    grey = pixels[:, :1].float()
    kx = torch.tensor([[[[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]]])
    gx, gy = F.conv2d(grey, kx, padding=1), F.conv2d(grey, kx.transpose(2, 3), padding=1)
    return (gx**2 + gy**2).sqrt()[:, 0]


@pytest.mark.slow  # seconds of whole shards; the fast loop keeps a smaller test of this path
def test_a_map_that_ignores_the_weights_fails_the_randomisation_test_and_cam_passes(model):
    """Adebayo et al.'s test through the product's code: cascade, Explainer, Spearman of |maps|, verdicts."""
    pixels = _pixels(6, seed=11)
    for n in range(6):  # structure for edges to find: a bright square
        pixels[n, :, 10 + 5 * n : 30 + 5 * n, 12:40] = 250
    ids = [f"img{n}" for n in range(6)]
    trained_cam = Explainer(model, methods=("gradcam",))(pixels).cam[:, 0]
    edges = _sobel(pixels)
    rows = []
    for stage, randomised in enumerate(cascade(model, seed=0), start=1):
        cam = Explainer(randomised, methods=("gradcam",))(pixels).cam[:, 0]
        for method, a, b in (("cam", trained_cam, cam), ("edges", edges, _sobel(pixels))):
            for image_id, value in zip(ids, spearman(a.abs(), b.abs()).tolist()):
                rows.append((image_id, method, 4, "randomisation_spearman", stage, value))
    scores = pd.DataFrame(rows, columns=["image_id", "method", "block", "metric", "stage", "value"])
    table = metrics_table(scores, pd.DataFrame({"image_id": ids, "study_id": ids}), resamples=100)
    verdict = {r["method"]: r["passes_randomisation"] for r in verdicts(table).to_dict("records")}
    assert verdict == {"cam": True, "edges": False}
