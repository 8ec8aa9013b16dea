"""Manifests from folders: a walk that finds images by name and DICOM files by content, and DICOMDIR indexes."""

from __future__ import annotations

import os
import posixpath
import warnings
from pathlib import Path

import pandas as pd

from densecam_core import fileio
from densecam_core.data.decode import is_image_name
from densecam_core.data.dicom import is_dicom_name
from densecam_core.data.dicom_metadata import is_dicom_file
from densecam_core.data.errors import ManifestError


def walk_images(folder: Path, root: Path) -> tuple[list[str], dict[str, list[str]]]:
    """Image files below ``folder`` as paths relative to ``root``, and what was skipped, by reason.

    Symbolic links are followed only where they stay inside ``folder`` (a linked sub-folder of the archive
    is walked, once). A linked file that leads outside it and is named like an image stays a row, never read:
    the job gives it an error row saying so (``decode_pixels(within=folder)``); any other link out of the
    folder, and a linked sub-folder outside it, is named among the skipped."""
    files: list[str] = []
    skipped: dict[str, list[str]] = {}
    for path in _walk_inside(folder, skipped, root):
        relative = path.relative_to(root).as_posix()
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


OUTSIDE = "symbolic link leading outside the folder (not followed)"


def _walk_inside(folder: Path, skipped: dict[str, list[str]], root: Path) -> list[Path]:
    """Every non-hidden file below ``folder``; links that leave ``folder`` are skipped (named), linked
    sub-folders inside it are walked once (a cycle of links ends)."""
    top = os.path.realpath(folder)
    seen = {top}
    found: list[Path] = []
    for current, dirs, names in os.walk(folder, followlinks=True):
        kept = []
        for name in sorted(dirs):
            path = Path(current) / name
            if name.startswith("."):
                continue  # hidden folders (.git, __MACOSX's ._ files): never images, not reported
            real = os.path.realpath(path)
            if fileio.link_outside(str(path), str(folder)):
                skipped.setdefault(OUTSIDE, []).append(path.relative_to(root).as_posix())
            elif real not in seen:
                seen.add(real)
                kept.append(name)
        dirs[:] = kept
        for name in names:
            path = Path(current) / name
            if name.startswith("."):
                continue  # hidden files (._image1.png, .DS_Store): never images, not reported
            leaves = path.is_symlink() and path.exists() and fileio.link_outside(str(path), str(folder))
            if leaves and not (is_image_name(name) or is_dicom_name(name)):  # by name only: never read
                skipped.setdefault(OUTSIDE, []).append(path.relative_to(root).as_posix())
                continue
            found.append(path)
    return found


def dicomdir_images(path: Path) -> list[str]:
    """The image records of a DICOMDIR, as paths relative to its folder (never outside it: the caller
    refuses escapes). Every record is listed, also one whose file is missing: the job then gives it an
    error row ("missing file"), counted and redone by ``--redo-errors`` once the file is back, instead of
    the record vanishing from the run."""
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            records = list(pydicom.dcmread(path).DirectoryRecordSequence)
    except Exception as exc:  # pydicom raises many types for a broken DICOMDIR
        raise ManifestError(f"DICOMDIR {str(path)!r} cannot be read: {type(exc).__name__}: {exc}") from None
    relative = []
    for record in records:
        if str(record.get("DirectoryRecordType", "")).strip().upper() != "IMAGE":
            continue
        file_id = record.get("ReferencedFileID")
        if not file_id:
            continue
        parts = [file_id] if isinstance(file_id, str) else list(file_id)
        relative.append(posixpath.normpath("/".join(str(p).strip() for p in parts)))
    if not relative:
        raise ManifestError(f"DICOMDIR {str(path)!r} lists no IMAGE records")
    return relative


def describe_skipped(skipped: dict[str, list[str]]) -> str:
    if not skipped:
        return "nothing"
    return "; ".join(f"{len(paths)} {reason}, e.g. {paths[0]!r}" for reason, paths in sorted(skipped.items()))


def skipped_summary(frame: pd.DataFrame) -> str | None:
    """What a folder walk left out (counts by reason), or None when it left nothing out."""
    skipped = frame.attrs.get("skipped")
    return describe_skipped(skipped) if skipped else None


DICOMDIR = "DICOMDIR"
