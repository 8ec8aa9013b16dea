"""The five gradient methods as pure functions of (activations A, gradients g), both (B, C, h, w) float32 -> (B, h, w).

Why pure functions: what a method computes is separate from how the activations and gradients were
obtained (the Explainer's one pass), so each is read, tested and added on its own.
"""

from __future__ import annotations

from collections.abc import Callable

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


METHOD_FUNCTIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "gradcam": gradcam,
    "gradcampp": gradcampp,
    "layercam": layercam,
    "xgradcam": xgradcam,
    "hirescam": hirescam,
}
