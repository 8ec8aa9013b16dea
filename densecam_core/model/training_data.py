"""What training reads: the train/valid split, per-body-part class weights, and a dataset of augmented radiographs whose unreadable images are reported, not fatal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from densecam_core.data.decode import ImageError
from densecam_core.data.errors import ManifestError
from densecam_core.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, load_for_model

_BLACK = (-IMAGENET_MEAN / IMAGENET_STD).tolist()  # what a rotation fills the corners with


def split_for_training(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (train, valid) rows or raise ManifestError saying what the manifest lacks."""
    if "label" not in frame.columns or frame["label"].isna().all():
        raise ManifestError(
            "the manifest has no labels: training needs MURA study labels "
            "(a MURA-v1.1 folder, *_labeled_studies.csv, or a 'label' column)"
        )
    unlabelled = frame["label"].isna()
    if unlabelled.any():
        raise ManifestError(
            f"{int(unlabelled.sum())} manifest rows have no label, e.g. "
            f"{frame.loc[unlabelled, 'image_id'].iloc[0]!r}; label them or drop them"
        )
    if "split" not in frame.columns:
        raise ManifestError("the manifest has no 'split' column: training needs train and valid rows")
    train, valid = frame[frame["split"] == "train"], frame[frame["split"] == "valid"]
    for name, part in (("train", train), ("valid", valid)):
        if part.empty:
            raise ManifestError(
                f"the manifest has no {name} split (splits found: {sorted(frame['split'].dropna().unique())})"
            )
        classes = sorted(part["label"].astype(int).unique())
        if len(classes) < 2:
            raise ManifestError(
                f"the {name} split has only label {classes[0]} "
                f"({'abnormal' if classes[0] else 'normal'}): a classifier needs both classes"
            )
    return train.reset_index(drop=True), valid.reset_index(drop=True)


def body_part_weights(train: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """``{body_part: (w_normal, w_abnormal)}`` from training image counts (MURA paper, eq. 1).

    A body part with only one class in training falls back to the weights of all training images,
    so its images still count in the loss.
    """

    def weights(labels: pd.Series) -> tuple[float, float]:
        abnormal, normal = int((labels == 1).sum()), int((labels == 0).sum())
        return abnormal / (abnormal + normal), normal / (abnormal + normal)

    overall = weights(train["label"].astype(int))
    parts = (
        train["body_part"].fillna("UNKNOWN")
        if "body_part" in train.columns
        else pd.Series("UNKNOWN", index=train.index)
    )
    result = {"*": overall}
    for part, labels in train["label"].astype(int).groupby(parts):
        result[str(part)] = weights(labels) if labels.nunique() == 2 else overall
    return result


class RadiographDataset(Dataset):
    """Decoded, resized, normalised images; bad files come back as their error so training skips them."""

    def __init__(
        self,
        frame: pd.DataFrame,
        size: int,
        resize: str,
        weights: dict[str, tuple[float, float]],
        augment: bool,
        seed: int,
        max_rotation: float = 30.0,
    ) -> None:
        self.paths = frame["path"].tolist()
        self.image_ids = frame["image_id"].tolist()
        self.labels = frame["label"].astype(int).tolist()
        parts = frame["body_part"].fillna("UNKNOWN").tolist() if "body_part" in frame.columns else ["*"] * len(frame)
        self.weights = [weights.get(p, weights["*"])[label] for p, label in zip(parts, self.labels)]
        self.size, self.resize, self.augment, self.seed, self.max_rotation = size, resize, augment, seed, max_rotation
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, float, float, int] | tuple[None, str, str, int]:
        try:
            image = torch.from_numpy(load_for_model(self.paths[index], self.size, self.resize).array)
        except ImageError as exc:
            return None, self.image_ids[index], exc.reason, index
        if self.augment:
            # per-sample generator: the same seed gives the same augmentations whatever the loader workers
            rng = np.random.default_rng([self.seed, self.epoch, index])
            if rng.random() < 0.5:
                image = TF.horizontal_flip(image)
            angle = float(rng.uniform(-self.max_rotation, self.max_rotation))
            image = TF.rotate(image, angle, interpolation=TF.InterpolationMode.BILINEAR, fill=_BLACK)
        return image, float(self.labels[index]), float(self.weights[index]), index


def collate(items: list) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, list[dict[str, str]], list[int]]:
    good = [item for item in items if item[0] is not None]
    bad = [{"image_id": item[1], "reason": item[2]} for item in items if item[0] is None]
    if not good:
        return None, torch.empty(0), torch.empty(0), bad, []
    images = torch.stack([item[0] for item in good])
    labels = torch.tensor([item[1] for item in good], dtype=torch.float32)
    weights = torch.tensor([item[2] for item in good], dtype=torch.float32)
    return images, labels, weights, bad, [item[3] for item in good]
