"""The rows every source yields: one per image with the columns in ``COLUMNS`` (+ a user manifest's extras),
paths confined to their root, ids unique, types fixed, so that row order and index columns do not depend
on where the images came from."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

import pandas as pd

from densecam_core.data.errors import ManifestError
from densecam_core.data.mura import MuraFields, parse_mura_path
from densecam_core.data.sources.locations import is_absolute, join, normalise_location, parent_of

COLUMNS = ("image_id", "path", "split", "body_part", "patient_id", "study_id", "view", "label")
SOURCE_ERROR = "source_error"
"""A source may give a row the reason it could not provide the file (a PACS pull that failed): the row is an
error row with that reason."""
GIVEN_COLUMNS = ("image_id", "label", "split", "body_part", "patient_id", "study_id", "view")


def record(image_id: str, path: str, fields: MuraFields | None) -> dict[str, object]:
    """One row: its id, its file, and what its MURA path says (nothing when it is not a MURA path)."""
    row: dict[str, object] = {"image_id": image_id, "path": path}
    if fields is None:
        row.update(split=None, body_part=None, patient_id=None, study_id=None, view=None, label=None)
    else:
        row.update(
            split=fields.split,
            body_part=fields.body_part,
            patient_id=fields.patient_id,
            study_id=fields.study_id,
            view=fields.view,
            label=fields.label,
        )
    return row


def reject_escapes(relative_paths: list[str]) -> None:
    escaping = [
        p
        for p in relative_paths
        if posixpath.normpath(p.replace("\\", "/")).startswith("../") or posixpath.normpath(p) == ".."
    ]
    if escaping:
        raise ManifestError(f"{len(escaping)} path(s) escape the image root: {escaping[:10]}")


def rows_from_relative_paths(paths: list[str], root: Path | str) -> pd.DataFrame:
    """Rows for files named relative to ``root`` (a folder walk, a MURA CSV, a DICOMDIR)."""
    reject_escapes(paths)
    records = []
    for relative in paths:
        relative = posixpath.normpath(relative.replace("\\", "/"))
        records.append(record(relative, join(str(root), relative), parse_mura_path(relative)))
    return pd.DataFrame.from_records(records, columns=list(COLUMNS))


def rows_from_table(table: pd.DataFrame, root: str) -> pd.DataFrame:
    """A user manifest: 'path' required; 'image_id', 'label' and any extra columns kept."""
    if "path" not in table.columns:
        raise ManifestError(f"manifest has no 'path' column; its columns are {list(table.columns)}")
    if table["path"].isna().any():
        raise ManifestError(f"manifest rows {list(table.index[table['path'].isna()][:10])} have no path")
    raw = [str(p).strip() for p in table["path"]]
    reject_escapes([p for p in raw if not is_absolute(p)])
    records = []
    for original in raw:
        if is_absolute(original):
            image_id = path = normalise_location(original)
        else:
            image_id = posixpath.normpath(original.replace("\\", "/"))
            path = join(root, image_id)
        records.append(record(image_id, path, parse_mura_path(original)))
    frame = pd.DataFrame.from_records(records, columns=list(COLUMNS))
    for column in table.columns:
        if column == "path":
            continue
        if column in GIVEN_COLUMNS:
            given = table[column].reset_index(drop=True)
            frame[column] = given.where(given.notna(), frame[column]) if column != "image_id" else given.astype(str)
        else:
            frame[column] = table[column].reset_index(drop=True)
    frame.attrs["given_columns"] = [str(c) for c in table.columns if c in ("patient_id", "study_id")]
    if "label" in table.columns:
        bad = ~frame["label"].isna() & ~frame["label"].isin([0, 1, True, False])
        if bad.any():
            raise ManifestError(
                f"'label' must be 0, 1 or empty; got {sorted(set(frame['label'][bad].astype(str)))[:5]}"
            )
    return frame


def finish(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Every source's rows, checked and typed the same way."""
    if frame.empty:
        raise ManifestError(f"manifest {source!r} lists no images")
    duplicated = frame["image_id"][frame["image_id"].duplicated(keep=False)]
    if not duplicated.empty:
        raise ManifestError(f"duplicate image ids in {source!r}: {sorted(set(duplicated))[:10]}")
    frame = frame.reset_index(drop=True)
    frame["label"] = pd.array(frame["label"].astype("Float64"), dtype="Float64").astype("Int8")
    frame["view"] = pd.array(frame["view"].astype("Float64"), dtype="Float64").astype("Int16")
    for column in ("image_id", "path", "split", "body_part", "patient_id", "study_id"):
        frame[column] = frame[column].astype("string")
    return frame


def root_for(source: str, image_root: str | os.PathLike | None) -> str:
    """Where a table's relative paths start: ``image_root`` when given, else the table's folder."""
    if image_root is not None:
        return os.fspath(image_root)
    return parent_of(source)
