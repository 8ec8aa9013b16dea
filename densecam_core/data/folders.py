"""Manifests from folders: a walk that finds images by name and DICOM files by content, and DICOMDIR indexes."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from densecam_core.data.decode import is_image_name
from densecam_core.data.dicom import is_dicom_name
from densecam_core.data.dicom_metadata import is_dicom_file
from densecam_core.data.errors import ManifestError


def walk_images(folder: Path, root: Path) -> tuple[list[str], dict[str, list[str]]]:
    """Image files below ``folder`` as paths relative to ``root``, and what was skipped, by reason."""
    files: list[str] = []
    skipped: dict[str, list[str]] = {}
    for path in folder.rglob("*"):
        relative = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue  # hidden files and folders (._image1.png, .DS_Store): never images, not reported
        try:
            relative.encode("utf-8")
        except UnicodeEncodeError:
            skipped.setdefault("file name not UTF-8", []).append(relative.encode("utf-8", "replace").decode())
            continue
        if path.is_symlink() and not path.exists():
            skipped.setdefault("broken link", []).append(relative)
        elif path.is_file() and (is_image_name(path.name) or is_dicom_name(path.name)):
            files.append(relative)
        elif path.is_file() and path.name.upper() != DICOMDIR and is_dicom_file(str(path)):
            files.append(relative)  # DICOM by content: PACS exports often have no extension
        elif path.is_file():
            kind = "a DICOMDIR below the top" if path.name.upper() == DICOMDIR else "not an image or DICOM"
            skipped.setdefault(f"{kind} ({path.suffix.lower() or 'no extension'})", []).append(relative)
    return sorted(files), skipped


def dicomdir_images(path: Path) -> list[str]:
    """The image records of a DICOMDIR, as paths relative to its folder (never outside it: the caller
    refuses escapes)."""
    import pydicom
    from pydicom.fileset import FileSet

    try:
        instances = [i for i in FileSet(pydicom.dcmread(path)) if i.node.record_type == "IMAGE"]
    except Exception as exc:  # pydicom raises many types for a broken DICOMDIR
        raise ManifestError(f"DICOMDIR {str(path)!r} cannot be read: {type(exc).__name__}: {exc}") from None
    if not instances:
        raise ManifestError(f"DICOMDIR {str(path)!r} lists no IMAGE records")
    relative = [os.path.relpath(os.path.normpath(i.path), path.parent) for i in instances]
    return [r.replace(os.sep, "/") for r in relative]


def describe_skipped(skipped: dict[str, list[str]]) -> str:
    if not skipped:
        return "nothing"
    return "; ".join(f"{len(paths)} {reason}, e.g. {paths[0]!r}" for reason, paths in sorted(skipped.items()))


def skipped_summary(frame: pd.DataFrame) -> str | None:
    """What a folder walk left out (counts by reason), or None when it left nothing out."""
    skipped = frame.attrs.get("skipped")
    return describe_skipped(skipped) if skipped else None


DICOMDIR = "DICOMDIR"
