"""Manifests: MURA v1.1 as downloaded, its CSVs, or any CSV/Parquet list of images -> one DataFrame.

The same input always gives the same rows in the same order, because row order decides where
an image's maps live in the store (shards are contiguous row ranges).
"""

from __future__ import annotations

import csv
import os
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from densecam_core.data.decode import is_image_name
from densecam_core.data.dicom import DEFAULT_DICOM_WINDOW
from densecam_core.data.errors import ManifestError
from densecam_core.data.folders import DICOMDIR, describe_skipped, dicomdir_images, walk_images
from densecam_core.data.pseudonyms import Identifiers, load_identifiers

BODY_PARTS = ("ELBOW", "FINGER", "FOREARM", "HAND", "HUMERUS", "SHOULDER", "WRIST")
COLUMNS = ("image_id", "path", "split", "body_part", "patient_id", "study_id", "view", "label")
MURA_DIR = "MURA-v1.1"
_MURA_PATH = re.compile(
    r"(?:^|/)(?P<split>train|valid)/XR_(?P<body_part>[A-Z]+)/(?P<patient>patient\d+)/"
    r"study(?P<study>\d+)_(?P<result>positive|negative)/(?:image(?P<view>\d+)\.\w+)?$"
)


@dataclass(frozen=True)
class MuraFields:
    split: str
    body_part: str
    patient_id: str
    study_id: str
    view: int | None
    label: int


def parse_mura_path(path: str) -> MuraFields | None:
    """Fields encoded in a MURA path (``.../train/XR_WRIST/patient00001/study1_positive/image2.png``)."""
    match = _MURA_PATH.search(path.replace("\\", "/"))
    if not match:
        return None
    patient, body_part, study = match["patient"], match["body_part"], match["study"]
    return MuraFields(
        split=match["split"],
        body_part=body_part,
        patient_id=patient,
        study_id=f"{patient}/XR_{body_part}/study{study}",  # study numbers restart per body part
        view=int(match["view"]) if match["view"] else None,
        label=1 if match["result"] == "positive" else 0,
    )


def read_manifest(
    source: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    *,
    identifiers: Identifiers | Callable[[], Identifiers] | None = None,
    dicom_window: str = DEFAULT_DICOM_WINDOW,
    dicom_metadata: bool = True,
) -> pd.DataFrame:
    """Read any supported manifest (see ``_read_manifest``); unreadable text is a ManifestError naming the
    file and line.

    DICOM sources add the allowlisted header columns (``data.dicom_metadata``), their patient, study and
    instance identifiers through ``identifiers``: pseudonyms under the default key (created on first
    use) when None; ``in_clear()`` keeps them as written. ``dicom_metadata=False`` reads no header."""
    try:
        frame = _read_manifest(source, image_root)
    except csv.Error as exc:
        raise ManifestError(
            f"manifest {os.fspath(source)!r}: {exc} (csv line {_csv_line(exc)}); fix that line"
        ) from None
    except UnicodeDecodeError as exc:
        line = _line_of_offset(os.fspath(source), exc.start)
        raise ManifestError(
            f"manifest {os.fspath(source)!r} is not UTF-8 text: byte {exc.object[exc.start : exc.start + 1]!r} on line "
            f"{line}; save it as UTF-8"
        ) from None
    if not dicom_metadata:
        return frame
    from densecam_core.data.dicom_metadata import attach_dicom_metadata

    return attach_dicom_metadata(frame, identifiers=identifiers or load_identifiers, window=dicom_window)


def _csv_line(exc: csv.Error) -> str:
    match = re.search(r"line (\d+)", str(exc))
    return match.group(1) if match else "?"


def _line_of_offset(path: str, offset: int) -> int | str:
    try:
        with open(path, "rb") as handle:
            return handle.read(offset).count(b"\n") + 1
    except OSError:
        return "?"


def _read_manifest(source: str | os.PathLike, image_root: str | os.PathLike | None = None) -> pd.DataFrame:
    """Read any supported manifest into one row per image with the columns in ``COLUMNS`` (+ extras).

    ``source``: the MURA-v1.1 folder or its parent, ``train_image_paths.csv`` / ``valid_image_paths.csv``,
    a labelled-studies CSV, any folder of images, or a CSV/Parquet file with a ``path`` column.
    """
    text = os.fspath(source)
    if "://" in text:
        return _finish(_read_url(text, image_root), text)
    if not os.path.exists(text):
        raise ManifestError(f"manifest {text!r} does not exist")
    if "://" not in text and os.path.isdir(text):
        frame = _read_folder(Path(text))
    elif os.path.basename(text).upper() == DICOMDIR:
        frame = _rows_from_relative_paths(dicomdir_images(Path(text)), Path(text).parent)
    elif text.lower().endswith((".parquet", ".pq")):
        frame = _read_generic(pd.read_parquet(text), _root_for(text, image_root))
    elif text.lower().endswith((".csv", ".txt")):
        frame = _read_csv(text, image_root)
    else:
        raise ManifestError(f"manifest {text!r}: expected a folder, a .csv or a .parquet file")
    return _finish(frame, text)


def _root_for(source: str, image_root: str | os.PathLike | None) -> str:
    if image_root is not None:
        return os.fspath(image_root)
    return posixpath.dirname(source) if "://" in source else str(Path(source).resolve().parent)


def _read_url(url: str, image_root: str | os.PathLike | None) -> pd.DataFrame:
    """A CSV or Parquet manifest behind an fsspec URL (``s3://bucket/manifest.csv``); it needs a ``path`` column."""
    import fsspec

    try:
        fs, inner = fsspec.core.url_to_fs(url)
        exists = fs.exists(inner)
    except (ImportError, ValueError) as exc:
        raise ManifestError(f"manifest {url!r} cannot be reached: {exc}") from None
    if not exists:
        raise ManifestError(f"manifest {url!r} does not exist")
    with fs.open(inner, "rb") as handle:
        if url.lower().endswith((".parquet", ".pq")):
            table = pd.read_parquet(handle)
        elif url.lower().endswith((".csv", ".txt")):
            table = pd.read_csv(handle, keep_default_na=True, encoding="utf-8")
        else:
            raise ManifestError(f"manifest {url!r}: expected a .csv or a .parquet file at a URL")
    if "path" not in table.columns:
        raise ManifestError(
            f"manifest {url!r}: a manifest at a URL needs a 'path' column; it has {list(table.columns)}"
        )
    return _read_generic(table, _root_for(url, image_root))


def _read_csv(path: str, image_root: str | os.PathLike | None) -> pd.DataFrame:
    with open(path, newline="", encoding="utf-8") as handle:
        first = next(csv.reader(handle), None)
    if first is None:
        raise ManifestError(f"manifest {path!r} is empty")
    if "path" in [c.strip() for c in first]:
        return _read_generic(pd.read_csv(path, keep_default_na=True), _root_for(path, image_root))
    root = Path(image_root) if image_root is not None else _mura_root_of_csv(Path(path))
    if len(first) == 2 and first[0].rstrip().endswith("/") and first[1].strip() in ("0", "1"):
        return _read_labelled_studies(Path(path), root)
    if len(first) == 1 and parse_mura_path(first[0].strip()):
        return _read_mura_paths(Path(path), root)
    raise ManifestError(
        f"manifest {path!r}: first row {first!r} is neither a header with a 'path' column, "
        "a MURA image path, nor a MURA labelled study ('…/study1_positive/,1')"
    )


def _mura_root_of_csv(csv_path: Path) -> Path:
    """MURA CSV paths start with 'MURA-v1.1/': they are relative to the folder containing it."""
    parent = csv_path.resolve().parent
    return parent.parent if parent.name == MURA_DIR else parent


def _read_mura_paths(csv_path: Path, root: Path) -> pd.DataFrame:
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        try:
            paths = [row[0].strip() for row in reader if row and row[0].strip()]
        except csv.Error as exc:
            raise ManifestError(f"{csv_path}: line {reader.line_num}: {exc}") from None
    return _rows_from_relative_paths(paths, root)


def _read_labelled_studies(csv_path: Path, root: Path) -> pd.DataFrame:
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
    frame = _rows_from_relative_paths(rows, root)
    return _apply_study_labels(frame, labels, str(csv_path))


def _image_number(name: str) -> tuple[int, str]:
    match = re.search(r"(\d+)", name)
    return (int(match.group(1)) if match else 0, name)


def _cross_check_labels(frame: pd.DataFrame, mura: Path) -> pd.DataFrame:
    for split in ("train", "valid"):
        labelled = mura / f"{split}_labeled_studies.csv"
        if labelled.exists():
            with open(labelled, newline="", encoding="utf-8") as handle:
                labels = {r[0].strip().rstrip("/"): int(r[1]) for r in csv.reader(handle) if len(r) == 2}
            frame = _apply_study_labels(frame, labels, str(labelled))
    return frame


def _apply_study_labels(frame: pd.DataFrame, labels: dict[str, int], source: str) -> pd.DataFrame:
    """Labels from a labelled-studies CSV must agree with the _positive/_negative folder names."""
    study_dirs = frame["image_id"].map(lambda p: posixpath.dirname(p))
    listed = study_dirs.map(labels)
    conflict = listed.notna() & frame["label"].notna() & (listed != frame["label"])
    if conflict.any():
        bad = sorted(set(study_dirs[conflict]))[:10]
        raise ManifestError(f"labels in {source} contradict the study folder names for: {bad}")
    frame["label"] = frame["label"].where(frame["label"].notna(), listed)
    return frame


def _rows_from_relative_paths(paths: list[str], root: Path | str) -> pd.DataFrame:
    _reject_escapes(paths)
    records = []
    for rel in paths:
        rel = posixpath.normpath(rel.replace("\\", "/"))
        fields = parse_mura_path(rel)
        records.append(_record(rel, _join(str(root), rel), fields))
    return pd.DataFrame.from_records(records, columns=list(COLUMNS))


def _record(image_id: str, path: str, fields: MuraFields | None) -> dict[str, object]:
    record: dict[str, object] = {"image_id": image_id, "path": path}
    if fields is None:
        record.update(split=None, body_part=None, patient_id=None, study_id=None, view=None, label=None)
    else:
        record.update(
            split=fields.split,
            body_part=fields.body_part,
            patient_id=fields.patient_id,
            study_id=fields.study_id,
            view=fields.view,
            label=fields.label,
        )
    return record


def _join(root: str, rel: str) -> str:
    return posixpath.join(root.rstrip("/"), rel) if "://" in root else str(Path(root) / rel)


def _reject_escapes(relative_paths: list[str]) -> None:
    escaping = [
        p
        for p in relative_paths
        if posixpath.normpath(p.replace("\\", "/")).startswith("../") or posixpath.normpath(p) == ".."
    ]
    if escaping:
        raise ManifestError(f"{len(escaping)} path(s) escape the image root: {escaping[:10]}")


def normalise_location(location: str) -> str:
    """One spelling per file: ``/x//a.png`` and ``/x/../x/a.png`` are ``/x/a.png`` (URLs: their path part)."""
    if "://" in location:
        scheme, rest = location.split("://", 1)
        host, slash, path = rest.partition("/")
        return f"{scheme}://{host}{slash}{posixpath.normpath(path).lstrip('/') if path else ''}" if slash else location
    return os.path.normpath(location)


def _read_generic(table: pd.DataFrame, root: str) -> pd.DataFrame:
    """A user manifest: 'path' required; 'image_id', 'label' and any extra columns kept."""
    if "path" not in table.columns:
        raise ManifestError(f"manifest has no 'path' column; its columns are {list(table.columns)}")
    if table["path"].isna().any():
        raise ManifestError(f"manifest rows {list(table.index[table['path'].isna()][:10])} have no path")
    raw = [str(p).strip() for p in table["path"]]
    relative = [p for p in raw if "://" not in p and not os.path.isabs(p)]
    _reject_escapes(relative)
    records = []
    for original in raw:
        if "://" in original or os.path.isabs(original):
            image_id = path = normalise_location(original)
        else:
            image_id = posixpath.normpath(original.replace("\\", "/"))
            path = _join(root, image_id)
        records.append(_record(image_id, path, parse_mura_path(original)))
    frame = pd.DataFrame.from_records(records, columns=list(COLUMNS))
    for column in table.columns:
        if column == "path":
            continue
        if column in ("image_id", "label", "split", "body_part", "patient_id", "study_id", "view"):
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


def _finish(frame: pd.DataFrame, source: str) -> pd.DataFrame:
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


def _read_folder(folder: Path) -> pd.DataFrame:
    mura = folder if (folder / "train_image_paths.csv").exists() or folder.name == MURA_DIR else folder / MURA_DIR
    csvs = [mura / f"{split}_image_paths.csv" for split in ("train", "valid")]
    if any(p.exists() for p in csvs):
        root = mura.parent
        frames = [_read_mura_paths(p, root) for p in csvs if p.exists()]
        frame = pd.concat(frames, ignore_index=True)
        return _cross_check_labels(frame, mura)
    if (folder / DICOMDIR).is_file():
        return _rows_from_relative_paths(dicomdir_images(folder / DICOMDIR), folder)
    # no official CSVs: walk the folder (sorted, hidden and non-image files skipped, and counted)
    root = folder.parent if folder.name == MURA_DIR else folder
    files, skipped = walk_images(folder, root)
    if not files:
        raise ManifestError(
            f"folder {str(folder)!r} holds no .png/.jpg images and no DICOM files "
            f"(skipped: {describe_skipped(skipped)})"
        )
    frame = _rows_from_relative_paths(files, root)
    frame.attrs["skipped"] = skipped
    frame.attrs["walked_folder"] = str(folder)  # readers refuse files that a link leads out of it
    return frame
