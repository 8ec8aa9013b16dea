"""The Explainer against plain references: one autograd call per block, channel loops; the maps on the network
it differentiates, that network's values against the original's."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from support.cam_reference import (
    BATCH_REL,
    REFERENCE_REL,
    assert_close_maps,
    explained_network,
    reference_forward,
    reference_terms,
)

from densecam_core import Explainer, block_grid, load_densenet169
from densecam_core.cam.explainer import BLOCKS, METHODS
from densecam_core.testing import randomise_batchnorm


@pytest.fixture()
def images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 80, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["classifier", "negated-classifier"])
def test_every_method_matches_plain_reference(model, images, sign):
    """Negating the classifier flips every gradient, so together the two runs exercise each method."""
    with torch.no_grad():
        model.classifier.weight.mul_(sign)
    explainer = Explainer(model)
    result = explainer(images)
    network, laid_out = explained_network(explainer, images)
    non_trivial = 0
    for block in BLOCKS:
        terms = reference_terms(network, laid_out, block, target=0)
        for method in METHODS:
            got, expected = result.maps[method][block], torch.relu(terms[method][:, 0])
            assert got.shape == (2, 1, *expected.shape[1:]), (method, block)
            assert got.dtype == torch.float32
            non_trivial += bool(expected.abs().max() > 0)
            assert_close_maps(got[:, 0], expected, terms[method][:, 1], rel=REFERENCE_REL)
    assert non_trivial >= 10, "too many all-zero reference maps for the comparison to mean anything"


@pytest.mark.parametrize("kind", ["densenet169", "densenet201"])
def test_the_explained_network_computes_the_models_function(model, images, kind):
    """Every block's activation and the logits of the Explainer's folded copy, in its layout, against the
    original network's: forward values differ by rounding only (a flipped ReLU gate moves a value by
    its input, which is within rounding of zero): at most 5.9e-7 of each activation's largest, measured on a
    2-core Xeon with AMX."""
    import torchvision

    if kind == "densenet201":
        torch.manual_seed(0)
        model = randomise_batchnorm(torchvision.models.densenet201(weights=None, num_classes=1), seed=4).eval()
    network, laid_out = explained_network(Explainer(model), images)
    with torch.no_grad():
        ours, our_logits = reference_forward(network, laid_out)
        theirs, their_logits = reference_forward(model, images)
    for block in BLOCKS:
        error = (ours[block] - theirs[block]).abs().max() / theirs[block].abs().max()
        assert error < 1e-4, (block, float(error))
    assert torch.allclose(our_logits, their_logits, atol=1e-4, rtol=1e-4)


def test_cam_is_signed_class_weighted_sum_and_logits_match(model, images):
    reference_model = copy.deepcopy(model)
    result = Explainer(model)(images)
    with torch.no_grad():
        acts, logits = reference_forward(reference_model, images)
        terms = reference_model.classifier.weight[0][None, :, None, None] * acts[4]  # one per channel
        expected, magnitude = terms.double().sum(dim=1).float(), terms.abs().double().sum(dim=1).float()
        torchvision_logits = reference_model(images)
    assert torch.allclose(result.logits, torchvision_logits, atol=1e-4, rtol=1e-4)
    assert torch.allclose(logits, torchvision_logits, atol=1e-5)
    assert_close_maps(result.cam[:, 0], expected, magnitude, rel=REFERENCE_REL)
    assert (result.cam < 0).any(), "CAM must stay signed, not clipped"


def test_block4_gradcam_is_relu_cam_over_area(model, images):
    result = Explainer(model)(images)
    h4, w4 = result.cam.shape[-2:]
    assert torch.allclose(result.maps["gradcam"][4], torch.relu(result.cam) / (h4 * w4), atol=1e-6, rtol=1e-4)


def test_shapes_follow_block_grid_at_320():
    explainer = Explainer(load_densenet169(), methods=["gradcam"])
    result = explainer(torch.zeros(1, 3, 320, 320))
    shapes = {b: tuple(result.maps["gradcam"][b].shape[-2:]) for b in BLOCKS}
    assert shapes == {1: (40, 40), 2: (20, 20), 3: (10, 10), 4: (10, 10)} == block_grid(320)
    assert block_grid(64, 80) == {1: (8, 10), 2: (4, 5), 3: (2, 2), 4: (2, 2)}


def test_batch_invariance_and_determinism(model):
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    explainer = Explainer(model)
    full = explainer(x)
    again = explainer(x)
    single = explainer(x[1:2])
    for block in BLOCKS:
        terms = reference_terms(copy.deepcopy(model), x[1:2], block, target=0)
        for method in METHODS:
            assert torch.equal(full.maps[method][block], again.maps[method][block])
            scale = terms[method][0, 1]
            assert_close_maps(single.maps[method][block][0, 0], full.maps[method][block][1, 0], scale, rel=BATCH_REL)
    assert torch.equal(full.cam, again.cam)
    assert torch.allclose(single.logits[0], full.logits[1], atol=1e-5)


def test_one_pass_leaves_no_parameter_gradients_and_model_untouched(model, images):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    Explainer(model)(images)
    assert all(p.grad is None for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert isinstance(model.features.norm0, torch.nn.BatchNorm2d), "the caller's model must not be fused"


def test_one_forward_and_one_backward_per_class(model, images, monkeypatch):
    calls = {"grad": 0}
    real_grad = torch.autograd.grad

    def counting_grad(*args, **kwargs):
        calls["grad"] += 1
        return real_grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    explainer = Explainer(model)
    forwards = {"n": 0}
    explainer.net.features.denseblock4.register_forward_hook(lambda *a: forwards.__setitem__("n", forwards["n"] + 1))
    explainer(images)
    assert calls["grad"] == 1 and forwards["n"] == 1


@pytest.mark.filterwarnings("ignore::densecam_core.model.precision.SlowPrecisionWarning")
def test_bf16_close_to_fp32(model):
    """With this seed the negated classifier gives positive Grad-CAM evidence at every block."""
    with torch.no_grad():
        model.classifier.weight.neg_()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    fp32 = Explainer(model)(x)
    bf16 = Explainer(model, precision="bf16")(x)

    def r(a: torch.Tensor, b: torch.Tensor) -> float:
        """Minimum per-image Pearson r; two flat (all-zero) maps agree perfectly."""
        a, b = a.flatten(1).double(), b.flatten(1).double()
        a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
        both_flat = (a.norm(dim=1) < 1e-12) & (b.norm(dim=1) < 1e-12)
        corr = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-30)
        return float(torch.where(both_flat, torch.ones_like(corr), corr).min())

    assert bf16.cam.dtype == torch.float32
    assert all(fp32.maps["gradcam"][b].abs().amax(dim=(1, 2, 3)).min() > 0 for b in BLOCKS)
    assert r(fp32.cam, bf16.cam) >= 0.99
    for block in BLOCKS:
        assert r(fp32.maps["gradcam"][block], bf16.maps["gradcam"][block]) >= 0.99
        assert r(fp32.maps["gradcampp"][block], bf16.maps["gradcampp"][block]) >= 0.97
        assert r(fp32.maps["layercam"][block], bf16.maps["layercam"][block]) >= 0.95


def test_multiclass_targets(base_model):
    model = randomise_batchnorm(load_densenet169(num_classes=3, seed=7), seed=8)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    explainer = Explainer(model, targets="all")
    everything = explainer(x)
    network, laid_out = explained_network(explainer, x)
    assert everything.cam.shape[:2] == (2, 3) and everything.maps["layercam"][2].shape[:2] == (2, 3)
    for cls in range(3):
        terms = reference_terms(network, laid_out, block=2, target=cls)["layercam"]
        assert_close_maps(
            everything.maps["layercam"][2][:, cls], torch.relu(terms[:, 0]), terms[:, 1], rel=REFERENCE_REL
        )
    chosen = Explainer(model, targets=[2])(x)
    assert torch.allclose(chosen.maps["gradcam"][3][:, 0], everything.maps["gradcam"][3][:, 2], atol=1e-6)
    predicted = Explainer(model, targets="predicted")(x)
    top = everything.logits.argmax(1)
    assert torch.equal(predicted.targets[:, 0], top)
    for i in range(2):
        assert torch.allclose(predicted.cam[i, 0], everything.cam[i, top[i]], atol=1e-5)


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.zeros(3, 64, 64), r"\(B, 3, H, W\)"),
        (torch.zeros(1, 1, 64, 64), r"\(B, 3, H, W\)"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.int32), r"float tensor or uint8"),
        (torch.zeros(1, 3, 16, 16), r"H, W >= 32"),
    ],
)
def test_bad_input_names_expected_shape(model, bad, message):
    with pytest.raises(ValueError, match=message):
        Explainer(model, methods=["gradcam"])(bad)


def test_bad_settings(model):
    with pytest.raises(ValueError, match="valid methods: gradcam, gradcampp, layercam, xgradcam, hirescam"):
        Explainer(model, methods=["gradcam", "scorecam"])
    with pytest.raises(ValueError, match="fp16"):
        Explainer(model, precision="fp16")
    with pytest.raises(ValueError, match="precision"):
        Explainer(model, precision="int8")
    with pytest.raises(ValueError, match="outside"):
        Explainer(model, targets=[1])
    with pytest.raises(TypeError, match="DenseNet"):
        Explainer(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_gradient_scaling_is_exact_and_overflow_falls_back(model):
    """fp16 scales the backward seed; a power-of-two scale changes only rounding, an overflowing one is redone unscaled."""
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(11))
    plain = Explainer(model)
    assert plain.grad_scale == 1.0
    expected = plain(x)
    for scale, tolerance in ((1024.0, 1e-5), (float("inf"), 1e-5)):  # inf: every gradient overflows, the fallback path
        scaled = Explainer(model)
        scaled.grad_scale = scale
        got = scaled(x)
        for method in METHODS:
            for block in BLOCKS:
                want = expected.maps[method][block]
                torch.testing.assert_close(
                    got.maps[method][block], want, rtol=tolerance, atol=tolerance * float(want.abs().max())
                )
    overflowing = Explainer(model)
    overflowing.grad_scale = float("inf")
    assert overflowing._explain(x, float("inf")) is None


def test_explainer_leaves_the_callers_model_exactly_as_it_was(model):
    model.train()
    model.features.denseblock1.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {name: m.training for name, m in model.named_modules()}
    grads = {name: p.requires_grad for name, p in model.named_parameters()}
    explainer = Explainer(model, methods=["gradcam"])
    explainer(torch.randn(2, 3, 64, 64))
    assert {name: m.training for name, m in model.named_modules()} == modes and model.training
    assert {name: p.requires_grad for name, p in model.named_parameters()} == grads
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    # the explanation is the eval-mode model's, whatever mode the caller's model is in
    reference = Explainer(copy.deepcopy(model).eval(), methods=["gradcam"])
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(explainer(x).logits, reference(x).logits)


def test_the_taps_drive_the_forward_and_the_architecture_check(model):
    from densecam_core.vocabulary import BLOCK_TAPS, required_modules

    explainer = Explainer(model)
    acts, _ = explainer._forward(torch.randn(1, 3, 128, 128))
    for tap, act in zip(BLOCK_TAPS, acts):
        assert act.shape[1] == tap.channels  # the declared channels are the tensor's
        assert act.shape[2] == 128 // tap.stride == block_grid(128)[tap.block][0]
    assert (acts[3] >= 0).all() and (acts[2] < 0).any()  # block 4's declared ReLU, and none at block 3
    assert set(required_modules()) <= {name for name, _ in model.named_modules()}
    del model.features.transition2
    with pytest.raises(TypeError, match="missing \\['features.transition2'\\]"):
        Explainer(model)


def test_grey_pixels_become_three_channels_on_the_device_with_the_same_maps(model):
    """Grey batches cross to the device as one channel (a third of the bytes) and are broadcast there."""
    grey = torch.randint(0, 256, (2, 1, 64, 80), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    explainer = Explainer(model)
    one, three = explainer(grey), explainer(grey.expand(-1, 3, -1, -1).contiguous())
    assert torch.equal(one.logits, three.logits) and torch.equal(one.cam, three.cam)
    for method in METHODS:
        if method == "cam":
            continue
        for block in BLOCKS:
            assert torch.equal(one.maps[method][block], three.maps[method][block]), (method, block)


@pytest.mark.slow  # a real run, or a whole page
def test_eigencam_is_stored_and_read_like_the_gradient_methods(tmp_path):
    """Asked for beside a gradient method, Eigen-CAM's maps land in the store at every block and read back as the
    Explainer made them; it is never computed unless asked for."""
    from support.dicom_runs import SIZE, explain

    from densecam_core import generate_mura, load_densenet169, open_store
    from densecam_core.data.preprocess import load_model_input
    from densecam_core.vocabulary import METHODS

    assert "eigencam" not in METHODS
    generate_mura(tmp_path / "tree", images=4, seed=1, min_side=48, max_side=64, rgb_fraction=0.0)
    run_id = explain(tmp_path / "tree", tmp_path / "store", None, methods=("gradcam", "eigencam"))
    run = open_store(str(tmp_path / "store")).run(run_id)
    assert run.methods == ["gradcam", "eigencam"]
    image = run.index.sort_values("row").iloc[0]
    pixels = torch.from_numpy(np.ascontiguousarray(load_model_input(str(image["path"]), SIZE).pixels)[None])
    fresh = Explainer(load_densenet169(seed=0), methods=("eigencam",))(pixels)
    for block in (1, 2, 3, 4):
        stored = run.maps("eigencam", block, image_ids=[image["image_id"]], target=0)[0]
        assert np.allclose(stored, fresh.maps["eigencam"][block][0, 0].numpy(), rtol=1e-4, atol=1e-5)
