"""The clustering on constructed map sets with known groups: well-separated groups are found, one group is not
split by the eigengap, and the flag rule raises nothing on a set with no outlier group."""

from __future__ import annotations

import numpy as np
import pytest
from support.audit_maps import blob

from densecam_core.analysis.clustering import cluster_count, spectral_clusters
from densecam_core.analysis.flagging import FlagRule, auroc, flag_within_group, robust_threshold
from densecam_core.analysis.spatial import map_vectors, spatial_scores

SIDE = 12


def centred(rng: np.random.Generator) -> np.ndarray:
    return blob(SIDE, SIDE, 0.5 + 0.15 * rng.standard_normal(), 0.5 + 0.15 * rng.standard_normal())


def corner(rng: np.random.Generator) -> np.ndarray:
    return blob(SIDE, SIDE, 0.1 + 0.02 * rng.standard_normal(), 0.1 + 0.02 * rng.standard_normal(), 0.08)


@pytest.mark.parametrize("n", [100, 400, 1000])
def test_one_group_is_not_split_by_the_eigengap(n: int):
    rng = np.random.default_rng(n)
    clustering = spectral_clusters(map_vectors(np.stack([centred(rng) for _ in range(n)])))
    assert clustering.count == 1, clustering.eigenvalues


def test_two_well_separated_groups_are_found():
    rng = np.random.default_rng(1)
    truth = np.arange(100) < 30
    maps = np.stack([corner(rng) if t else centred(rng) for t in truth])
    clustering = spectral_clusters(map_vectors(maps))
    assert clustering.count == 2
    corner_cluster = clustering.labels[truth][0]
    assert (clustering.labels == corner_cluster).tolist() == truth.tolist()


def test_a_corner_group_whose_maps_also_hold_the_body_is_found():
    """Token maps that keep a third of their peak on the body still separate (the eigenvalue ratio rule)."""
    rng = np.random.default_rng(2)
    truth = np.arange(120) < 30
    maps = np.stack([corner(rng) + 0.3 * centred(rng) if t else centred(rng) for t in truth])
    clustering = spectral_clusters(map_vectors(maps))
    assert clustering.count == 2
    assert len(set(clustering.labels[truth])) == 1 and clustering.labels[truth][0] not in clustering.labels[~truth]


def test_three_groups_are_found():
    rng = np.random.default_rng(3)
    kinds = np.repeat([0, 1, 2], 40)
    far = lambda: blob(SIDE, SIDE, 0.9, 0.9, 0.08)  # noqa: E731
    maps = np.stack([corner(rng) if k == 0 else far() if k == 1 else centred(rng) for k in kinds])
    assert spectral_clusters(map_vectors(maps)).count == 3


def test_the_count_rule_on_spectra_written_out():
    assert cluster_count(np.array([0, 0.045, 0.055, 0.108, 0.158, 0.203])) == 1  # a steady rise
    assert cluster_count(np.array([0, 0.0, 0.071, 0.089, 0.231])) == 2  # two components
    assert cluster_count(np.array([0, 0.012, 0.051, 0.069, 0.134])) == 2  # 0.051 / 0.012 > 3
    assert cluster_count(np.array([0, 0, 0, 0.073, 0.095])) == 3


def test_too_few_images_are_refused():
    with pytest.raises(ValueError, match="too few to cluster"):
        spectral_clusters(np.ones((5, 4), np.float32))


def test_the_robust_threshold_written_out():
    values = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    # median 3, absolute deviations 2, 1, 0, 1, 97 -> MAD 1 -> 3 + 2 * 1.4826
    assert robust_threshold(values, 2.0) == pytest.approx(3 + 2 * 1.4826)


def test_no_outlier_group_flags_nothing():
    """The null: one homogeneous group, over-split on purpose into 8 clusters, flags none of them."""
    rng = np.random.default_rng(4)
    maps = np.stack([centred(rng) for _ in range(400)])
    excess = spatial_scores(maps)["corner_excess"]
    labels = np.arange(400) % 8
    assert not any(flagged for flagged, _ in flag_within_group(labels, excess, FlagRule(), flaggable=True))


def test_a_corner_cluster_is_flagged_and_a_coarse_grid_never():
    rng = np.random.default_rng(5)
    truth = np.arange(200) < 30
    maps = np.stack([corner(rng) if t else centred(rng) for t in truth])
    excess = spatial_scores(maps)["corner_excess"]
    labels = truth.astype(int)
    verdicts = flag_within_group(labels, excess, FlagRule(), flaggable=True)
    assert [flagged for flagged, _ in verdicts] == [False, True] and np.median(excess[truth]) > verdicts[1][1]
    assert not any(flagged for flagged, _ in flag_within_group(labels, excess, FlagRule(), flaggable=False))


def test_auroc_equals_scikit_learns_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(6)
    scores = rng.integers(0, 5, 300).astype(float)
    labels = rng.integers(0, 2, 300).astype(float)
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_a_shortcut_split_over_two_clusters_is_flagged_in_both():
    """Cluster 0 (a token, most of the class) and cluster 2 (the same token, fewer images) against a clean
    cluster 1: judged against a rest that still held the other token cluster, the second would hide."""
    rng = np.random.default_rng(7)
    labels = np.repeat([0, 1, 2], [250, 117, 52])
    scores = np.concatenate([rng.normal(0.15, 0.03, 250), rng.normal(0.015, 0.01, 117), rng.normal(0.3, 0.05, 52)])
    verdicts = flag_within_group(labels, scores, FlagRule(), flaggable=True)
    assert [flagged for flagged, _ in verdicts] == [True, False, True]
    alone = flag_within_group(np.zeros(100, int), scores[:100], FlagRule(), flaggable=True)
    assert alone == [(False, alone[0][1])] and np.isnan(alone[0][1]), "one cluster: no rest to judge it by"
