"""An independent, plain implementation of the DICOM grayscale pipeline (PS3.3 C.11.1, C.11.2), pixel
by pixel in float64 with the standard's formulas as written, and helpers that build DICOM files.

Written without densecam's code: tests compare ``read_image`` against it."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


def lut_entries(item: Any) -> tuple[np.ndarray, int, int]:
    entries, first, bits = (int(v) for v in item.LUTDescriptor)
    entries = entries or 65536
    data = item.LUTData
    if isinstance(data, bytes):
        data = np.frombuffer(data, dtype="<u2")
    data = np.asarray(data, dtype=np.float64).ravel()[:entries]
    if first > 32767:
        first -= 65536
    return data, first, bits


def reference_grey(ds: Any, stored: np.ndarray, *, voi: str = "first") -> np.ndarray:
    """Stored values -> float64 grey levels in [0, 255] (unrounded)."""
    x = stored.astype(np.float64)
    if "ModalityLUTSequence" in ds:
        data, first, _ = lut_entries(ds.ModalityLUTSequence[0])
        x = data[np.clip(x - first, 0, len(data) - 1).astype(int)]
    else:
        x = x * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    has_window = "WindowCenter" in ds and "WindowWidth" in ds
    if voi == "first" and has_window:
        c = float(ds.WindowCenter[0] if isinstance(ds.WindowCenter, pydicom.multival.MultiValue) else ds.WindowCenter)
        w = float(ds.WindowWidth[0] if isinstance(ds.WindowWidth, pydicom.multival.MultiValue) else ds.WindowWidth)
        function = str(ds.get("VOILUTFunction", "LINEAR"))
        if function == "SIGMOID":  # C.11.2.1.3.1
            y = 255.0 / (1 + np.exp(-4 * (x - c) / w))
        elif function == "LINEAR_EXACT":  # C.11.2.1.3.2
            y = np.select([x <= c - w / 2, x > c + w / 2], [0.0, 255.0], ((x - c) / w + 0.5) * 255.0)
        else:  # LINEAR, C.11.2.1.2.1
            with np.errstate(divide="ignore", invalid="ignore"):
                middle = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255.0
            y = np.select([x <= c - 0.5 - (w - 1) / 2, x > c - 0.5 + (w - 1) / 2], [0.0, 255.0], middle)
    elif voi in ("first", "lut") and "VOILUTSequence" in ds:
        data, first, bits = lut_entries(ds.VOILUTSequence[0])
        y = data[np.clip(x - first, 0, len(data) - 1).astype(int)] / (2**bits - 1) * 255.0
    else:  # no VOI in the file: min-max of the modality values
        y = (x - x.min()) / (x.max() - x.min()) * 255.0
    if ds.PhotometricInterpretation == "MONOCHROME1":
        y = 255.0 - y  # after the VOI transform
    return y


def dataset(pixels: np.ndarray, *, bits_stored: int = 12, signed: bool = False, **elements: Any) -> Dataset:
    """A single-frame grey Secondary Capture holding ``pixels`` (a 2-D integer array)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID = "Test^Patient", "TEST-PATIENT-1"
    ds.Modality = "OT"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels.astype(np.int16 if signed else np.uint16).tobytes()
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
