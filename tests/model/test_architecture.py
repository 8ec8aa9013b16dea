"""The DenseNet family: each member recognised from its weights in every layout users have, its taps
against torchvision's own module shapes, and its maps against the plain reference."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from support.cam_reference import REFERENCE_REL, assert_close_maps, explained_network, reference_terms

from densecam_core import CheckpointError, Explainer, load_densenet169, model_fingerprint
from densecam_core.model.architecture import architecture_of, recognise
from densecam_core.model.checkpoint import CheckpointNote, load_densenet
from densecam_core.testing import randomise_batchnorm
from densecam_core.vocabulary import ARCHITECTURES, METHODS, taps_for

FAMILY = sorted(ARCHITECTURES)
LARGEST = {"densenet161", "densenet201"}  # a second each to build: the full suite covers them
MEMBERS = [pytest.param(name, marks=pytest.mark.slow) if name in LARGEST else name for name in FAMILY]


def torchvision_model(name: str, num_classes: int = 1, in_channels: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.features.conv0 = torch.nn.Conv2d(in_channels, model.features.conv0.out_channels, 7, 2, 3, bias=False)
    return model.eval()


class CheXNet(torch.nn.Module):
    """The layout of CheXNet's released weights (arnoweng/CheXNet): the torchvision DenseNet121 as an
    attribute, its classifier a Sequential(Linear, Sigmoid), saved through DataParallel (``module.``)."""

    def __init__(self, classes: int = 14) -> None:
        super().__init__()
        self.densenet121 = torchvision_model("densenet121", 1000)
        self.densenet121.classifier = torch.nn.Sequential(torch.nn.Linear(1024, classes), torch.nn.Sigmoid())


def legacy_keys(state: dict) -> dict:
    """Old torchvision pickles: ``norm.1`` instead of ``norm1`` inside dense layers."""
    out = {}
    for key, value in state.items():
        for part in ("norm1", "relu1", "conv1", "norm2", "relu2", "conv2"):
            key = key.replace(f".{part}.", f".{part[:-1]}.{part[-1]}.") if "denselayer" in key else key
        out[key] = value
    return out


@pytest.mark.parametrize("name", MEMBERS)
def test_every_member_is_recognised_from_its_weights_and_loads_to_the_same_fingerprint(name, tmp_path):
    model = torchvision_model(name, 3)
    found = recognise(model.state_dict())
    assert (found.architecture.name, found.in_channels, found.num_classes) == (name, 3, 3)
    assert architecture_of(model).architecture.name == name
    path = tmp_path / f"{name}.pt"
    torch.save({f"module.{k}": v for k, v in legacy_keys(model.state_dict()).items()}, path)
    loaded = load_densenet(path)
    assert type(loaded) is type(model) and model_fingerprint(loaded) == model_fingerprint(model)


@pytest.mark.parametrize("name", FAMILY)
def test_taps_follow_torchvisions_module_shapes(name):
    model = torchvision_model(name)
    seen = {}
    hooks = [
        model.get_submodule(tap.module).register_forward_hook(lambda m, i, o, b=tap.block: seen.__setitem__(b, o.shape))
        for tap in taps_for(name)
    ]
    with torch.no_grad():
        model(torch.zeros(1, 3, 64, 64))
    for hook in hooks:
        hook.remove()
    for tap in taps_for(name):
        assert seen[tap.block][1] == tap.channels, (name, tap.block)
        assert 64 // seen[tap.block][2] == tap.stride, (name, tap.block)


def test_chexnet_and_torchxrayvision_layouts_load_with_their_outputs(tmp_path):
    chexnet = CheXNet()
    path = tmp_path / "chexnet.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in legacy_keys(chexnet.state_dict()).items()}}, path)
    loaded = load_densenet(path)
    assert recognise(loaded.state_dict()).architecture.name == "densenet121" and loaded.classifier.out_features == 14
    assert torch.equal(loaded.classifier.weight, chexnet.densenet121.classifier[0].weight)

    xrv = torchvision_model("densenet121", 18, in_channels=1)
    xrv.register_buffer("op_threshs", torch.rand(18))
    path = tmp_path / "xrv.pt"
    torch.save(xrv.state_dict(), path)
    with pytest.warns(CheckpointNote, match="op_threshs"):
        loaded = load_densenet(path)
    assert loaded.features.conv0.in_channels == 1 and loaded.classifier.out_features == 18
    assert Explainer(loaded, methods=["gradcam"]).input_norm == "xrv"


def test_other_networks_and_members_are_refused_naming_what_was_found(tmp_path):
    odd = torchvision.models.DenseNet(growth_rate=32, block_config=(6, 12, 24, 24), num_classes=1)
    path = tmp_path / "odd.pt"
    torch.save(odd.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"\(6, 12, 24, 24\) layers per block, growth rate 32.*DenseNet121"):
        load_densenet(path)
    vit = tmp_path / "vit.pt"
    tiny_vit = torchvision.models.VisionTransformer(
        32, 16, num_layers=1, num_heads=1, hidden_dim=8, mlp_dim=8, num_classes=2
    )
    torch.save(tiny_vit.state_dict(), vit)
    with pytest.raises(CheckpointError, match=r"vit\.pt' is a Vision Transformer"):
        load_densenet(vit)
    dn201 = tmp_path / "dn201.pt"
    torch.save(torchvision_model("densenet201").state_dict(), dn201)
    with pytest.raises(CheckpointError, match=r"is a DenseNet201, not a DenseNet169"):
        load_densenet169(dn201)


@pytest.mark.parametrize(
    "name, classes, channels, targets",
    [
        ("densenet121", 14, 3, [0, 5, 13]),
        pytest.param("densenet121", 18, 1, [2, 17], marks=pytest.mark.slow),
        pytest.param("densenet201", 1, 3, [0], marks=pytest.mark.slow),
    ],
    ids=["chexnet-shaped", "xrv-shaped", "densenet201"],
)
def test_every_method_at_every_block_matches_the_plain_reference(name, classes, channels, targets):
    """Randomised BatchNorm statistics (as trained networks have) and several targets in one pass."""
    model = randomise_batchnorm(torchvision_model(name, classes, channels), seed=4)
    images = torch.randn(2, channels, 64, 64, generator=torch.Generator().manual_seed(5))
    explainer = Explainer(model, targets=targets)
    result = explainer(images)
    assert result.targets.tolist() == [targets, targets]
    network, laid_out = explained_network(explainer, images)
    for block in (1, 2, 3, 4):
        for k, target in enumerate(targets):
            terms = reference_terms(network, laid_out, block, target)
            for method in METHODS:
                expected = torch.relu(terms[method][:, 0])
                assert_close_maps(result.maps[method][block][:, k], expected, terms[method][:, 1], REFERENCE_REL)


def test_a_one_channel_model_reads_rgb_sources_as_their_grey():
    model = torchvision_model("densenet121", 18, in_channels=1)
    rgb = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(6))
    grey = (rgb.float() * torch.tensor([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)).sum(1, keepdim=True)
    explainer = Explainer(model, methods=["gradcam"], targets=[3])
    from_rgb, from_grey = explainer(rgb), explainer(grey / 255.0 * 2048 - 1024)
    # the same grey reached on the device or on the host: measured 7.6e-5 apart on logits of magnitude 188
    # (an AMD EPYC with AVX-512), float rounding of the luma sum; a dropped or wrong channel moves them by units
    assert torch.allclose(from_rgb.logits, from_grey.logits, atol=1e-3, rtol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert explainer.input_norm == "xrv" and explainer.taps[3].channels == 1024
