"""The methods as pure functions of (activations A, gradients g), both (B, C, h, w) float32 -> (B, h, w): the five
gradient methods, and Eigen-CAM, which reads the activations alone.

Why pure functions: what a method computes is separate from how the activations and gradients were
obtained (the Explainer's one pass), so each is read, tested and added on its own. Each is registered by name in
``vocabulary.METHOD_REGISTRY`` (a ``Method`` naming this module's function), which the Explainer reads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_EPS_GRADCAMPP = 1e-6
_EPS_XGRADCAM = 1e-7


def gradcam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Selvaraju et al.: channel weights are the spatial mean of the gradient."""
    return F.relu(torch.einsum("bchw,bc->bhw", a, g.mean(dim=(2, 3))))


def gradcampp(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Chattopadhay et al., the closed form pytorch-grad-cam uses (alpha = 0 where g = 0)."""
    g2 = g * g
    denom = 2 * g2 + a.sum(dim=(2, 3), keepdim=True) * (g2 * g) + _EPS_GRADCAMPP
    alpha = torch.where(g != 0, g2 / denom, torch.zeros_like(g))
    weights = (alpha * F.relu(g)).sum(dim=(2, 3))
    return F.relu(torch.einsum("bchw,bc->bhw", a, weights))


def layercam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Jiang et al.: positive gradients weight every location separately."""
    return F.relu((F.relu(g) * a).sum(dim=1))


def xgradcam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Fu et al.: activation-weighted gradient sums, normalised by the activation sum."""
    weights = (g * a).sum(dim=(2, 3)) / (a.sum(dim=(2, 3)) + _EPS_XGRADCAM)
    return F.relu(torch.einsum("bchw,bc->bhw", a, weights))


def hirescam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Draelos & Carin: element-wise gradient x activation, summed over channels."""
    return F.relu((g * a).sum(dim=1))


def eigencam(a: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
    """Muhammad & Yeasin 2020: the projection of each location's (centred) activation vector on the first
    principal component of the block's activations; no gradient, so one map for every target.

    The component's sign is arbitrary (an SVD's); it is chosen so that the projection correlates positively with
    the mean activation over channels (the map shows where the block is active, not where it is quiet), then the
    negative part is set to 0 like the other methods'. The component comes from the smaller Gram matrix
    (locations or channels), which gives the same projection as pytorch-grad-cam's full SVD.
    """
    b, c, h, w = a.shape
    x = a.reshape(b, c, h * w).transpose(1, 2).double()  # (B, locations, channels)
    x = x - x.mean(dim=1, keepdim=True)
    if h * w <= c:
        values, vectors = torch.linalg.eigh(x @ x.transpose(1, 2))  # ascending; the last is the largest
        projection = vectors[..., -1] * values[..., -1:].clamp(min=0).sqrt()
    else:
        _, vectors = torch.linalg.eigh(x.transpose(1, 2) @ x)
        projection = x @ vectors[..., -1:]
        projection = projection[..., 0]
    activity = a.reshape(b, c, h * w).mean(dim=1).double()
    activity = activity - activity.mean(dim=1, keepdim=True)
    sign = torch.where((projection * activity).sum(dim=1, keepdim=True) < 0, -1.0, 1.0)
    return F.relu(projection * sign).reshape(b, h, w).float()
