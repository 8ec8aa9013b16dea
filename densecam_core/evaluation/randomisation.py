"""Cascading model randomisation (Adebayo et al., "Sanity checks for saliency maps", NeurIPS 2018).

Stage 1 re-initialises the classifier; each later stage also re-initialises the next part of the
network from the top down, so stage 5 is a wholly random DenseNet169. A map that barely changes
across the stages does not depend on what the model learned.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

RANDOMISATION_STAGES: tuple[tuple[str, ...], ...] = (
    ("classifier",),
    ("features.denseblock4", "features.norm5"),
    ("features.transition3", "features.denseblock3"),
    ("features.transition2", "features.denseblock2"),
    ("features.transition1", "features.denseblock1", "features.norm0", "features.conv0"),
)
"""The modules each stage adds to the re-initialised set (stage k re-initialises stages 1..k)."""


def reinitialise(module: nn.Module) -> None:
    """torchvision DenseNet's own initialisation: Kaiming-normal convolutions, BatchNorm weight 1 and
    bias 0 with running mean 0 and variance 1, Linear layers' default init with bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
            m.reset_running_stats()
        elif isinstance(m, nn.Linear):
            m.reset_parameters()
            nn.init.zeros_(m.bias)


def cascade(model: nn.Module, stages: int = len(RANDOMISATION_STAGES), *, seed: int = 0) -> list[nn.Module]:
    """Copies of ``model`` randomised through stage 1, 2, ..., ``stages`` (``model`` itself is untouched).

    Each stage starts from the previous stage's copy, so the layers randomised at stage 1 keep the
    same random weights at every later stage; each stage's new weights come from ``seed + stage``.
    """
    if not 1 <= stages <= len(RANDOMISATION_STAGES):
        raise ValueError(f"stages must be 1..{len(RANDOMISATION_STAGES)}, got {stages}")
    named = dict(model.named_modules())
    missing = [n for stage in RANDOMISATION_STAGES[:stages] for n in stage if n not in named]
    if missing:
        raise ValueError(f"the model has no modules {missing}: randomisation expects torchvision's densenet169")
    device = next(model.parameters()).device
    copies: list[nn.Module] = []
    current = copy.deepcopy(model).cpu()  # drawn on the CPU: the same random weights on every device
    for stage, names in enumerate(RANDOMISATION_STAGES[:stages], start=1):
        current = copy.deepcopy(current)
        modules = dict(current.named_modules())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + stage)
            for name in names:
                reinitialise(modules[name])
        copies.append(current)
    return [c.to(device) for c in copies]


def score(batch: Any, rows: Any) -> None:
    """Per stage, how much the absolute maps of the randomised model resemble the trained model's
    (``evaluation.batch.Batch``, ``Rows``)."""
    from densecam_core.evaluation.batch import explanation_maps
    from densecam_core.evaluation.similarity import spearman, ssim

    size = tuple(batch.pixels.shape[-2:])
    original = batch.original
    for stage, explainer in enumerate(batch.scorer.stages, start=1):
        randomised = explanation_maps(explainer(batch.pixels))
        for key, trained in original.items():
            a, b = trained.abs(), randomised[key].abs()
            # a randomised map left flat (no structure at all) shares nothing with a structured one
            rows.add(key, "randomisation_spearman", spearman(a, b, flat_value=0.0), stage)
            rows.add(key, "randomisation_ssim", ssim(a, b, size, flat_value=0.0), stage)
