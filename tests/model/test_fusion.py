"""The module copy behind every Explainer and scorer: what ``copy.deepcopy`` gives, made directly."""

from __future__ import annotations

import copy

import torch
from torch import nn

from densecam_core.model.fusion import copy_module


def _structure(model: nn.Module) -> list:
    return [
        (name, type(m), m.training, {k: v for k, v in vars(m).items() if not k.startswith("_")})
        for name, m in model.named_modules()
    ]


def test_the_copy_equals_deepcopys_and_shares_no_storage(model):
    model.features.denseblock1.denselayer1.norm1.train()
    model.classifier.weight.requires_grad_(False)
    ours, theirs, original = copy_module(model), copy.deepcopy(model), model.state_dict()
    assert _structure(ours) == _structure(theirs)
    for (name, mine), (_, reference) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert torch.equal(mine, reference), name
        assert mine.data_ptr() != original[name].data_ptr(), name
    assert [(n, p.requires_grad, type(p)) for n, p in ours.named_parameters()] == [
        (n, p.requires_grad, type(p)) for n, p in theirs.named_parameters()
    ]
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ours.eval()(x), model.eval()(x))


def test_tied_weights_stay_tied_and_hooks_come_along_as_with_deepcopy():
    calls: list[str] = []
    net = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    net[1].weight = net[0].weight
    net[0].register_forward_hook(lambda module, inputs, output: calls.append("hook"))
    ours = copy_module(net)
    assert ours[1].weight is ours[0].weight and ours[0].weight is not net[0].weight
    ours(torch.zeros(1, 3))
    assert calls == ["hook"]


def test_a_module_with_its_own_copy_rules_keeps_them():
    class Counted(nn.Linear):
        copies = 0

        def __deepcopy__(self, memo):
            Counted.copies += 1
            fresh = Counted(self.in_features, self.out_features)
            fresh.load_state_dict(self.state_dict())
            return fresh

    net = nn.Sequential(Counted(2, 2))
    ours = copy_module(net)
    assert Counted.copies == 1 and torch.equal(ours[0].weight, net[0].weight)
