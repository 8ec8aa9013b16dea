"""Inference-only rewrite of a DenseNet for explanation passes.

Why: in eval mode every BatchNorm is a per-channel affine map. The stem's conv0+norm0 run without
gradients and fold into one convolution. In the dense layers, ``norm2`` becomes one ``addcmul``
(native BatchNorm is a slow kernel in channels_last on CPU). Folding ``norm2`` into ``conv1``
was faster still, but with channels_last on CPU it moved the block-1/2 gradients away from a
float64 reference beyond what tests/cam/test_explainer.py allows, so it is not done.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import nn


def _scale_shift(norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = norm.weight.detach() / torch.sqrt(norm.running_var + norm.eps)
    return scale, norm.bias.detach() - norm.running_mean * scale


def fold_batchnorm(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> nn.Conv2d:
    """Return a convolution equal to ``norm(conv(x))`` for a BatchNorm in eval mode."""
    scale, shift = _scale_shift(norm)
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(shift)
    with torch.no_grad():
        fused.weight.copy_(conv.weight.detach() * scale.reshape(-1, 1, 1, 1))
        fused.bias.copy_(bias * scale + shift)
    return fused


class ChannelAffine(nn.Module):
    """An eval-mode BatchNorm as ``shift + x * scale`` in one fused element-wise kernel."""

    def __init__(self, norm: nn.BatchNorm2d) -> None:
        super().__init__()
        scale, shift = _scale_shift(norm)
        self.register_buffer("scale", scale.reshape(1, -1, 1, 1).clone())
        self.register_buffer("shift", shift.reshape(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x, self.scale)


def _copy_tensor(tensor: torch.Tensor | None, memo: dict[int, object]) -> torch.Tensor | None:
    """A detached copy of a parameter or buffer; tied tensors stay tied through ``memo``."""
    if tensor is None or id(tensor) in memo:
        return None if tensor is None else memo[id(tensor)]  # type: ignore[return-value]
    if type(tensor) is nn.Parameter:
        copied: torch.Tensor = nn.Parameter(tensor.detach().clone(), requires_grad=tensor.requires_grad)
    elif type(tensor) is torch.Tensor:
        copied = tensor.detach().clone()
    else:  # a tensor subclass: leave it to its own copy
        copied = copy.deepcopy(tensor, memo)
    memo[id(tensor)] = copied
    return copied


def copy_module(module: nn.Module, memo: dict[int, object] | None = None) -> nn.Module:
    """A copy of a module tree: what ``copy.deepcopy`` gives (gradients aside), made directly.

    Why: ``deepcopy`` takes every module's dozen hook and state dicts through its generic reduce path, which
    is most of an Explainer's set-up; this copies those containers as containers, the tensors with
    ``clone``, and leaves every other attribute (and any module class with its own copy rules) to deepcopy.
    """
    memo = {} if memo is None else memo
    if id(module) in memo:
        return memo[id(module)]  # type: ignore[return-value]
    kind = type(module)
    if any(getattr(kind, name, None) is not getattr(nn.Module, name, None) for name in _COPY_RULES):
        return copy.deepcopy(module, memo)
    clone = object.__new__(kind)
    memo[id(module)] = clone
    state = clone.__dict__
    for key, value in vars(module).items():
        if key == "_modules":
            value = type(value)((n, None if c is None else copy_module(c, memo)) for n, c in value.items())
        elif key in ("_parameters", "_buffers"):
            value = type(value)((name, _copy_tensor(tensor, memo)) for name, tensor in value.items())
        elif type(value) in (dict, OrderedDict, set) and not value:
            value = type(value)()
        else:
            value = copy.deepcopy(value, memo)
        state[key] = value
    return clone


_COPY_RULES = ("__deepcopy__", "__reduce_ex__", "__reduce__", "__getstate__", "__setstate__")


def fused_densenet(model: nn.Module) -> nn.Module:
    """A frozen copy of a torchvision DenseNet: conv0+norm0 folded, every ``norm2`` an affine.

    The copy computes the same function (up to float rounding) and has ``requires_grad=False``
    everywhere, so autograd only ever differentiates with respect to activations.
    """
    net = copy_module(model).eval()
    features = net.features
    features.conv0 = fold_batchnorm(features.conv0, features.norm0)
    features.norm0 = nn.Identity()
    for block in (m for name, m in features.named_children() if name.startswith("denseblock")):
        for layer in block.children():
            layer.norm2 = ChannelAffine(layer.norm2)
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    return net
