"""Local folders: MURA v1.1 as downloaded (its CSVs), a DICOMDIR, or any folder of images walked in order."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import pandas as pd

from densecam_core.data.errors import ManifestError
from densecam_core.data.folders import DICOMDIR, describe_skipped, dicomdir_images, walk_images
from densecam_core.data.mura import MURA_DIR
from densecam_core.data.rows import rows_from_relative_paths
from densecam_core.data.sources.locations import is_url
from densecam_core.data.sources.mura_csv import cross_check_labels, read_mura_paths
from densecam_core.data.sources.registry import SourceOptions


class FolderSource:
    described: ClassVar[str] = (
        "a folder (MURA-v1.1 or its parent, a folder of images or DICOM files, or one with a DICOMDIR)"
    )

    @classmethod
    def accepts(cls, text: str) -> bool:
        return not is_url(text) and os.path.isdir(text)

    def __init__(self, text: str, options: SourceOptions) -> None:
        self.folder = Path(text)

    def recorded(self) -> str:
        return str(self.folder)

    def rows(self) -> pd.DataFrame:
        folder = self.folder
        mura = folder if (folder / "train_image_paths.csv").exists() or folder.name == MURA_DIR else folder / MURA_DIR
        csvs = [mura / f"{split}_image_paths.csv" for split in ("train", "valid")]
        if any(p.exists() for p in csvs):
            frames = [read_mura_paths(p, mura.parent) for p in csvs if p.exists()]
            return cross_check_labels(pd.concat(frames, ignore_index=True), mura)
        if (folder / DICOMDIR).is_file():
            return rows_from_relative_paths(dicomdir_images(folder / DICOMDIR), folder)
        # no official CSVs: walk the folder (sorted, hidden and non-image files skipped, and counted)
        root = folder.parent if folder.name == MURA_DIR else folder
        files, skipped = walk_images(folder, root)
        if not files:
            raise ManifestError(
                f"folder {str(folder)!r} holds no .png/.jpg images and no DICOM files "
                f"(skipped: {describe_skipped(skipped)})"
            )
        frame = rows_from_relative_paths(files, root)
        frame.attrs["skipped"] = skipped
        frame.attrs["walked_folder"] = str(folder)  # readers refuse files that a link leads out of it
        return frame


class DicomdirSource:
    described: ClassVar[str] = "a DICOMDIR file"

    @classmethod
    def accepts(cls, text: str) -> bool:
        return not is_url(text) and os.path.basename(text).upper() == DICOMDIR and os.path.isfile(text)

    def __init__(self, text: str, options: SourceOptions) -> None:
        self.path = Path(text)

    def recorded(self) -> str:
        return str(self.path)

    def rows(self) -> pd.DataFrame:
        return rows_from_relative_paths(dicomdir_images(self.path), self.path.parent)
