"""densecam's vocabulary: methods, blocks, precisions, block taps and grid sizes. No torch import.

Why one torch-free place: the Explainer's forward, its architecture check, its precision casts,
the store's format and ``run.json`` all speak of the same four taps; notebooks and the store
reader read the same names without loading a deep-learning framework.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

METHODS: tuple[str, ...] = ("gradcam", "gradcampp", "layercam", "xgradcam", "hirescam")
"""The methods a run computes unless told otherwise: the gradient methods."""
ALL_METHODS: tuple[str, ...] = (*METHODS, "eigencam")
"""Every method the Explainer knows, in canonical order; Eigen-CAM (activations only, the same map for every
target) is computed when asked for."""
"""The gradient methods, in canonical order; CAM (block 4 only) is always computed besides."""
BLOCKS: tuple[int, ...] = (1, 2, 3, 4)
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
RESIZE_MODES: tuple[str, ...] = ("stretch", "pad")
CPU_BATCH = 8
GPU_BATCHES: tuple[int, ...] = (128, 64, 32, 16, 8)
"""Candidates for a GPU's batch, largest first: small batches leave a GPU waiting on kernel launches."""
CAM_KEY: tuple[str, int] = ("cam", 4)
"""CAM's (method, block): the last dense block's class activation map."""


def map_keys(methods: Sequence[str], blocks: Sequence[int] = BLOCKS) -> list[tuple[str, int]]:
    """Every map a run holds, in the store's order: CAM first, then each method at each block."""
    return [CAM_KEY] + [(m, b) for m in methods for b in blocks]


STEM: tuple[str, ...] = ("features.conv0", "features.norm0", "features.relu0", "features.pool0")
"""The modules before block 1, run without gradients."""


@dataclass(frozen=True)
class BlockTap:
    """Where block ``block``'s activation is taken: declared metadata, never a string to eval.

    The forward runs ``stage`` (a dense block) and then ``module`` (the tapped module); its output,
    after a ReLU when ``relu`` is set, is the block activation the maps are computed on.
    """

    block: int
    stage: str
    module: str
    channels: int
    stride: int
    relu: bool
    description: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Architecture:
    """A torchvision DenseNet: layers per dense block, growth rate and the stem's output channels.

    torchvision's DenseNets share one module layout (``features.conv0 … denseblock1-4, transition1-3,
    norm5``, ``classifier``) and the taps' strides; only these numbers, and so the taps' channels, differ.
    """

    name: str
    block_config: tuple[int, int, int, int]
    growth_rate: int
    init_features: int

    @property
    def channels(self) -> tuple[int, ...]:
        """Channels at each tap: a block adds ``layers x growth`` channels, a transition halves them."""
        out, channels = [], self.init_features
        for block, layers in enumerate(self.block_config, 1):
            channels += layers * self.growth_rate
            channels = channels // 2 if block < 4 else channels
            out.append(channels)
        return tuple(out)

    @property
    def title(self) -> str:
        return "DenseNet" + self.name.removeprefix("densenet")


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture("densenet121", (6, 12, 24, 16), 32, 64),
        Architecture("densenet161", (6, 12, 36, 24), 48, 96),
        Architecture("densenet169", (6, 12, 32, 32), 32, 64),
        Architecture("densenet201", (6, 12, 48, 32), 32, 64),
    )
}
DEFAULT_ARCHITECTURE = "densenet169"
"""MURA's DenseNet: what a run without a checkpoint, and every run before other architectures, explains."""

_TAP_PLACES = (
    ("features.denseblock1", "features.transition1", 8, False, "output of transition 1 (after its average pool)"),
    ("features.denseblock2", "features.transition2", 16, False, "output of transition 2 (after its average pool)"),
    ("features.denseblock3", "features.transition3", 32, False, "output of transition 3 (after its average pool)"),
    ("features.denseblock4", "features.norm5", 32, True, "ReLU(norm5): the tensor fed to global average pooling"),
)


def validate_architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}; got {name!r}")
    return ARCHITECTURES[name]


def taps_for(architecture: str = DEFAULT_ARCHITECTURE) -> tuple[BlockTap, ...]:
    """The four taps of one architecture: the same modules and strides, its own channels."""
    channels = validate_architecture(architecture).channels
    return tuple(
        BlockTap(block, stage, module, channels[block - 1], stride, relu, description)
        for block, (stage, module, stride, relu, description) in enumerate(_TAP_PLACES, 1)
    )


BLOCK_TAPS: tuple[BlockTap, ...] = taps_for(DEFAULT_ARCHITECTURE)
INPUT_NORMS: tuple[str, ...] = ("imagenet", "xrv")
"""How pixels become the model's input: ``imagenet`` (torchvision's: [0, 1], then ImageNet's mean and
std per channel) or ``xrv`` (torchxrayvision's: one grey channel scaled to [-1024, 1024])."""
DEFAULT_INPUT_NORM = "imagenet"


def validate_input_norm(name: str) -> str:
    if name not in INPUT_NORMS:
        raise ValueError(f"`input_norm` must be one of {', '.join(INPUT_NORMS)}; got {name!r}")
    return name


TAPS: dict[int, BlockTap] = {tap.block: tap for tap in BLOCK_TAPS}
CAM_BLOCK = 4
"""CAM exists only where the classifier reads: the last block."""


def required_modules() -> tuple[str, ...]:
    """Every module the Explainer's forward calls, in order: the stem, then each tap's stage and module."""
    return STEM + tuple(name for tap in BLOCK_TAPS for name in (tap.stage, tap.module))


def block_grid(height: int, width: int | None = None) -> dict[int, tuple[int, int]]:
    """Spatial size (h, w) of each block's maps for an input of ``height`` x ``width`` pixels.

    The stem (7x7 stride-2 convolution, 3x3 stride-2 pool) divides by 4, each transition's average
    pool by 2 again; block 4 has no transition after it, so it keeps block 3's grid.
    """

    def sizes(n: int) -> dict[int, int]:
        n = (n + 6 - 7) // 2 + 1  # conv0: 7x7, stride 2, pad 3
        n = (n + 2 - 3) // 2 + 1  # pool0: 3x3, stride 2, pad 1
        out = {}
        for tap in BLOCK_TAPS:
            if tap.module.startswith("features.transition"):
                n //= 2
            out[tap.block] = n
        return out

    hs, ws = sizes(height), sizes(width if width is not None else height)
    return {b: (hs[b], ws[b]) for b in BLOCKS}


def validate_methods(methods: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Methods in canonical order; unknown names raise a ValueError listing the valid ones."""
    if methods is None:
        return METHODS
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown method(s) {unknown or list(methods)!r}; valid methods: {', '.join(ALL_METHODS)}")
    return tuple(m for m in ALL_METHODS if m in methods)


def validate_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def validate_resize_mode(mode: str) -> str:
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    return mode


DICOM_WINDOWS = ("first", "lut", "minmax", "percentile")
"""How the VOI transform is chosen: ``first`` the file's first window, else its VOI LUT, else min-max;
``lut`` its VOI LUT, else its first window, else min-max; ``minmax`` the range of the image's values;
``percentile`` the 0.5-99.5 percentile range of the image's values (the file's own VOI ignored)."""


DEFAULT_DICOM_WINDOW = "first"
