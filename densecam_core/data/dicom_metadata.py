"""What of a DICOM header reaches the index: an explicit allowlist of typed columns, identifiers pseudonymised.

Nothing else is copied: no name, birth date, accession number, institution or raw UID. Headers are
read up to the pixel data only, a few files at a time on threads (a manifest of 40,000 files
reads its headers in seconds from a local disk).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd

from densecam_core import fileio
from densecam_core.data.deflated import inflate_file, is_deflated
from densecam_core.data.dicom import (
    DEFAULT_DICOM_WINDOW,
    DEFAULT_MAX_BYTES,
    GREY,
    first_window,
    has_preamble,
    has_voi_lut,
    has_window,
    is_dicom_name,
    validate_dicom_window,
)
from densecam_core.data.errors import ImageError
from densecam_core.data.pseudonyms import Identifiers

MURA_BODY_PARTS = ("ELBOW", "FINGER", "FOREARM", "HAND", "HUMERUS", "SHOULDER", "WRIST")
BODY_PART_SYNONYMS = {"ARM": "HUMERUS", "UPPER ARM": "HUMERUS", "UPPERARM": "HUMERUS", "THUMB": "FINGER"}
METADATA_COLUMNS: dict[str, str] = {
    "instance_id": "string",
    "modality": "string",
    "view_position": "string",
    "laterality": "string",
    "photometric": "string",
    "bits_stored": "Int16",
    "transfer_syntax": "string",
    "spacing_y_mm": "Float64",
    "spacing_x_mm": "Float64",
    "voi": "string",
    "window_center": "Float64",
    "window_width": "Float64",
    "voi_lut": "string",
}
"""The index columns a DICOM source adds (null where a header lacks the element), with their types;
``patient_id``, ``study_id`` and ``body_part`` fill the core columns of the same names."""
HEADER_THREADS = 8


BODY_PART_TERMS = frozenset(
    {
        *MURA_BODY_PARTS,
        "ABDOMEN", "ANKLE", "ARM", "CHEST", "CLAVICLE", "CSPINE", "EXTREMITY", "FOOT", "HEAD", "HEEL", "HIP",
        "JAW", "KNEE", "LEG", "LSPINE", "PELVIS", "RIB", "SACRUM", "SCAPULA", "SKULL", "SPINE", "TOE", "TSPINE",
        "THUMB", "HEART", "LUNG", "NECK", "BREAST", "TIBIA", "FEMUR", "FIBULA", "RADIUS", "ULNA",
    }
)  # fmt: skip
"""BodyPartExamined values copied as they are: MURA's seven and the standard's common radiograph terms (PS3.16
CID 4031). Anything else is free text someone typed (a name, once) and is kept only with --keep-identifiers."""
OTHER_BODY_PART = "OTHER"


def body_part(value: Any, *, keep_text: bool = False) -> str | None:
    """BodyPartExamined mapped to MURA's seven body parts where it names one, else to the fixed vocabulary
    ``BODY_PART_TERMS``; other text is ``OTHER`` unless ``keep_text`` (identifiers kept in clear)."""
    text = str(value or "").strip()
    if not text:
        return None
    upper = text.upper()
    if upper in MURA_BODY_PARTS:
        return upper
    mapped = BODY_PART_SYNONYMS.get(upper, upper)
    if mapped in BODY_PART_TERMS:
        return mapped
    return text if keep_text else OTHER_BODY_PART


def spacing(ds: Any) -> tuple[float | None, float | None]:
    """(row, column) spacing in mm from PixelSpacing, else ImagerPixelSpacing; zero or missing is None."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        try:
            y, x = (float(v) for v in value)
        except (TypeError, ValueError):
            continue
        if y > 0 and x > 0:
            return y, x
    return None, None


def header_fields(ds: Any, *, window: str, identifiers: Identifiers) -> dict[str, Any]:
    """The allowlisted fields of one header, identifiers through ``identifiers``."""
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper() or None
    y, x = spacing(ds)
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    fields: dict[str, Any] = {
        "patient_id": identifiers("patient", ds.get("PatientID")),
        "study_id": identifiers("study", ds.get("StudyInstanceUID")),
        "instance_id": identifiers("instance", ds.get("SOPInstanceUID")),
        "body_part": body_part(ds.get("BodyPartExamined"), keep_text=identifiers.key is None),
        "modality": _text(ds.get("Modality")),
        "view_position": _text(ds.get("ViewPosition")),
        "laterality": _text(ds.get("ImageLaterality") or ds.get("Laterality")),
        "photometric": photometric,
        "bits_stored": _number(ds.get("BitsStored"), int),
        "transfer_syntax": str(syntax) if syntax else None,
        "spacing_y_mm": y,
        "spacing_x_mm": x,
        "voi": None,
        "window_center": None,
        "window_width": None,
        "voi_lut": None,
    }
    if photometric in GREY:
        fields.update(_voi_fields(ds, window, keep_text=identifiers.key is None))
    return fields


def _voi_fields(ds: Any, window: str, *, keep_text: bool) -> dict[str, Any]:
    """The VOI the decoder will apply, as far as the header tells (min-max and percentile need pixels)."""
    for kind in {"first": ("window", "lut"), "lut": ("lut", "window")}.get(window, ()):
        if kind == "window" and has_window(ds):
            try:
                center, width, _ = first_window(ds)
            except ImageError:
                return {"voi": "window"}  # decoding names the fault as the image's error row
            return {"voi": "window", "window_center": center, "window_width": width}
        if kind == "lut" and has_voi_lut(ds):
            item = ds.VOILUTSequence[0]
            explanation = str(item.get("LUTExplanation", "") or "").strip() if keep_text else ""
            return {"voi": "lut", "voi_lut": explanation or "VOI LUT"}  # free text only with --keep-identifiers
    return {"voi": "percentile" if window == "percentile" else "minmax"}


def _text(value: Any) -> str | None:
    text = str(value or "").strip()
    return text or None


def _number(value: Any, kind: Callable[[Any], Any]) -> Any:
    try:
        return None if value in (None, "") else kind(value)
    except (TypeError, ValueError):
        return None


def read_header(path: str) -> Any | None:
    """The header of ``path`` up to its pixel data, or None when it is no readable DICOM file (decoding
    then names why, as the image's error row). Regular files only: a FIFO never blocks the walk."""
    try:
        fs, inner = fileio.filesystem(path)
        with fileio.open_regular(fs, inner) as handle:
            return _parse_header(handle, path)
    except (OSError, ValueError):
        return None


def _parse_header(handle: Any, path: str) -> Any | None:
    import pydicom

    head = handle.read(4096)
    if not (has_preamble(head) or is_dicom_name(path)):
        return None
    handle.seek(0)
    try:
        if is_deflated(head):  # pydicom would inflate all of it, unbounded
            handle = io.BytesIO(inflate_file(handle.read(DEFAULT_MAX_BYTES + 1), max_bytes=DEFAULT_MAX_BYTES))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(handle, force=True, stop_before_pixels=True)
    except Exception:  # a broken header or a bomb: the decoder reports it for the image
        return None


def is_dicom_file(path: str) -> bool:
    """A DICM preamble, whatever the file's name (PACS exports often have no extension)."""
    try:
        fs, inner = fileio.filesystem(path)
        with fileio.open_regular(fs, inner) as handle:
            return has_preamble(handle.read(132))
    except (OSError, ValueError):
        return False


def probe_candidates(paths: Sequence[str]) -> list[bool]:
    """Which manifest paths may be DICOM: a DICOM extension, or no raster image extension."""
    raster = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")
    return [not str(p).lower().endswith(raster) for p in paths]


def attach_dicom_metadata(
    frame: pd.DataFrame,
    *,
    identifiers: Identifiers | Callable[[], Identifiers],
    window: str = DEFAULT_DICOM_WINDOW,
    threads: int = HEADER_THREADS,
) -> pd.DataFrame:
    """Add the allowlisted header columns for the frame's DICOM rows (none added when it has none).

    Given columns win (a manifest's own ``body_part`` is kept) and header values fill what is null, except
    the patient and study identifiers of DICOM rows, which always go through ``identifiers``.
    ``identifiers`` may be a function, called only when a DICOM row exists (no key is created for an
    archive without DICOM)."""
    validate_dicom_window(window)
    paths = [str(p) for p in frame["path"]]
    walked = frame.attrs.get("walked_folder")
    candidates = [
        i
        for i, maybe in enumerate(probe_candidates(paths))
        if maybe and not (walked and fileio.link_outside(paths[i], walked))  # a link out of the walked folder: unread
    ]
    if not candidates:
        return frame
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="densecam-header") as pool:
        headers = list(pool.map(read_header, [paths[i] for i in candidates]))
    found = [(i, ds) for i, ds in zip(candidates, headers) if ds is not None]
    if not found:
        return frame
    policy = identifiers if isinstance(identifiers, Identifiers) else identifiers()
    rows = {i: header_fields(ds, window=window, identifiers=policy) for i, ds in found}
    out = frame.copy()
    positions = list(rows)
    given_columns = set(frame.attrs.get("given_columns", ()))
    for column, kind in (("patient_id", "patient"), ("study_id", "study")):
        if column in given_columns:
            continue  # the manifest's own column (a research id the user chose) wins, as for every column
        # else a DICOM row's identifiers are the policy's, also where a MURA-shaped path named them: the
        # header's value, else the path's, both through ``policy`` (pseudonyms by default)
        if column in out.columns:
            for i in positions:
                if rows[i][column] is None and not pd.isna(given := out[column].iloc[i]):
                    rows[i][column] = policy(kind, given)
        out[column] = out[column].astype("string") if column in out.columns else pd.NA
        out.loc[out.index[positions], column] = pd.array([rows[i][column] for i in positions], dtype="string")
    identifier_columns = {c: "string" for c in ("patient_id", "study_id") if c in given_columns}
    for column, dtype in {**METADATA_COLUMNS, **identifier_columns, "body_part": "string"}.items():
        values = pd.Series([rows[i][column] for i in positions], index=out.index[positions], dtype=dtype)
        if column in out.columns:
            current = out[column].astype(dtype)
            out[column] = current.where(current.notna(), values.reindex(out.index))
        else:
            out[column] = values.reindex(out.index).astype(dtype)
    out.attrs = {**frame.attrs, "dicom_images": len(found)}  # never the key: attrs can reach Parquet metadata
    return out
