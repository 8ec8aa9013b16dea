"""The Explainer against pytorch-grad-cam, the most used CAM library: its own weight and map arithmetic
(``get_cam_image`` of GradCAM, HiResCAM, GradCAMPlusPlus, LayerCAM, XGradCAM) on its own captured
activations and gradients, one object per layer, one backward per target, for DenseNets other than MURA's.

The library runs on the network the Explainer differentiates (its BatchNorm-folded copy, in its memory
layout): on another layout or the unfolded network, a ReLU whose input lies within rounding of zero may
open on one side only and move an early block's gradient beyond any rounding tolerance
(``support/cam_reference.py`` says how far); that network's values equal the original's
(``tests/cam/test_explainer.py``)."""

from __future__ import annotations

import pytest
import torch
from support.cam_reference import REFERENCE_REL, assert_close_maps, explained_network, reference_terms
from torch import nn

from densecam_core import Explainer
from densecam_core.testing import randomise_batchnorm
from densecam_core.vocabulary import METHODS


def _library() -> dict[str, type]:
    """pytorch-grad-cam's classes, imported by the tests that use them (its import takes seconds, which every
    process of the fast loop would pay at collection)."""
    import pytorch_grad_cam as grad_cam

    return {
        "gradcam": grad_cam.GradCAM,
        "hirescam": grad_cam.HiResCAM,
        "gradcampp": grad_cam.GradCAMPlusPlus,
        "layercam": grad_cam.LayerCAM,
        "xgradcam": grad_cam.XGradCAM,
    }


def _as_layers(model: nn.Module) -> tuple[nn.Module, list[nn.Module]]:
    """The same function with the final ReLU as a module, so a hook sees block 4's tap (torchvision applies
    it functionally, and a hook on ``norm5`` would see the map before it); blocks 1-3 are the transitions."""
    f = model.features
    wrapped = nn.Sequential(f, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), model.classifier).eval()
    return wrapped, [f.transition1, f.transition2, f.transition3, wrapped[1]]


def library_maps(model: nn.Module, x: torch.Tensor, target: int) -> dict[str, list[torch.Tensor]]:
    """pytorch-grad-cam's maps (after its ReLU, before its min-max scaling and resize) per method, per layer."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    wrapped, layers = _as_layers(model)
    library = _library()
    maps: dict[str, list[torch.Tensor]] = {method: [] for method in library}
    for layer in layers:
        cams = {method: kind(model=wrapped, target_layers=[layer]) for method, kind in library.items()}
        capture = cams["gradcam"].activations_and_grads
        outputs = capture(x)
        targets = [ClassifierOutputTarget(target)] * x.shape[0]
        wrapped.zero_grad()
        sum(t(o) for t, o in zip(targets, outputs)).backward()
        activations, grads = capture.activations[0].numpy(), capture.gradients[0].numpy()  # as its forward passes them
        for method, cam in cams.items():
            raw = cam.get_cam_image(x, layer, targets, activations, grads, False)  # no eigen smoothing
            maps[method].append(torch.relu(torch.from_numpy(raw)))
        for cam in cams.values():
            cam.activations_and_grads.release()
    return maps


@pytest.mark.parametrize(
    "name, classes, channels, targets",
    [
        ("densenet121", 14, 3, [2, 9]),
        pytest.param("densenet121", 18, 1, [0, 7, 17], marks=pytest.mark.slow),
        pytest.param("densenet201", 1, 3, [0], marks=pytest.mark.slow),
    ],
    ids=["chexnet-shaped", "xrv-shaped", "densenet201"],
)
def test_every_method_at_every_block_equals_pytorch_grad_cam(name, classes, channels, targets):
    import torchvision

    torch.manual_seed(0)  # the weights of tests/model/test_architecture.py's plain-reference test
    model = getattr(torchvision.models, name)(weights=None, num_classes=classes)
    if channels == 1:
        model.features.conv0 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    model = randomise_batchnorm(model, seed=4).eval()
    x = torch.randn(2, channels, 64, 64, generator=torch.Generator().manual_seed(5))
    explainer = Explainer(model, targets=targets)
    ours = explainer(x)
    network, laid_out = explained_network(explainer, x)
    for k, target in enumerate(targets):
        theirs = library_maps(network, laid_out.requires_grad_(True), target)  # its layers' gradients need a graph
        for block in (1, 2, 3, 4):
            scale = reference_terms(network, laid_out, block, target)  # the summed terms' magnitudes, for the tolerance
            for method in METHODS:
                assert_close_maps(
                    ours.maps[method][block][:, k], theirs[method][block - 1], scale[method][:, 1], REFERENCE_REL
                )


@pytest.mark.parametrize("name", ["densenet121", pytest.param("densenet169", marks=pytest.mark.slow)])
def test_eigencam_at_every_block_equals_pytorch_grad_cams_up_to_the_stated_sign(name):
    """pytorch-grad-cam's EigenCAM projects the centred activations on the first right singular vector, whose sign
    LAPACK leaves arbitrary; densecam takes the sign that correlates with the mean activation (methods.eigencam).
    The reference is the library's projection on the activations its own hooks capture, given that sign, then
    ReLU. Tolerance: the projection is a sum over channels of activations times a unit vector; the two differ by
    float32 rounding of the activations and of an SVD against an eigendecomposition in float64, 1e-4 of the
    map's largest value (measured: under 1e-6)."""
    import torchvision
    from pytorch_grad_cam import EigenCAM
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    torch.manual_seed(0)
    model = randomise_batchnorm(getattr(torchvision.models, name)(weights=None, num_classes=3), seed=4).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    explainer = Explainer(model, methods=("eigencam",), targets=[0, 2])
    ours = explainer(x)
    network, laid_out = explained_network(explainer, x)
    wrapped, layers = _as_layers(network)
    for block, layer in zip((1, 2, 3, 4), layers):
        cam = EigenCAM(model=wrapped, target_layers=[layer])
        with torch.no_grad():
            cam.activations_and_grads(laid_out)
        activations = cam.activations_and_grads.activations[0].numpy()
        cam.activations_and_grads.release()
        theirs = torch.from_numpy(get_2d_projection(activations))
        activity = torch.from_numpy(activations).mean(dim=1)
        activity = activity - activity.mean(dim=(1, 2), keepdim=True)
        sign = torch.where((theirs * activity).sum(dim=(1, 2), keepdim=True) < 0, -1.0, 1.0)
        expected = torch.relu(theirs * sign)
        for k in range(2):  # one map for every target
            got = ours.maps["eigencam"][block][:, k]
            assert got.shape == expected.shape
            assert float((got - expected).abs().max()) <= 1e-4 * float(expected.abs().max()), (name, block, k)
