"""MURA's own files: its image-path CSVs and its labelled-studies CSVs, whose labels must agree with the
study folder names."""

from __future__ import annotations

import csv
import posixpath
import re
from pathlib import Path

import pandas as pd

from densecam_core.data.decode import is_image_name
from densecam_core.data.errors import ManifestError
from densecam_core.data.mura import MURA_DIR
from densecam_core.data.rows import rows_from_relative_paths


def mura_root_of_csv(csv_path: Path) -> Path:
    """MURA CSV paths start with 'MURA-v1.1/': they are relative to the folder containing it."""
    parent = csv_path.resolve().parent
    return parent.parent if parent.name == MURA_DIR else parent


def read_mura_paths(csv_path: Path, root: Path) -> pd.DataFrame:
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        try:
            paths = [row[0].strip() for row in reader if row and row[0].strip()]
        except csv.Error as exc:
            raise ManifestError(f"{csv_path}: line {reader.line_num}: {exc}") from None
    return rows_from_relative_paths(paths, root)


def read_labelled_studies(csv_path: Path, root: Path) -> pd.DataFrame:
    rows: list[str] = []
    labels: dict[str, int] = {}
    with open(csv_path, newline="", encoding="utf-8") as handle:
        for line, row in enumerate(csv.reader(handle), start=1):
            if not row:
                continue
            if len(row) != 2 or row[1].strip() not in ("0", "1"):
                raise ManifestError(f"{csv_path}: line {line} is not 'study_folder/,label': {row!r}")
            study = row[0].strip().rstrip("/")
            labels[study] = int(row[1])
            folder = root / study
            images = (
                sorted(
                    (p.name for p in folder.iterdir() if p.is_file() and is_image_name(p.name)),
                    key=_image_number,
                )
                if folder.is_dir()
                else []
            )
            if not images:
                raise ManifestError(f"{csv_path}: line {line}: study folder {str(folder)!r} holds no images")
            rows.extend(f"{study}/{name}" for name in images)
    frame = rows_from_relative_paths(rows, root)
    return apply_study_labels(frame, labels, str(csv_path))


def _image_number(name: str) -> tuple[int, str]:
    match = re.search(r"(\d+)", name)
    return (int(match.group(1)) if match else 0, name)


def cross_check_labels(frame: pd.DataFrame, mura: Path) -> pd.DataFrame:
    for split in ("train", "valid"):
        labelled = mura / f"{split}_labeled_studies.csv"
        if labelled.exists():
            with open(labelled, newline="", encoding="utf-8") as handle:
                labels = {r[0].strip().rstrip("/"): int(r[1]) for r in csv.reader(handle) if len(r) == 2}
            frame = apply_study_labels(frame, labels, str(labelled))
    return frame


def apply_study_labels(frame: pd.DataFrame, labels: dict[str, int], source: str) -> pd.DataFrame:
    """Labels from a labelled-studies CSV must agree with the _positive/_negative folder names."""
    study_dirs = frame["image_id"].map(lambda p: posixpath.dirname(p))
    listed = study_dirs.map(labels)
    conflict = listed.notna() & frame["label"].notna() & (listed != frame["label"])
    if conflict.any():
        bad = sorted(set(study_dirs[conflict]))[:10]
        raise ManifestError(f"labels in {source} contradict the study folder names for: {bad}")
    frame["label"] = frame["label"].where(frame["label"].notna(), listed)
    return frame
