"""Synthetic radiographs as DICOM files, so the whole loop can be shown on DICOM without a download.

Each 8-bit synthetic image becomes a 12-bit CR: MONOCHROME2 or MONOCHROME1 (stored inverted), a
window that maps the 12-bit values back onto the 8-bit picture, stored uncompressed, RLE or JPEG 2000
lossless. The headers carry made-up identifiers (``Synthetic^patient00001``), which the job then
pseudonymises as it would a hospital's.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

SYNTAXES = ("explicit", "rle", "j2k")
_ENCODING = threading.Lock()
"""Compression runs one file at a time: encoding from several threads at once (the synthetic tree's
writers) corrupted the interpreter's heap, a crash seen after some hundreds of 512-pixel files."""
"""Transfer syntaxes the synthetic tree cycles through: Explicit VR Little Endian, RLE Lossless, and
JPEG 2000 lossless."""


def write_dicom_radiograph(
    path: str | os.PathLike, pixels: np.ndarray, *, image_id: str, body_part: str, seed: int
) -> None:
    """Write ``pixels`` ((H, W) grey or (H, W, 3) RGB uint8) as a DICOM CR image at ``path`` (atomically)."""
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        JPEG2000Lossless,
        RLELossless,
    )

    rng = np.random.default_rng(seed)
    ds = _dataset(image_id, body_part, rng)
    syntax = SYNTAXES[seed % len(SYNTAXES)]
    if pixels.ndim == 3:
        _image_module(ds, pixels.shape, samples=3, bits=8, photometric="RGB")
        stored = np.ascontiguousarray(pixels)
        syntax = "explicit" if syntax == "j2k" else syntax  # J2K colour would mean a colour transform; keep it plain
    else:
        monochrome1 = bool(rng.random() < 0.5)
        stored = np.rint(pixels.astype(np.float64) * (4095.0 / 255.0)).astype(np.uint16)
        if monochrome1:
            stored = 4095 - stored
        photometric = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
        _image_module(ds, pixels.shape, samples=1, bits=12, photometric=photometric)
        ds.WindowCenter, ds.WindowWidth = "2048", "4096"  # LINEAR: stored 0..4095 onto 0..255
    ds.PixelData = stored.tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    with _ENCODING:
        if syntax == "rle":
            ds.compress(RLELossless, stored, encoding_plugin="pydicom")
        elif syntax == "j2k":
            ds.compress(JPEG2000Lossless, stored, encoding_plugin="pylibjpeg")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.partial")
    ds.save_as(temporary, enforce_file_format=True)
    os.replace(temporary, target)


def _dataset(image_id: str, body_part: str, rng: np.random.Generator):  # -> pydicom Dataset
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ComputedRadiographyImageStorage, generate_uid

    parts = image_id.split("/")
    patient = next((p for p in parts if p.startswith("patient")), "patient00000")
    study = "/".join(parts[:-1])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
    instance_uid = generate_uid(entropy_srcs=["densecam synthetic instance", image_id])
    meta.MediaStorageSOPInstanceUID = instance_uid
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = ComputedRadiographyImageStorage
    ds.SOPInstanceUID = instance_uid
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["densecam synthetic study", study])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["densecam synthetic series", study])
    ds.PatientName = f"Synthetic^{patient}"
    ds.PatientID = f"SYN-{patient}"
    ds.PatientBirthDate = f"19{int(rng.integers(30, 99))}0101"
    ds.PatientSex = "O"
    ds.AccessionNumber = f"ACC{int(rng.integers(10**6, 10**7))}"
    ds.InstitutionName = "Synthetic General Hospital"
    ds.StudyDate = ds.SeriesDate = "20260101"
    ds.StudyTime = ds.SeriesTime = "120000"
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", "1", "1"
    ds.ReferringPhysicianName = ""
    ds.Modality = "CR"
    ds.BodyPartExamined = body_part
    ds.ViewPosition = "AP" if rng.random() < 0.5 else "LAT"
    ds.ImageLaterality = "L" if rng.random() < 0.5 else "R"
    ds.PatientOrientation = ""
    ds.ImagerPixelSpacing = ["0.150", "0.150"]
    return ds


def _image_module(ds, shape: tuple[int, ...], *, samples: int, bits: int, photometric: str) -> None:
    ds.Rows, ds.Columns = int(shape[0]), int(shape[1])
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if samples == 3:
        ds.PlanarConfiguration = 0
