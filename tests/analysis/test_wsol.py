"""MaxBoxAccV2, PxAP and mIoU against a plain implementation of their definitions (Choe et al. 2020, CheXlocalize),
written here threshold by threshold with scikit-image's labelling (not the scipy labelling densecam uses)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import label, regionprops

from densecam_core.analysis.regions import best_ious, box_iou, components_at, level_histograms, levels, regions
from densecam_core.analysis.wsol import (
    DELTAS,
    best_level,
    box_accuracy,
    mask_ious,
    max_box_accuracy,
    pixel_average_precision,
)

STEPS = 100


def constructed(rng: np.random.Generator, n: int = 12) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(map, true boxes (m, 4), true mask) per image: sums of Gaussian bumps and a little noise (several
    components at many thresholds), one or two boxes each, the mask their union."""
    images = []
    for _ in range(n):
        h, w = rng.integers(30, 60, size=2)
        yy, xx = np.mgrid[0:h, 0:w]
        values = rng.normal(0, 0.02, (h, w))
        for _ in range(rng.integers(1, 4)):
            cy, cx, s = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(3, 10)
            values += rng.uniform(0.3, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s**2))
        boxes = []
        for _ in range(rng.integers(1, 3)):
            x0, y0 = rng.uniform(0, w - 8), rng.uniform(0, h - 8)
            boxes.append([x0, y0, min(w, x0 + rng.uniform(5, 25)), min(h, y0 + rng.uniform(5, 25))])
        boxes = np.array(boxes)
        mask = np.zeros((h, w), bool)
        for x0, y0, x1, y1 in boxes:
            mask[int(np.ceil(y0)) : int(np.ceil(y1)), int(np.ceil(x0)) : int(np.ceil(x1))] = True
        images.append((values.astype(np.float32), boxes, mask))
    return images


def plain_iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def reference_regions(values: np.ndarray, tau: float) -> list[tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1 exclusive) of the 8-connected components of {max(v, 0) >= tau * max}."""
    positive = np.clip(values, 0, None)
    if positive.max() <= 0:
        return []
    kept = positive / positive.max() >= tau
    return [(r.bbox[1], r.bbox[0], r.bbox[3], r.bbox[2]) for r in regionprops(label(kept, connectivity=2))]


def reference_max_box_acc_v2(images) -> tuple[float, dict[float, float]]:
    """Choe et al.: for each delta, the best over thresholds of the share of images where any component's box
    reaches IoU delta with any true box; MaxBoxAccV2 their mean."""
    per_delta = {}
    for delta in DELTAS:
        best = 0.0
        for k in range(STEPS):
            correct = 0
            for values, boxes, _ in images:
                found = reference_regions(values, k / STEPS)
                correct += any(plain_iou(b, t) >= delta for b in found for t in boxes)
            best = max(best, correct / len(images))
        per_delta[delta] = best
    return float(np.mean(list(per_delta.values()))), per_delta


def reference_pxap(images) -> float:
    """Pixel precision and recall over all pixels of all images at each threshold; the sum of precision times
    the recall gained, from the highest threshold down (recall 0 above it)."""
    precisions, recalls = [], []
    truth = sum(int(m.sum()) for _, _, m in images)
    for k in reversed(range(STEPS)):
        tp = fp = 0
        for values, _, mask in images:
            positive = np.clip(values, 0, None)
            kept = positive / positive.max() >= k / STEPS
            tp += int((kept & mask).sum())
            fp += int((kept & ~mask).sum())
        precisions.append(tp / (tp + fp) if tp + fp else 1.0)
        recalls.append(tp / truth)
    ap, previous = 0.0, 0.0
    for p, r in zip(precisions, recalls):
        ap += p * (r - previous)
        previous = r
    return ap


def tallies(images):
    ious, inside, outside = [], [], []
    for values, boxes, mask in images:
        level_map = levels(values, STEPS)
        every, _ = best_ious(level_map, boxes, STEPS)
        ious.append(every)
        a, b = level_histograms(level_map, mask, STEPS)
        inside.append(a)
        outside.append(b)
    return np.array(ious), np.array(inside), np.array(outside)


@pytest.fixture(scope="module")
def images():
    return constructed(np.random.default_rng(7))


def test_max_box_acc_v2_equals_the_definition(images):
    ious, _, _ = tallies(images)
    expected_v2, expected = reference_max_box_acc_v2(images)
    got = max_box_accuracy(ious)
    for delta in DELTAS:
        assert got[delta] == pytest.approx(expected[delta], abs=1e-6)
    assert np.mean(list(got.values())) == pytest.approx(expected_v2, abs=1e-6)
    assert 0.0 < expected_v2 < 1.0, "the constructed images are neither all right nor all wrong"


def test_pxap_equals_the_definition(images):
    _, inside, outside = tallies(images)
    assert float(pixel_average_precision(inside.sum(0), outside.sum(0))) == pytest.approx(
        reference_pxap(images), abs=1e-6
    )


def test_mask_iou_per_threshold_equals_the_definition(images):
    _, inside, outside = tallies(images)
    got = mask_ious(inside, outside)
    for i, (values, _, mask) in enumerate(images):
        positive = np.clip(values, 0, None)
        for k in (0, 17, 50, 83, 99):
            kept = positive / positive.max() >= k / STEPS
            expected = (kept & mask).sum() / (kept | mask).sum()
            assert got[i, k] == pytest.approx(expected, abs=1e-6)


def test_the_largest_component_and_every_component_and_their_masks():
    values = np.zeros((20, 30), np.float32)
    values[2:6, 2:12] = 1.0  # 40 pixels
    values[10:18, 20:28] = 0.8  # 64 pixels: the largest at a threshold both pass
    found = components_at(levels(values, STEPS), 50)
    assert sorted(map(tuple, found.boxes)) == [(2, 2, 12, 6), (20, 10, 28, 18)]
    assert tuple(found.largest[0]) == (20, 10, 28, 18)
    assert tuple(components_at(levels(values, STEPS), 90).largest[0]) == (2, 2, 12, 6)
    cut = regions(values, 50, STEPS, largest_only=False)
    assert [r.box for r in cut] == [(20, 10, 28, 18), (2, 2, 12, 6)]
    assert cut[0].mask.sum() == 64 and cut[0].score == pytest.approx(64 * 0.8 / (64 * 0.8 + 40))
    assert box_iou(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 10]]))[0, 0] == pytest.approx(50 / 150)


def test_a_map_without_positive_values_has_no_region():
    flat = -np.ones((10, 10), np.float32)
    every, largest = best_ious(levels(flat, STEPS), np.array([[0, 0, 5, 5]]), STEPS)
    assert not every.any() and not largest.any() and regions(flat, 0, STEPS, largest_only=False) == []


def test_box_accuracy_and_the_plateau_choice():
    ious = np.array([[0.6, 0.6, 0.2], [0.1, 0.6, 0.6]])
    assert list(box_accuracy(ious, 0.5)) == [0.5, 1.0, 0.5]
    assert best_level(np.array([0.1, 0.5, 0.5, 0.5, 0.2])) == 2
    assert best_level(np.array([0.9, 0.1])) == 0


def test_the_baselines_shortcut_equals_labelling_on_a_gaussian():
    from densecam_core.analysis.localise import centre_map
    from densecam_core.data.geometry import Geometry

    values = Geometry(70, 50, 192, "stretch").to_original(centre_map())
    truth = np.array([[10.0, 20.0, 30.0, 45.0]])
    level_map = levels(values, STEPS)
    labelled = best_ious(level_map, truth, STEPS)
    shortcut = best_ious(level_map, truth, STEPS, unimodal=True)
    assert np.array_equal(labelled[0], shortcut[0]) and np.array_equal(labelled[1], shortcut[1])
