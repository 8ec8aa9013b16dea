"""Plain references for the Explainer: torchvision's modules step by step, one autograd call per block, per-channel terms summed in float64.

The maps are compared on the network the Explainer differentiates (``explained_network``: its
BatchNorm-folded copy, in its memory layout), and that network's values with the original's apart
(``tests/cam/test_explainer.py``). Why not the maps on the original network: a ReLU whose input lies
within float rounding of zero opens on one network and stays shut on the other (another layout runs
other oneDNN kernels, folding rounds differently), and its gradient then moves by far more than
rounding: up to 4.5e-3 of the terms' magnitude for a DenseNet201 at block 1 (measured on a 2-core Xeon
with AMX; 1.7e-3 for other weights on an EPYC), on whatever weights and CPU happen to put an input
there. No tolerance bounds that; the same network leaves only rounding (4.6e-7, below).
"""

from __future__ import annotations

import torch


def explained_network(explainer, x: torch.Tensor) -> tuple[torch.nn.Module, torch.Tensor]:
    """The network ``explainer`` differentiates (its frozen, BatchNorm-folded copy) and ``x`` in its layout."""
    return explainer.net, x.contiguous(memory_format=torch.channels_last) if explainer.channels_last else x


def reference_forward(model: torch.nn.Module, x: torch.Tensor) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """The torchvision modules, step by step, keeping each block activation (differentiable through the
    input, so a frozen copy's activations have gradients too)."""
    f = model.features
    h = x.detach().requires_grad_(True) if torch.is_grad_enabled() else x
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
"""Maps against the plain float32 reference on the same network: the Explainer's one backward pass for
every block and target sums in other orders than one autograd call per block, so gradients differ by
rounding compounded over the layers the pass crosses. Measured on a 2-core Xeon with AMX: at most
4.6e-7 of the terms' magnitude over DenseNet121 (14 and 18 outputs, 1 and 3 channels) and DenseNet201;
against the original network on an AVX2-only EPYC, before gate flips were understood, 6.5e-5 (the bound
keeps a wide margin over both); a wrong formula (a missing weight, a wrong sign, another block) errs by
order 1."""


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
