"""One forward and one backward pass give CAM plus five gradient maps at all four dense blocks.

Why one pass: pytorch-grad-cam builds one object and runs one full pass per method and layer,
with parameter gradients. The maps only differ in how they weight (activation, gradient) pairs,
so we tap the four block activations once, ask autograd for d logit / d activation only (no
parameter, stem or input gradients), and evaluate every method as a small function.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from densecam_core.cam.cuda_graphs import Capture, CapturedPass, GraphCaptureWarning, cuda_capture
from densecam_core.model.architecture import ArchitectureError, Recognised, architecture_of
from densecam_core.model.conventions import default_input_norm, imagenet_statistics, luma_weights, pixels_to_input
from densecam_core.model.fusion import ChannelAffine, fused_densenet
from densecam_core.model.precision import reduced_dtype, warn_if_emulated
from densecam_core.vocabulary import (
    BLOCKS,
    CAM_BLOCK,
    METHOD_REGISTRY,
    METHODS,
    STEM,
    BlockTap,
    block_grid,
    required_modules,
    taps_for,
    validate_input_norm,
    validate_methods,
    validate_precision,
)

__all__ = ["BLOCKS", "METHODS", "Explainer", "Explanation", "block_grid", "validate_methods"]

FP16_GRAD_SCALE = 1024.0


def method_function(name: str) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """A registered method's function (``vocabulary.METHOD_REGISTRY``): (activations, gradients) -> maps."""
    module, _, function = METHOD_REGISTRY[name].function.partition(":")
    return getattr(importlib.import_module(module), function)  # type: ignore[no-any-return]


@dataclass
class Explanation:
    """Raw float32 results for one batch: nothing normalised, nothing resized."""

    logits: torch.Tensor  # (B, num_classes)
    cam: torch.Tensor  # (B, K, h4, w4), signed, classifier bias excluded
    maps: dict[str, dict[int, torch.Tensor]] = field(default_factory=dict)  # method -> block -> (B, K, h, w)
    targets: torch.Tensor | None = None  # (B, K) class ids explained

    def take(self, count: int) -> Explanation:
        """The first ``count`` images (a padded batch cropped back)."""
        return Explanation(
            self.logits[:count],
            self.cam[:count],
            {m: {b: t[:count] for b, t in per.items()} for m, per in self.maps.items()},
            None if self.targets is None else self.targets[:count],
        )

    def clone(self) -> Explanation:
        """A copy that owns its memory (a CUDA graph's outputs are overwritten by its next replay)."""
        return Explanation(
            self.logits.clone(),
            self.cam.clone(),
            {m: {b: t.clone() for b, t in per.items()} for m, per in self.maps.items()},
            None if self.targets is None else self.targets.clone(),
        )

    def to(self, device: str | torch.device) -> Explanation:
        return Explanation(
            self.logits.to(device),
            self.cam.to(device),
            {m: {b: t.to(device) for b, t in per.items()} for m, per in self.maps.items()},
            None if self.targets is None else self.targets.to(device),
        )


class Explainer:
    """CAM and the gradient maps of a torchvision DenseNet, all from one forward and one backward pass.

    ``targets``: ``None`` (class 0 for one-output models, else the predicted class), ``"predicted"``,
    ``"all"`` or a list of class ids; one backward pass per explained class. The passes run on a
    private eval-mode copy with BatchNorms folded into convolutions (``fusion.fused_densenet``), so
    the caller's model is left exactly as it was (its mode included).

    ``precision="bf16"`` pays off only where bf16 is native (``hardware.native_bf16``; a
    ``SlowPrecisionWarning`` otherwise). HiResCAM and XGrad-CAM at blocks 1-3 are the maps bf16
    disturbs most (docs/PERFORMANCE.md, "bf16 map agreement"); on a GPU, fp16 keeps them as close to fp32 as
    TF32 does, and is as fast as bf16.

    ``cuda_graphs=True`` (CUDA only) records the pass of each uint8 batch shape once as a CUDA graph
    and replays it (``densecam_core.cam.cuda_graphs``): the same kernels, launched with one call instead of
    about a thousand. Up to ``MAX_GRAPHS`` shapes are kept; others run eagerly.
    """

    MAX_GRAPHS = 4

    def __init__(
        self,
        model: torch.nn.Module,
        methods: Sequence[str] | None = None,
        targets: str | Sequence[int] | None = None,
        precision: str = "fp32",
        channels_last: bool | None = None,
        cuda_graphs: bool = False,
        input_norm: str | None = None,
    ) -> None:
        self.model = model  # left exactly as given: mode, weights and requires_grad untouched
        self.methods = validate_methods(methods)
        self._functions = {m: method_function(m) for m in self.methods}
        found = self._check_architecture()
        self.architecture, self.in_channels = found.architecture, found.in_channels
        self.taps = taps_for(self.architecture.name)
        self.input_norm = validate_input_norm(input_norm or default_input_norm(self.in_channels))
        self.net = fused_densenet(model)  # private, frozen eval-mode copy
        self._stem = [self.net.get_submodule(name) for name in STEM]
        self._stages = [
            (tap, self.net.get_submodule(tap.stage), self.net.get_submodule(tap.module)) for tap in self.taps
        ]
        self.device = next(model.parameters()).device
        self._statistics = imagenet_statistics(self.device)
        self._luma = luma_weights(self.device)
        self.num_classes = int(model.classifier.out_features)
        self.targets = self._validate_targets(targets)
        self.precision = validate_precision(precision)
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("precision='fp16' needs a CUDA model; use 'bf16' or 'fp32' on the CPU")
        warn_if_emulated(precision, self.device)
        if cuda_graphs and self.device.type != "cuda":
            raise ValueError("cuda_graphs=True needs a CUDA model")
        # how a pass is recorded (tests give the CPU a stand-in); None: every call runs eagerly
        self.graph_capture: Capture | None = cuda_capture if cuda_graphs else None
        self._graphs: dict[tuple[int, int, int], CapturedPass[tuple[Explanation, torch.Tensor | None]]] = {}
        self._target_tensor = (
            torch.tensor(self.targets, device=self.device) if isinstance(self.targets, tuple) else None
        )  # made here: a pass being recorded cannot copy from host memory
        self.channels_last = self._default_channels_last() if channels_last is None else bool(channels_last)
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        # bf16/fp16: the stem and the dense blocks (the taps' stages) hold their weights in that type,
        # cast once here; autocast would re-cast every weight on every call (docs/PERFORMANCE.md).
        # The tapped modules keep fp32 weights (see _tap).
        self.compute_dtype = reduced_dtype(precision)
        # fp16 gradients of a logit with respect to early activations are often below 6e-5, fp16's
        # subnormal range, where precision fades: the backward seed is scaled by a power of two
        # (exact) and the maps divide it out. bf16 has fp32's range and needs no scaling.
        self.grad_scale = FP16_GRAD_SCALE if self.compute_dtype == torch.float16 else 1.0
        if self.compute_dtype is not None:
            for part in [*self._stem, *(stage for _, stage, _ in self._stages)]:
                for module in part.modules():
                    if isinstance(module, (torch.nn.Conv2d, ChannelAffine)):  # BatchNorm keeps fp32 statistics
                        module.to(self.compute_dtype)

    def _default_channels_last(self) -> bool:
        """channels_last: faster on CPU (oneDNN; benchmarks/explainer.py measures the layouts)
        and the tensor-core layout on CUDA."""
        return self.device.type in ("cpu", "cuda")

    @property
    def num_targets(self) -> int:
        """K, the number of explained classes per image."""
        if self.targets == "all":
            return self.num_classes
        if isinstance(self.targets, tuple):
            return len(self.targets)
        return 1

    def _check_architecture(self) -> Recognised:
        """Every module the taps name must exist (``vocabulary.required_modules``), a Linear classifier, and
        the shapes of one of the supported DenseNets (whose taps' channels follow)."""
        have = {name for name, _ in self.model.named_modules()}
        need = required_modules()
        missing = [n for n in need if n not in have]
        if missing or not isinstance(getattr(self.model, "classifier", None), torch.nn.Linear):
            features = getattr(self.model, "features", None)
            children = [n for n, _ in features.named_children()] if isinstance(features, torch.nn.Module) else []
            raise TypeError(
                f"Explainer needs a torchvision DenseNet (modules {', '.join(need)} and a Linear "
                f"classifier); missing {missing or ['classifier']}; the model has features {children}"
            )
        try:
            return architecture_of(self.model)
        except ArchitectureError as exc:
            raise TypeError(f"Explainer: {exc}") from None

    def _validate_targets(self, targets: str | Sequence[int] | None) -> str | tuple[int, ...] | None:
        if targets is None or targets in ("predicted", "all"):
            return targets  # type: ignore[return-value]
        if isinstance(targets, str):
            raise ValueError(f"targets must be 'predicted', 'all' or a list of class ids, got {targets!r}")
        ids = tuple(int(t) for t in targets)
        bad = [t for t in ids if not 0 <= t < self.num_classes]
        if bad or not ids:
            raise ValueError(f"target class ids {bad or ids} outside 0..{self.num_classes - 1}")
        return ids

    def _validate_input(self, images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor of shape (B, 3, H, W), got {type(images).__name__}")
        pixels = images.ndim == 4 and images.shape[1] in (1, 3) and images.dtype == torch.uint8
        normalised = images.ndim == 4 and images.shape[1] == self.in_channels and images.is_floating_point()
        if not (pixels or normalised):
            raise ValueError(
                f"expected a normalised float tensor or uint8 pixels: float of shape (B, {self.in_channels}, H, W), "
                f"uint8 of shape (B, 3, H, W) or grey (B, 1, H, W); got dtype {images.dtype} and shape "
                f"{tuple(images.shape)}"
            )
        if images.shape[0] == 0 or min(images.shape[2:]) < 32:
            raise ValueError(f"expected B >= 1 and H, W >= 32 pixels; got shape {tuple(images.shape)}")

    def _to_device(self, images: torch.Tensor) -> torch.Tensor:
        """The batch on the model's device; uint8 pixels are normalised there (a quarter of the bytes
        cross to the device, and the host does no float work). Grey (B, 1, H, W) pixels become three
        channels there too, by broadcasting in the normalisation: another third of the bytes."""
        x = self._on_device(images)
        if x.dtype == torch.uint8:
            x = self.model_input(x.float() / 255.0)
        return x

    def model_input(self, pixels01: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] as this model reads them (its channels and input normalisation)."""
        return pixels_to_input(pixels01, self.in_channels, self.input_norm, self._statistics, self._luma)

    def _on_device(self, images: torch.Tensor) -> torch.Tensor:
        """The batch as it is, on the model's device (copied from pinned memory without blocking the host)."""
        if images.device.type == "cpu" and self.device.type == "cuda" and not images.is_pinned():
            images = images.pin_memory()
        return images.to(self.device, non_blocking=True)

    def _target_ids(self, logits: torch.Tensor) -> torch.Tensor:
        batch = logits.shape[0]
        if self.targets == "all":
            return torch.arange(self.num_classes, device=logits.device).expand(batch, -1)
        if self._target_tensor is not None:
            return self._target_tensor.expand(batch, -1)
        if self.targets is None and self.num_classes == 1:
            return torch.zeros(batch, 1, dtype=torch.long, device=logits.device)
        return logits.argmax(dim=1, keepdim=True)

    def _low(self, x: torch.Tensor) -> torch.Tensor:
        """A dense block's input in the compute type (a no-op in fp32)."""
        return x if self.compute_dtype is None else x.to(self.compute_dtype)

    def _forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The model's own forward, driven by its taps (``vocabulary.taps_for``), so each block activation is a
        well-defined tensor.

        torchvision applies ``F.relu(..., inplace=True)`` after norm5, which would modify a hooked
        tensor after its hook ran; here a tap's ReLU is explicit and out of place. Nothing before the
        first tap needs a gradient (gradients are taken with respect to the taps only).
        """
        with torch.no_grad():
            h = self._low(x)
            for module in self._stem:
                h = module(h)
            first, stage, module = self._stages[0]
            h = self._tap(first, module, stage(h))
        acts = [h.detach().requires_grad_(True)]
        for tap, stage, module in self._stages[1:]:
            acts.append(self._tap(tap, module, stage(self._low(acts[-1]))))
        pooled = F.adaptive_avg_pool2d(acts[-1], 1).flatten(1)
        return acts, self.net.classifier(pooled)

    def _tap(self, tap: BlockTap, module: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Compute a block's tapped activation in float32 (the tapped modules keep fp32 weights).

        The taps are where the maps' arithmetic happens: rounding them to bf16 (8-bit mantissa)
        turns the signed channel sums of HiResCAM and XGrad-CAM into noise. The transitions and
        norm5 are a small share of the network's work.
        """
        out = module(x.float())
        return F.relu(out) if tap.relu else out

    def __call__(self, images: torch.Tensor) -> Explanation:
        self._validate_input(images)
        if self.graph_capture is not None and images.dtype == torch.uint8:
            key = (images.shape[0], images.shape[2], images.shape[3])
            if key in self._graphs or len(self._graphs) < self.MAX_GRAPHS:
                return self._replayed(images, key)
        return self._eager(images)

    def eager(self, images: torch.Tensor) -> Explanation:
        """The pass run op by op (what ``__call__`` does without CUDA graphs)."""
        self._validate_input(images)
        return self._eager(images)

    def _eager(self, images: torch.Tensor) -> Explanation:
        x = self._prepared(self._to_device(images))
        result = self._explain(x, self.grad_scale)
        if result is None:  # a scaled fp16 gradient overflowed: this batch again, unscaled
            result = self._explain_pass(x, 1.0)[0]
        return result

    def _prepared(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _replayed(self, images: torch.Tensor, key: tuple[int, int, int]) -> Explanation:
        """The recorded pass for this shape (recorded on first use); an overflowing scaled gradient
        is redone eagerly, unscaled, as in ``eager``."""
        if key not in self._graphs:
            grad_scale = self.grad_scale
            assert self.graph_capture is not None
            try:
                self._graphs[key] = CapturedPass(
                    lambda pixels: self._explain_pass(self._prepared(self._to_device(pixels)), grad_scale),
                    key,
                    self.device,
                    self.graph_capture,
                )
            except RuntimeError as exc:  # an op the recording refuses (a driver or PyTorch change): run eagerly
                warnings.warn(
                    f"recording the Explainer's pass as a CUDA graph failed ({exc}); it runs op by op from now on, "
                    "with the same maps, more slowly (`cuda_graphs=False` skips the attempt)",
                    GraphCaptureWarning,
                    stacklevel=3,
                )
                self.graph_capture = None
                self._graphs.clear()
                return self._eager(images)
        pixels = self._on_device(images)
        result, finite = self._graphs[key](pixels, lambda out: (out[0].clone(), out[1]))
        if finite is not None and not bool(finite):
            return self._explain_pass(self._prepared(self._to_device(pixels)), 1.0)[0]
        return result

    def _explain(self, x: torch.Tensor, grad_scale: float) -> Explanation | None:
        """One forward and one backward per target; None when scaled gradients are not finite."""
        result, finite = self._explain_pass(x, grad_scale)
        return None if finite is not None and not bool(finite) else result

    def _explain_pass(self, x: torch.Tensor, grad_scale: float) -> tuple[Explanation, torch.Tensor | None]:
        """The pass without a host synchronisation (so that it can be recorded as a CUDA graph): the
        explanation, and with a scaled gradient a device flag saying whether every gradient was finite."""
        with torch.enable_grad():
            acts, logits = self._forward(x)
        logits = logits.float()
        target_ids = self._target_ids(logits.detach())
        k_count = target_ids.shape[1]
        per_target: list[list[torch.Tensor]] = []
        for k in range(k_count):
            score = logits.gather(1, target_ids[:, k : k + 1]).sum() * grad_scale
            per_target.append(list(torch.autograd.grad(score, acts, retain_graph=k < k_count - 1)))
        finite = (
            torch.stack([torch.isfinite(g).all() for gs in per_target for g in gs]).all() if grad_scale != 1.0 else None
        )
        with torch.no_grad():
            acts32 = [a.detach().float() for a in acts]
            weight = self.net.classifier.weight.detach().float()  # (C, channels of the last tap)
            cam = torch.stack(
                [
                    torch.einsum("bc,bchw->bhw", weight[target_ids[:, k]], acts32[BLOCKS.index(CAM_BLOCK)])
                    for k in range(k_count)
                ],
                dim=1,
            )
            maps: dict[str, dict[int, torch.Tensor]] = {m: {} for m in self.methods}
            for index, block in enumerate(BLOCKS):
                grads = [per_target[k][index].float() / grad_scale for k in range(k_count)]
                for method, fn in self._functions.items():
                    if METHOD_REGISTRY[method].gradients:
                        target_maps = [fn(acts32[index], g) for g in grads]
                    else:  # one map for every target
                        target_maps = [fn(acts32[index], None)] * k_count
                    maps[method][block] = torch.stack(target_maps, dim=1).contiguous()
        return Explanation(logits.detach(), cam.contiguous(), maps, target_ids), finite
