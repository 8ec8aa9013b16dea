"""Batched comparisons of two sets of maps, one score per pair (randomisation and stability tests).

Each function takes two (N, h, w) tensors and returns (N,) scores, computed on the tensors' device
in one go: the evaluation compares 21 maps of every image at five randomisation stages, so a loop
over images (as scipy's ``spearmanr`` or scikit-image's ``structural_similarity`` would need) is
what this module avoids. ``tests/evaluation/test_similarity.py`` holds each to those references.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _flat(a: torch.Tensor) -> torch.Tensor:
    return a.reshape(a.shape[0], -1).double()


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson r of each pair of flattened maps; NaN where either map is flat (no variance)."""
    x, y = _flat(a), _flat(b)
    x = x - x.mean(dim=1, keepdim=True)
    y = y - y.mean(dim=1, keepdim=True)
    denominator = (x.square().sum(dim=1) * y.square().sum(dim=1)).sqrt()
    r = (x * y).sum(dim=1) / denominator
    return torch.where(denominator > 0, r, torch.full_like(r, float("nan"))).clamp(-1.0, 1.0)


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """(N, n) ranks 1..n along each row, tied values sharing the mean of their ranks (as scipy's rankdata)."""
    n = values.shape[1]
    order = torch.argsort(values, dim=1, stable=True)
    ordered = torch.gather(values, 1, order)
    # a tie group starts where the sorted value changes; each position's group id is the count of starts so far
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    group = torch.cumsum(starts.long(), dim=1) - 1
    positions = torch.arange(1, n + 1, device=values.device, dtype=torch.float64).expand_as(ordered)
    sums = torch.zeros_like(positions).scatter_add_(1, group, positions)
    counts = torch.zeros_like(positions).scatter_add_(1, group, torch.ones_like(positions))
    mean_rank = torch.gather(sums / counts.clamp(min=1), 1, group)
    ranks = torch.empty_like(mean_rank)
    ranks.scatter_(1, order, mean_rank)
    return ranks


def _flat_only_b(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairs whose ``b`` is flat while ``a`` is not."""
    x, y = _flat(a), _flat(b)
    return (x.max(dim=1).values > x.min(dim=1).values) & (y.max(dim=1).values <= y.min(dim=1).values)


def spearman(a: torch.Tensor, b: torch.Tensor, *, flat_value: float = float("nan")) -> torch.Tensor:
    """Spearman's rank correlation of each pair: Pearson r of the average ranks (ties as scipy).

    NaN where a map is flat; ``flat_value`` where only ``b`` is (the randomisation test scores a
    randomised map that lost all structure 0: it keeps nothing of the trained map's ranking).
    """
    r = pearson(average_ranks(_flat(a)), average_ranks(_flat(b)))
    return torch.where(_flat_only_b(a, b), torch.full_like(r, flat_value), r)


def _gaussian_window(device: torch.device) -> torch.Tensor:
    x = torch.arange(SSIM_WINDOW, dtype=torch.float64, device=device) - (SSIM_WINDOW - 1) / 2
    g = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    return g / g.sum()


def _filter(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of (N, 1, H, W), 'valid' region only (no padding)."""
    x = F.conv2d(x, g.reshape(1, 1, 1, -1))
    return F.conv2d(x, g.reshape(1, 1, -1, 1))


def scaled01(maps: torch.Tensor, flat_value: float = float("nan")) -> torch.Tensor:
    """Each map min-max scaled to [0, 1]; a flat map becomes ``flat_value`` everywhere."""
    flat = _flat(maps)
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    span = high - low
    scaled = (flat - low) / torch.where(span > 0, span, torch.ones_like(span))
    scaled = torch.where(span > 0, scaled, torch.full_like(scaled, flat_value))
    return scaled.reshape(maps.shape)


def ssim(
    a: torch.Tensor, b: torch.Tensor, size: tuple[int, int] | None = None, *, flat_value: float = float("nan")
) -> torch.Tensor:
    """Mean SSIM (Wang et al. 2004: Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, data range 1) of each pair.

    Both maps are first bilinearly upsampled to ``size`` (``align_corners=False``; the input grid, so
    that coarse block-4 maps have room for the window) and min-max scaled to [0, 1]. NaN when either
    map is flat, except that with a finite ``flat_value`` a flat ``b`` is compared as that constant
    (the randomisation test: a map with no structure left). Equal to scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1)`` on the same scaled maps.
    """
    if size is not None:
        a = F.interpolate(a[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
        b = F.interpolate(b[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    if min(a.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs maps of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels; got {tuple(a.shape[-2:])}")
    x, y = scaled01(a)[:, None], scaled01(b, flat_value)[:, None]
    g = _gaussian_window(a.device)
    mx, my = _filter(x, g), _filter(y, g)
    vx = _filter(x * x, g) - mx * mx
    vy = _filter(y * y, g) - my * my
    cxy = _filter(x * y, g) - mx * my
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(dim=1)


def max_change(original: torch.Tensor, perturbed: torch.Tensor) -> torch.Tensor:
    """The largest absolute change of any map value, relative to the original map's range; NaN for a flat original."""
    x, y = _flat(original), _flat(perturbed)
    span = x.max(dim=1).values - x.min(dim=1).values
    change = (y - x).abs().max(dim=1).values
    return torch.where(span > 0, change / span, torch.full_like(span, float("nan")))
