"""The batched comparisons against scipy / scikit-image, one pair at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import pearsonr, spearmanr

from densecam_core.evaluation.similarity import average_ranks, max_change, pearson, scaled01, spearman, ssim


def _maps(seed: int, shape=(6, 12, 12)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(shape, generator=g)
    b = 0.5 * a + torch.rand(shape, generator=g)
    a[0, :6] = 0.0  # ties, as a ReLU'd map has
    b[1] = torch.round(b[1] * 3)  # heavy ties
    return a, b


def test_average_ranks_equal_scipy_rankdata():
    from scipy.stats import rankdata

    values = torch.tensor([[3.0, 1.0, 3.0, 2.0, 1.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    expected = np.stack([rankdata(v) for v in values.numpy()])
    assert np.array_equal(average_ranks(values).numpy(), expected)


def test_spearman_and_pearson_equal_scipy_per_pair():
    a, b = _maps(0)
    ours_s, ours_p = spearman(a, b).numpy(), pearson(a, b).numpy()
    for n in range(a.shape[0]):
        x, y = a[n].flatten().numpy(), b[n].flatten().numpy()
        assert ours_s[n] == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
        assert ours_p[n] == pytest.approx(pearsonr(x, y).statistic, abs=1e-6)


def test_flat_maps_give_nan():
    a, b = _maps(1, (2, 12, 12))
    b[0] = 0.25
    assert np.isnan(spearman(a, b)[0].item()) and np.isnan(pearson(a, b)[0].item()) and np.isnan(ssim(a, b)[0].item())
    assert np.isnan(max_change(b, a)[0].item()) and np.isfinite(max_change(b, a)[1].item())


def test_ssim_equals_scikit_image_on_the_upsampled_scaled_maps():
    structural_similarity = pytest.importorskip("skimage.metrics").structural_similarity
    a, b = _maps(2, (4, 10, 10))
    size = (40, 40)
    ours = ssim(a, b, size).numpy()
    for n in range(a.shape[0]):
        up = [F.interpolate(t[n][None, None], size=size, mode="bilinear", align_corners=False)[0, 0] for t in (a, b)]
        x, y = (scaled01(u[None])[0].numpy() for u in up)
        expected = structural_similarity(
            x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
        )
        assert ours[n] == pytest.approx(expected, abs=1e-9)
    assert ssim(a, a, size).numpy() == pytest.approx(np.ones(4))


def test_max_change_is_relative_to_the_original_range():
    original = torch.tensor([[[0.0, 2.0], [1.0, 1.0]]])
    perturbed = torch.tensor([[[0.5, 2.0], [1.0, 0.0]]])
    assert max_change(original, perturbed).item() == pytest.approx(1.0 / 2.0)
