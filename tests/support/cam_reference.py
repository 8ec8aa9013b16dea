"""Plain references for the Explainer: torchvision's modules step by step, one autograd call per block, per-channel terms summed in float64."""

from __future__ import annotations

import torch


def reference_forward(model: torch.nn.Module, x: torch.Tensor) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """The unmodified torchvision modules, step by step, keeping each block activation."""
    f = model.features
    h = x
    acts: dict[int, torch.Tensor] = {}
    for name, module in f.named_children():
        h = module(h)
        if name.startswith("transition"):
            acts[int(name[-1])] = h
    acts[4] = torch.relu(h)  # out of place: torchvision's own forward uses an in-place ReLU here
    logits = model.classifier(acts[4].mean(dim=(2, 3)))
    return acts, logits


def reference_terms(model: torch.nn.Module, x: torch.Tensor, block: int, target: int) -> dict[str, torch.Tensor]:
    """Every method at one block before its final ReLU, as per-channel terms written out one by one and
    summed over channels in float64. Returns, per method, (n, 2, h, w): the signed sum, and the sum of the
    terms' magnitudes (times their weights' condition numbers), the scale float32 rounding errors grow with."""
    acts, logits = reference_forward(model, x)
    a = acts[block]
    (g,) = torch.autograd.grad(logits[:, target].sum(), a)
    a, g = a.detach(), g.detach()  # (n, channels, h, w)

    def per_channel(values: torch.Tensor) -> torch.Tensor:  # a sum over each channel's pixels, kept broadcastable
        return values.sum(dim=(2, 3), keepdim=True)

    alpha = g**2 / (2 * g**2 + per_channel(a) * g**3 + 1e-6)
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    terms = {
        "gradcam": g.mean(dim=(2, 3), keepdim=True) * a,
        "gradcampp": per_channel(alpha * torch.relu(g)) * a,
        "layercam": torch.relu(g) * a,
        "xgradcam": per_channel(g * a) / (per_channel(a) + 1e-7) * a,
        "hirescam": g * a,
    }
    # XGrad-CAM divides by the channel's activation sum, which may nearly cancel where activations are
    # signed (blocks 1-3 tap transitions, before any ReLU): rounding errors grow by the sums' condition
    # numbers, so its terms' magnitudes carry them
    condition = per_channel((g * a).abs()) / per_channel(g * a).abs().clamp_min(1e-30) + per_channel(a.abs()) / (
        per_channel(a) + 1e-7
    ).abs().clamp_min(1e-30)
    out = {}
    for method, term in terms.items():
        magnitude = term.abs() * (condition if method == "xgradcam" else 1.0)
        out[method] = torch.stack([term.double().sum(dim=1), magnitude.double().sum(dim=1)], dim=1).float()
    return out


REFERENCE_REL = 1e-3
"""Maps against the plain float32 reference: the Explainer runs BatchNorm fused into the convolutions
and sums in other orders, so activations and gradients differ by rounding compounded over every layer
the pass crosses. Measured on an AVX2-only EPYC: at most 6.5e-5 of the terms' magnitude (multi-class
LayerCAM at block 2, whose gradients cross two dense blocks), 1e-6 for most maps; a wrong formula (a
missing weight, a wrong sign, another block) errs by order 1."""


BATCH_REL = 1e-4
"""One image alone against the same image in a batch of three: the same arithmetic in another
blocking of the kernels. Measured on an AVX2-only EPYC: at most 9.2e-7 of the terms' magnitude, where
the old bound, relative to a near-flat map's own maximum (2e-4), measured 2.75e-3."""


def assert_close_maps(actual: torch.Tensor, expected: torch.Tensor, scale: torch.Tensor, rel: float) -> None:
    """``actual`` within ``rel`` of ``scale``'s maximum, the magnitude of the terms the map sums.

    Why not the map's own maximum: a near-flat map (ReLU of a sum of terms that cancel) has a maximum
    far below the terms' rounding errors, so a tolerance relative to it fails by the CPU's summation
    order (AVX2 vs AVX-512 kernels), not by a wrong map."""
    err = (actual - expected).abs().max() / scale.abs().max().clamp_min(1e-30)
    assert err < rel, f"max error {err:.2e} of the summed terms' magnitude"
