"""Loading a DenseNet (121, 161, 169, 201) from any checkpoint layout users actually have, and fingerprinting it.

Why a key mapper: radiograph models circulate as torchvision state dicts, DataParallel/DDP dumps
(``module.``), old torchvision pickles (``denselayer1.norm.1.weight``), the original MURA
interpretability code's layout (``features_first.*``, ``features.0.denseblock1.*``), CheXNet's
(``densenet121.features.*``, a ``classifier.0`` Linear before its Sigmoid) and torchxrayvision's (one
input channel, an ``op_threshs`` buffer). All of them are mapped onto torchvision's names, the
architecture is read from the shapes, and the weights are loaded strictly: a silent ``strict=False``
would explain a half-random network.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch

from densecam_core.model.architecture import ArchitectureError, Recognised, build, recognise
from densecam_core.vocabulary import DEFAULT_ARCHITECTURE, validate_architecture

DEFAULT_SEED = 0

_LEGACY_LAYER_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)
_MURA_STAGE_KEY = re.compile(r"^features\.\d+\.((?:denseblock|transition)\d|norm5)\.")
_CHEXNET_PREFIX = re.compile(r"^densenet(?:121|161|169|201)\.")
_IGNORED_KEYS = {"op_threshs": "torchxrayvision's operating thresholds (densecam explains logits)"}
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read as DenseNet weights; the message names the file."""


class CheckpointNote(UserWarning):
    """Something of a checkpoint that was left out on purpose (e.g. torchxrayvision's ``op_threshs``)."""


def canonical_state_dict(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Map any supported checkpoint layout onto torchvision's DenseNet key names."""
    state = _unwrap(state)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise CheckpointError(f"checkpoint key {key!r} is not a string")
        name = key
        while name.startswith("module."):
            name = name[len("module.") :]
        if name in _IGNORED_KEYS:
            warnings.warn(f"checkpoint key {name!r} ignored: {_IGNORED_KEYS[name]}", CheckpointNote, stacklevel=3)
            continue
        name = _CHEXNET_PREFIX.sub("", name)  # CheXNet: the torchvision model as an attribute of a wrapper
        if name.startswith("classifier.0."):  # CheXNet: Sequential(Linear, Sigmoid); the Linear's logits are explained
            name = "classifier." + name[len("classifier.0.") :]
        if name.startswith("features_first."):
            name = "features." + name[len("features_first.") :]
        name = _MURA_STAGE_KEY.sub(r"features.\1.", name)
        legacy = _LEGACY_LAYER_KEY.match(name)
        if legacy:
            name = legacy.group(1) + legacy.group(2)
        if name in out:
            raise CheckpointError(f"two checkpoint keys map to {name!r} (one of them is {key!r})")
        out[name] = value
    return out


def _unwrap(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """Descend into ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers (training-loop dumps)."""
    for _ in range(3):
        if any(isinstance(v, torch.Tensor) for v in state.values()):
            return state
        inner = next((state[k] for k in _WRAPPER_KEYS if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            return state
        state = inner
    return state


def read_checkpoint(checkpoint: str | os.PathLike | BinaryIO | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Read a checkpoint safely (``weights_only=True``) and return canonical tensors.

    Accepts a path, a binary file object, raw bytes-like file contents or an in-memory state dict.
    """
    if isinstance(checkpoint, Mapping):
        return canonical_state_dict(checkpoint)
    name = _describe(checkpoint)
    if isinstance(checkpoint, (str, os.PathLike)):
        path = Path(checkpoint)
        if not path.is_file():
            raise CheckpointError(f"checkpoint {name}: no such file")
        if path.stat().st_size == 0:
            raise CheckpointError(f"checkpoint {name}: the file is empty")
    try:
        loaded = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated / foreign / malicious files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            reason = "it holds Python objects beyond tensors (refused: weights_only=True); " + reason
        raise CheckpointError(
            f"checkpoint {name} could not be read as PyTorch weights: {reason}. "
            "Expected a file written by torch.save(model.state_dict(), path)."
        ) from exc
    if not isinstance(loaded, Mapping):
        raise CheckpointError(f"checkpoint {name} holds a {type(loaded).__name__}, not a state dict")
    try:
        return canonical_state_dict(loaded)
    except CheckpointError as exc:
        raise CheckpointError(f"checkpoint {name}: {exc}") from None


def load_densenet(
    checkpoint: str | os.PathLike | BinaryIO | Mapping[str, Any] | None = None,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
    *,
    seed: int = DEFAULT_SEED,
    architecture: str | None = None,
    in_channels: int = 3,
) -> torch.nn.Module:
    """Return torchvision's DenseNet in eval mode: the architecture, input channels and outputs read from
    ``checkpoint``'s shapes, its weights loaded strictly.

    ``checkpoint=None`` gives a deterministic random init from ``seed`` of ``architecture`` (default
    DenseNet169) with ``in_channels`` and ``num_classes`` (default 1); nothing is downloaded. With a
    checkpoint, ``architecture`` (if given) must be what the checkpoint is.
    """
    name = _describe(checkpoint)
    if checkpoint is None:
        found = Recognised(validate_architecture(architecture or DEFAULT_ARCHITECTURE), in_channels, num_classes or 1)
        state = None
    else:
        state = read_checkpoint(checkpoint)
        try:
            found = recognise(state, f"checkpoint {name}")
        except ArchitectureError as exc:
            raise CheckpointError(str(exc)) from None
        if architecture is not None and found.architecture.name != architecture:
            raise CheckpointError(
                f"checkpoint {name} is a {found.architecture.title}, not a {validate_architecture(architecture).title}"
            )
    classes = found.num_classes if num_classes is None else int(num_classes)
    if classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {classes}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build(found.architecture, classes, found.in_channels)
    if state is not None:
        _load_strict(model, state, name, found.architecture.title)
    return model.to(device).eval()


def load_densenet169(
    checkpoint: str | os.PathLike | BinaryIO | Mapping[str, Any] | None = None,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
    *,
    seed: int = DEFAULT_SEED,
) -> torch.nn.Module:
    """MURA's DenseNet169 (``load_densenet`` that refuses other architectures, naming what it found).

    ``checkpoint=None`` gives a deterministic random init from ``seed``; nothing is downloaded.
    ``num_classes`` defaults to the checkpoint classifier's rows (1 without a checkpoint).
    """
    return load_densenet(checkpoint, num_classes, device, seed=seed, architecture=DEFAULT_ARCHITECTURE)


def _load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], name: str, title: str) -> None:
    """Load every tensor or raise one error listing what is missing, unexpected or mis-shaped."""
    expected = model.state_dict()
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(state) - optional)
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if not isinstance(state[k], torch.Tensor) or state[k].shape != expected[k].shape
    )
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape conflicts", mismatched)):
            if keys:
                shown = ", ".join(keys[:8]) + (f", … ({len(keys)} in all)" if len(keys) > 8 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointError(
            f"checkpoint {name} does not match torchvision's {title} "
            f"(num_classes={expected['classifier.weight'].shape[0]}): " + "; ".join(parts)
        )
    non_finite = sorted(k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if non_finite:
        shown = ", ".join(non_finite[:8]) + (f", … ({len(non_finite)} in all)" if len(non_finite) > 8 else "")
        raise CheckpointError(
            f"checkpoint {name} holds NaN or infinite weights in {shown}: every explanation would be NaN; "
            "use a checkpoint from before training diverged"
        )
    full = dict(state)
    for key in optional - set(state):
        full[key] = expected[key]
    model.load_state_dict(full, strict=True)


def model_fingerprint(model: torch.nn.Module | Mapping[str, Any]) -> str:
    """SHA-256 over canonical names, dtypes, shapes and bytes of the weights (``num_batches_tracked`` excluded).

    The same weights saved in any supported layout give the same digest; any changed weight changes it.
    """
    state = model.state_dict() if isinstance(model, torch.nn.Module) else canonical_state_dict(model)
    digest = hashlib.sha256()
    for key in sorted(state):
        if key.endswith("num_batches_tracked"):
            continue
        tensor = state[key].detach().to("cpu").contiguous()
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def state_dict_bytes(model: torch.nn.Module) -> bytes:
    """Serialise weights to bytes (torchvision layout) so Ray ships them once through the object store."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    return buffer.getvalue()


def _describe(checkpoint: object) -> str:
    if checkpoint is None:
        return "<random init>"
    if isinstance(checkpoint, (str, os.PathLike)):
        return f"'{os.fspath(checkpoint)}'"
    if isinstance(checkpoint, Mapping):
        return "<state dict>"
    return f"<{getattr(checkpoint, 'name', type(checkpoint).__name__)}>"
