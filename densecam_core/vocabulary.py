"""densecam's vocabulary: the method registry, map keys, blocks, precisions, block taps and grid sizes. No torch
import.

Why one torch-free place: the Explainer's forward, its architecture check, its precision casts,
the store's format and ``run.json`` all speak of the same four taps; notebooks and the store
reader read the same names without loading a deep-learning framework.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

BLOCKS: tuple[int, ...] = (1, 2, 3, 4)
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
RESIZE_MODES: tuple[str, ...] = ("stretch", "pad")
CPU_BATCH = 8
GPU_BATCHES: tuple[int, ...] = (128, 64, 32, 16, 8)
"""Candidates for a GPU's batch, largest first: small batches leave a GPU waiting on kernel launches."""
CAM_BLOCK = 4
"""CAM exists only where the classifier reads: the last block."""


@dataclass(frozen=True)
class Method:
    """An explanation method the one-pass Explainer computes at every block: ``function`` (``module:function``,
    imported when explaining: it needs torch) maps a block's activations, and with ``gradients`` the gradients of
    one target's logit, to maps. Without gradients a method gives one map for every target (Eigen-CAM). A method
    that needs passes of its own (Score-CAM, integrated gradients) is not one of these (docs/ARCHITECTURE.md)."""

    name: str  # what runs record and the store names its arrays by (``<name>/block<b>``): never renamed
    function: str
    title: str
    gradients: bool = True
    default: bool = False  # a built-in computed unless a run names its methods (``METHODS``)


METHOD_NAME = re.compile(r"^[a-z][a-z0-9]{0,31}$")
"""A method's name: a lower-case letter, then letters or digits (``gradcam2``); never a path."""
NOT_METHODS = ("cam", "logits", "targets", "random")
"""Names of a run's other arrays and of the evaluation's random baseline."""
BUILT_IN_METHODS: tuple[Method, ...] = (
    Method("gradcam", "densecam_core.cam.methods:gradcam", "Grad-CAM", default=True),
    Method("gradcampp", "densecam_core.cam.methods:gradcampp", "Grad-CAM++", default=True),
    Method("layercam", "densecam_core.cam.methods:layercam", "LayerCAM", default=True),
    Method("xgradcam", "densecam_core.cam.methods:xgradcam", "XGrad-CAM", default=True),
    Method("hirescam", "densecam_core.cam.methods:hirescam", "HiResCAM", default=True),
    Method("eigencam", "densecam_core.cam.methods:eigencam", "Eigen-CAM", gradients=False),
)
METHODS: tuple[str, ...] = tuple(m.name for m in BUILT_IN_METHODS if m.default)
"""The methods a run computes unless told otherwise (the gradient methods); CAM is always computed besides. Fixed
here, as configs take it for their default: a method registered later is computed when a run names it."""
METHOD_REGISTRY: dict[str, Method] = {}
"""Every method, in canonical order: the Explainer, run settings, the store's names and its readers use this."""


def register_method(method: Method) -> Method:
    """Add a method (its name becomes part of stored array names, so it must be one the store can hold)."""
    if not METHOD_NAME.match(method.name) or method.name in NOT_METHODS:
        raise ValueError(
            f"method name {method.name!r}: a lower-case letter then letters or digits, none of {NOT_METHODS}"
        )
    if method.default and method.name not in METHODS:
        raise ValueError(
            f"method {method.name!r}: only the built-in methods are computed by default; register it with "
            "default=False and name it in a run's methods"
        )
    METHOD_REGISTRY[method.name] = method
    return method


for _method in BUILT_IN_METHODS:
    register_method(_method)


def method_names() -> tuple[str, ...]:
    """Every registered method, in canonical order."""
    return tuple(METHOD_REGISTRY)


@dataclass(frozen=True, order=True)
class MapKey:
    """One map of a run: a method at a block, for a position along the run's target axis. CAM is
    ``MapKey("cam")`` (block 4 only); ``random`` is the evaluation's baseline."""

    method: str
    block: int = CAM_BLOCK
    target: int = 0

    def __post_init__(self) -> None:
        if not METHOD_NAME.match(self.method):
            raise ValueError(f"method {self.method!r} is not a method name")
        if self.block not in BLOCKS or (self.method == "cam" and self.block != CAM_BLOCK):
            allowed = (CAM_BLOCK,) if self.method == "cam" else BLOCKS
            raise ValueError(f"block must be one of {allowed} for {self.method!r}, got {self.block!r}")

    @property
    def array_name(self) -> str:
        """Where a run stores it (``heatmaps.zarr/<array_name>``): ``cam`` or ``<method>/block<b>``."""
        return "cam" if self.method == "cam" else f"{self.method}/block{self.block}"

    @property
    def label(self) -> str:
        """How pages and captions name it: ``CAM``, ``Grad-CAM block 3``."""
        if self.method == "cam":
            return "CAM"
        known = METHOD_REGISTRY.get(self.method)
        return f"{known.title if known else self.method} block {self.block}"

    @classmethod
    def of(cls, method: str, block: int | None = None, target: int = 0) -> MapKey:
        """The key of a (method, block) as the readers take them: CAM's block may be left out (None)."""
        return cls(method, CAM_BLOCK if method == "cam" and block is None else block, target)  # type: ignore[arg-type]

    def for_target(self, target: int) -> MapKey:
        return MapKey(self.method, self.block, target)

    @classmethod
    def from_array_name(cls, name: str, target: int = 0) -> MapKey:
        """The key of a stored map array (a ValueError for any other name: the store's name check)."""
        method, _, block = name.partition("/block")
        if method == "cam" and not block:
            return cls("cam", CAM_BLOCK, target)
        if not block.isdigit() or name != f"{method}/block{block}":
            raise ValueError(f"{name!r} is not the name of a stored map")
        return cls(method, int(block), target)


def map_keys(methods: Sequence[str], blocks: Sequence[int] = BLOCKS, target: int = 0) -> list[MapKey]:
    """Every map a run holds for one target, in the store's order: CAM first, then each method at each block."""
    return [MapKey("cam", CAM_BLOCK, target)] + [MapKey(m, b, target) for m in methods for b in blocks]


def chosen_keys(methods: Sequence[str], blocks: Sequence[int] = BLOCKS, target: int = 0) -> list[MapKey]:
    """The maps a user names by methods (``cam`` among them or not) and blocks: CAM once, at its block."""
    return [MapKey(m, b, target) for m in methods for b in ((CAM_BLOCK,) if m == "cam" else blocks)]


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
    unknown = [m for m in methods if m not in METHOD_REGISTRY]
    if unknown or not methods:
        raise ValueError(f"unknown method(s) {unknown or list(methods)!r}; valid methods: {', '.join(METHOD_REGISTRY)}")
    return tuple(m for m in METHOD_REGISTRY if m in methods)


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
