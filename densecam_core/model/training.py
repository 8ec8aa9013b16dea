"""Fine-tune DenseNet169 with one sigmoid output the way the MURA paper did.

Weighted binary cross-entropy with per-body-part class weights from the training images
(w_abnormal = N/(A+N), w_normal = A/(A+N)), Adam (1e-4, betas 0.9/0.999), learning rate / 10 when
the validation loss plateaus, random horizontal flips and rotations up to 30 degrees. Evaluation
reports AUROC, sensitivity, specificity and Cohen's kappa per image and per study (mean of views).
Everything that can go wrong with the manifest is checked before the first step.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from densecam_core import fileio
from densecam_core.data.geometry import validate_resize_mode
from densecam_core.model.checkpoint import CheckpointError, load_densenet, model_fingerprint, read_checkpoint
from densecam_core.model.classification import image_and_study_metrics
from densecam_core.model.precision import reduced_dtype, warn_if_emulated
from densecam_core.model.training_data import RadiographDataset, body_part_weights, collate, split_for_training
from densecam_core.options import option
from densecam_core.vocabulary import (
    ARCHITECTURES,
    DEFAULT_ARCHITECTURE,
    PRECISIONS,
    RESIZE_MODES,
    validate_architecture,
)


def parse_betas(text: str) -> tuple[float, float]:
    """Two comma-separated numbers in [0, 1)."""
    try:
        betas = tuple(float(v) for v in text.split(","))
    except ValueError:
        betas = ()
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"betas are two numbers in [0, 1), e.g. 0.9,0.999; got {text!r}")
    return betas[0], betas[1]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained weights; saved into the metrics JSON."""

    size: int = option(320, help="input side in pixels (the MURA paper's 320)")
    resize: str = option("stretch", help="how images become square", choices=RESIZE_MODES)
    epochs: int = option(10, help="passes over the training images")
    batch_size: int = option(8, help="images per step (>= 2: BatchNorm)")
    lr: float = option(1e-4, help="Adam learning rate")
    betas: tuple[float, float] = option((0.9, 0.999), help="Adam's betas, two numbers", parse=parse_betas)
    plateau_patience: int = option(1, help="epochs without validation-loss improvement before lr / 10")
    max_rotation: float = option(30.0, help="random rotations up to this many degrees (0..180)")
    precision: str = option(
        "fp32", help="autocast dtype: bf16 on CPUs with AVX512-BF16/AMX or CUDA; fp16 on CUDA", choices=PRECISIONS
    )
    device: str = option("cpu", help="cpu, cuda, cuda:1 … (default: cuda when available)", cli_default=None)
    seed: int = option(0, help="seeds init, shuffling and augmentation")
    loader_workers: int = option(
        0, help="decode processes (default: 0 on machines with <= 4 CPUs, else 4)", cli_default=None
    )
    channels_last: bool = option(True, help="channels-last memory layout (faster convolutions on CPU)")
    init: str | None = option(
        None,
        help="start from this weights file (torchvision ImageNet densenet169 or a MURA checkpoint); never downloaded. "
        "Default: seeded random init",
    )
    arch: str = option(DEFAULT_ARCHITECTURE, help="the DenseNet to train", choices=tuple(ARCHITECTURES))

    def validate(self) -> None:
        validate_architecture(self.arch)
        if not 32 <= self.size <= 2048:
            raise ValueError(f"size must be in 32..2048 pixels, got {self.size}")
        validate_resize_mode(self.resize)
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError(f"need epochs >= 1 and batch_size >= 2 (BatchNorm), got {self.epochs}, {self.batch_size}")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr must be in (0, 1), got {self.lr}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.precision == "fp16" and not str(self.device).startswith("cuda"):
            raise ValueError("fp16 training needs a CUDA device; on CPU use bf16 or fp32")
        if not 0 <= self.max_rotation <= 180:
            raise ValueError(f"max_rotation must be in 0..180 degrees, got {self.max_rotation}")


@dataclass
class TrainResult:
    checkpoint: Path
    metrics_path: Path
    fingerprint: str
    history: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)


def initial_model(init: str | os.PathLike | None, seed: int, arch: str = DEFAULT_ARCHITECTURE) -> torch.nn.Module:
    """Seeded random init of ``arch``, or features from a weights file the user has (ImageNet or MURA).

    A 1000-class ImageNet classifier is replaced by a seeded one-output head; the features must
    match torchvision's ``arch`` exactly (strict), so a wrong file fails here, not mid-training.
    """
    if init is None:
        return load_densenet(None, num_classes=1, seed=seed, architecture=arch)
    state = read_checkpoint(init)
    head = state.get("classifier.weight")
    if head is not None and head.ndim == 2 and head.shape[0] == 1:
        return _named(init, lambda: load_densenet(state, num_classes=1, seed=seed, architecture=arch))
    fresh = load_densenet(None, num_classes=1, seed=seed, architecture=arch).state_dict()
    features = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    features.update({k: fresh[k] for k in ("classifier.weight", "classifier.bias")})
    return _named(init, lambda: load_densenet(features, num_classes=1, seed=seed, architecture=arch))


def _named(init: str | os.PathLike, load: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    try:
        return load()
    except CheckpointError as exc:
        raise CheckpointError(f"`init` {os.fspath(init)!r}: {exc}") from None


def _autocast(config: TrainConfig) -> Any:
    device_type = "cuda" if str(config.device).startswith("cuda") else "cpu"
    dtype = reduced_dtype(config.precision)
    return torch.autocast(device_type, dtype=dtype, enabled=dtype is not None)


def weighted_bce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean of w * BCE(logit, label): the MURA paper's weighted loss."""
    losses = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels, reduction="none")
    return (weights * losses).mean()


def predict(
    model: torch.nn.Module, loader: DataLoader, config: TrainConfig
) -> tuple[np.ndarray, float, list[dict[str, str]]]:
    """Probabilities per dataset row (NaN for unreadable images) and the weighted validation loss."""
    model.eval()
    probabilities = np.full(len(loader.dataset), np.nan)
    total, count, bad = 0.0, 0, []
    with torch.no_grad(), _autocast(config):
        for images, labels, weights, failures, rows in loader:
            bad.extend(failures)
            if images is None:
                continue
            images = images.to(
                config.device, memory_format=torch.channels_last if config.channels_last else torch.contiguous_format
            )
            logits = model(images)[:, 0].float().cpu()
            total += float(weighted_bce(logits, labels, weights)) * len(rows)
            count += len(rows)
            probabilities[rows] = torch.sigmoid(logits).numpy()
    return probabilities, total / max(count, 1), bad


def _train_epoch(
    model: torch.nn.Module,
    batches: Any,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    config: TrainConfig,
    memory_format: torch.memory_format,
    skipped: dict[str, str],
) -> tuple[float, int]:
    """One pass over the training batches; returns the summed weighted loss and the images seen.
    Unreadable images are recorded in ``skipped`` (image id -> reason)."""
    running, seen = 0.0, 0
    for images, labels, sample_weights, failures, rows in batches:
        skipped.update((f["image_id"], f["reason"]) for f in failures)
        if images is None or len(rows) < 2:  # BatchNorm cannot train on one image
            continue
        images = images.to(config.device, memory_format=memory_format)
        with _autocast(config):
            logits = model(images)[:, 0]
        loss = weighted_bce(logits, labels.to(config.device), sample_weights.to(config.device))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        running += float(loss.detach()) * len(rows)
        seen += len(rows)
        if hasattr(batches, "set_postfix"):
            batches.set_postfix(loss=f"{running / seen:.4f}")
    return running, seen


def _write_training_metrics(
    metrics_path: Path,
    out: Path,
    fingerprint: str,
    config: TrainConfig,
    images: tuple[int, int],
    weights: dict[str, Any],
    history: list[dict[str, Any]],
    skipped_rows: list[dict[str, str]],
) -> None:
    """``<name>.metrics.json`` beside the checkpoint: settings, class weights, every epoch, skipped images."""
    document = {
        "checkpoint": str(out),
        "fingerprint": fingerprint,
        "config": asdict(config),
        "train_images": images[0],
        "valid_images": images[1],
        "class_weights": {part: {"normal": w[0], "abnormal": w[1]} for part, w in weights.items()},
        "history": history,
        "final": history[-1] if history else {},
        "skipped_images": skipped_rows,
    }
    fs, path = fileio.filesystem(str(metrics_path))
    fileio.write_json_atomic(fs, path, fileio.strict_json(document))


def _optimisation(model: torch.nn.Module, config: TrainConfig) -> tuple[Any, Any, Any]:
    """Adam, the loss scaler (fp16 gradients underflow without one; bf16 and fp32 need none) and lr / 10
    on a validation-loss plateau."""
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=config.betas)
    scaler = torch.amp.GradScaler("cuda", enabled=config.precision == "fp16")
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=0.1, patience=config.plateau_patience
    )
    return optimizer, scaler, scheduler


def train(
    frame: pd.DataFrame,
    out: str | os.PathLike,
    config: TrainConfig = TrainConfig(),
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
    after_epoch: Callable[[int, torch.nn.Module, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train on ``split == 'train'`` rows, evaluate on ``'valid'`` each epoch, save weights + metrics.

    ``after_epoch(epoch, model, entry)`` runs after each epoch's evaluation, e.g. to keep that
    epoch's weights with ``save_checkpoint``.
    """
    from tqdm.auto import tqdm

    config.validate()
    warn_if_emulated(config.precision, config.device)
    train_rows, valid_rows = split_for_training(frame)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    weights = body_part_weights(train_rows)
    torch.manual_seed(config.seed)
    model = initial_model(config.init, config.seed, config.arch).to(config.device)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer, scaler, scheduler = _optimisation(model, config)
    train_set = RadiographDataset(
        train_rows, config.size, config.resize, weights, True, config.seed, config.max_rotation
    )
    valid_set = RadiographDataset(valid_rows, config.size, config.resize, weights, False, config.seed)
    shuffle = torch.Generator().manual_seed(config.seed)
    loader_options = dict(collate_fn=collate, num_workers=config.loader_workers, persistent_workers=False)
    valid_loader = DataLoader(valid_set, batch_size=config.batch_size * 2, shuffle=False, **loader_options)
    skipped: dict[str, str] = {}
    history: list[dict[str, Any]] = []
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        train_set.epoch = epoch
        model.train()
        loader = DataLoader(
            train_set, batch_size=config.batch_size, shuffle=True, generator=shuffle, drop_last=False, **loader_options
        )
        bar = tqdm(loader, desc=f"epoch {epoch}/{config.epochs}", unit="batch", disable=not progress, leave=False)
        running, seen = _train_epoch(model, bar, optimizer, scaler, config, memory_format, skipped)
        probabilities, valid_loss, failures = predict(model, valid_loader, config)
        skipped.update((f["image_id"], f["reason"]) for f in failures)
        scheduler.step(valid_loss)
        scored = valid_rows.assign(prob=probabilities)
        metrics = image_and_study_metrics(scored)
        entry = {
            "epoch": epoch,
            "train_loss": running / max(seen, 1),
            "valid_loss": valid_loss,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - started,
            "images_per_s": seen / max(time.perf_counter() - started, 1e-9),
            **metrics,
        }
        history.append(entry)
        log(
            f"epoch {epoch}/{config.epochs}: train loss {entry['train_loss']:.4f}, valid loss {valid_loss:.4f}, "
            f"study AUROC {metrics['study']['auroc']:.3f}, image AUROC {metrics['image']['auroc']:.3f} "
            f"({entry['seconds']:.0f} s)"
        )
        if after_epoch is not None:
            after_epoch(epoch, model, entry)
    fingerprint = save_checkpoint(model, out)
    metrics_path = metrics_path_for(out)
    skipped_rows = [{"image_id": k, "reason": v} for k, v in sorted(skipped.items())]
    _write_training_metrics(
        metrics_path, out, fingerprint, config, (len(train_rows), len(valid_rows)), weights, history, skipped_rows
    )
    return TrainResult(
        out, metrics_path, fingerprint, history, {k: history[-1][k] for k in ("image", "study")}, skipped_rows
    )


def metrics_path_for(checkpoint: str | os.PathLike) -> Path:
    """``model.pt`` -> ``model.metrics.json`` beside it."""
    path = Path(checkpoint)
    return path.with_name(path.stem + ".metrics.json")


def save_checkpoint(model: torch.nn.Module, out: str | os.PathLike) -> str:
    """Write the weights in torchvision layout (tensors only, so ``weights_only`` loading works),
    atomically (a crash never leaves half a file under the final name); returns the fingerprint."""
    out = Path(out)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, out)
    return model_fingerprint(state)
