"""Manifests: whatever a source reads (a MURA tree, a table, a DICOM folder, a URL, a PACS) -> one DataFrame.

The same input always gives the same rows in the same order, because row order decides where
an image's maps live in the store (shards are contiguous row ranges).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable

import pandas as pd

from densecam_core.data.dicom import DEFAULT_DICOM_WINDOW
from densecam_core.data.errors import ManifestError
from densecam_core.data.mura import BODY_PARTS, MURA_DIR, MuraFields, parse_mura_path
from densecam_core.data.pseudonyms import Identifiers, load_identifiers
from densecam_core.data.rows import COLUMNS, finish
from densecam_core.data.sources import SourceOptions, open_source

__all__ = ["BODY_PARTS", "COLUMNS", "MURA_DIR", "MuraFields", "parse_mura_path", "read_manifest", "read_source"]


def read_manifest(
    source: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    *,
    identifiers: Identifiers | Callable[[], Identifiers] | None = None,
    dicom_window: str = DEFAULT_DICOM_WINDOW,
    dicom_metadata: bool = True,
    pacs_cache: str | os.PathLike | None = None,
    pacs_studies: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Read any supported manifest (``data.sources``: ``open_source`` lists them); unreadable text is a
    ManifestError naming the file and line. The frame's ``attrs["source"]`` is what a run records of it.

    DICOM sources add the allowlisted header columns (``data.dicom_metadata``), their patient, study and
    instance identifiers through ``identifiers``: pseudonyms under the default key (created on first
    use) when None; ``in_clear()`` keeps them as written. ``dicom_metadata=False`` reads no header.
    ``pacs_cache``: the folder a DICOMweb source pulls its instances into; ``pacs_studies``: a local file of
    StudyInstanceUIDs that restricts it to those studies (a targeted pull; the file never enters the store)."""
    identify = _as_callable(identifiers)
    options = SourceOptions(
        image_root=os.fspath(image_root) if image_root is not None else None,
        pacs_cache=os.fspath(pacs_cache) if pacs_cache is not None else None,
        identifiers=identify,
        studies=os.fspath(pacs_studies) if pacs_studies is not None else None,
    )
    frame, recorded = read_source(os.fspath(source), options)
    frame.attrs["source"] = recorded
    if not dicom_metadata:
        return frame
    from densecam_core.data.dicom_metadata import attach_dicom_metadata

    return attach_dicom_metadata(frame, identifiers=identify, window=dicom_window)


def _as_callable(identifiers: Identifiers | Callable[[], Identifiers] | None) -> Callable[[], Identifiers]:
    if identifiers is None:
        return load_identifiers
    if isinstance(identifiers, Identifiers):
        given = identifiers
        return lambda: given
    return identifiers


def read_source(text: str, options: SourceOptions) -> tuple[pd.DataFrame, str]:
    """The finished rows of the source that reads ``text``, and what a run records of that source."""
    try:
        source = open_source(text, options)
        return finish(source.rows(), text), source.recorded()
    except csv.Error as exc:
        raise ManifestError(f"manifest {text!r}: {exc} (csv line {_csv_line(exc)}); fix that line") from None
    except UnicodeDecodeError as exc:
        line = _line_of_offset(text, exc.start)
        raise ManifestError(
            f"manifest {text!r} is not UTF-8 text: byte {exc.object[exc.start : exc.start + 1]!r} on line "
            f"{line}; save it as UTF-8"
        ) from None


def _csv_line(exc: csv.Error) -> str:
    match = re.search(r"line (\d+)", str(exc))
    return match.group(1) if match else "?"


def _line_of_offset(path: str, offset: int) -> int | str:
    try:
        with open(path, "rb") as handle:
            return handle.read(offset).count(b"\n") + 1
    except OSError:
        return "?"
