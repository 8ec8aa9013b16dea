"""Which DenseNet a checkpoint or a model is, read from its shapes, and building that network.

Why from the shapes: a state dict carries no architecture name, but its layer counts per block, growth
rate, stem channels, input channels and classifier rows say it unambiguously for torchvision's DenseNets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torchvision import models

from densecam_core.vocabulary import ARCHITECTURES, Architecture

_LAYER = re.compile(r"^features\.denseblock([1-4])\.denselayer(\d+)\.")
_FAMILIES = (
    ("layer1.0.conv1.weight", "a ResNet"),
    ("conv1.weight", "a ResNet-like network"),
    ("patch_embed.proj.weight", "a Vision Transformer (ViT)"),
    ("cls_token", "a Vision Transformer (ViT)"),
    ("encoder.layers.encoder_layer_0.ln_1.weight", "a Vision Transformer (torchvision ViT)"),
    ("features.0.0.weight", "an EfficientNet or MobileNet"),
)


class ArchitectureError(ValueError):
    """Weights of a network densecam cannot explain; the message names what was found and what is supported."""


@dataclass(frozen=True)
class Recognised:
    """A DenseNet recognised from its weights."""

    architecture: Architecture
    in_channels: int
    num_classes: int


def supported() -> str:
    return ", ".join(f"{a.title} (blocks {a.block_config}, growth {a.growth_rate})" for a in ARCHITECTURES.values())


def recognise(state: Mapping[str, Any], name: str = "the checkpoint") -> Recognised:
    """The architecture of a canonical (torchvision-named) DenseNet state dict, or an error naming what it is."""
    conv0 = state.get("features.conv0.weight")
    head = state.get("classifier.weight")
    if not isinstance(conv0, torch.Tensor) or not isinstance(head, torch.Tensor) or head.ndim != 2:
        family = next((what for key, what in _FAMILIES if key in state), None)
        what = family or f"no DenseNet keys (first keys: {sorted(state)[:5]})"
        raise ArchitectureError(f"{name} is {what}, not a DenseNet classifier; supported: {supported()}")
    layers = [0, 0, 0, 0]
    for key in state:
        match = _LAYER.match(key)
        if match:
            block, layer = int(match.group(1)), int(match.group(2))
            layers[block - 1] = max(layers[block - 1], layer)
    growth_weight = state.get("features.denseblock1.denselayer1.conv2.weight")
    growth = int(growth_weight.shape[0]) if isinstance(growth_weight, torch.Tensor) else 0
    found = (tuple(layers), growth, int(conv0.shape[0]))
    for architecture in ARCHITECTURES.values():
        if (architecture.block_config, architecture.growth_rate, architecture.init_features) == found:
            return Recognised(architecture, int(conv0.shape[1]), int(head.shape[0]))
    raise ArchitectureError(
        f"{name} is a DenseNet with {tuple(layers)} layers per block, growth rate {growth} and {found[2]} stem "
        f"channels, which is none of the supported: {supported()}"
    )


def architecture_of(model: torch.nn.Module) -> Recognised:
    """The architecture of a built model (its modules' shapes), as ``recognise`` reads a state dict."""
    shapes = {name: p for name, p in model.state_dict().items() if name.endswith("weight")}
    return recognise(shapes, f"the model ({type(model).__name__})")


def build(architecture: Architecture, num_classes: int, in_channels: int = 3) -> torch.nn.Module:
    """torchvision's network of that architecture, with ``in_channels`` input channels (torchxrayvision: 1)."""
    model = getattr(models, architecture.name)(weights=None, num_classes=num_classes)
    if in_channels != 3:
        old = model.features.conv0
        model.features.conv0 = torch.nn.Conv2d(
            in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False
        )
    return model
