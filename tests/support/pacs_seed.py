"""What the PACS tests store in Orthanc: real CRs of pydicom-data (uncompressed and JPEG 2000) and objects a
real archive also holds: broken pixel data, no pixel data, a study outside the queried dates, a report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, generate_fragmented_frames
from pydicom.uid import generate_uid

data_store = __import__("data_store")
NEMA = Path(data_store.__file__).parent / "data"
IN_RANGE = "20040801-20040831"
GOOD = ("RG3_UNCR.dcm", "RG3_J2KI.dcm", "RG1_J2KR.dcm")


@dataclass
class Seeded:
    good: list[Path] = field(default_factory=list)  # in range, explainable
    broken: list[Path] = field(default_factory=list)  # in range, error rows
    outside: list[Path] = field(default_factory=list)  # never pulled: other dates, not images
    identifiers: set[str] = field(default_factory=set)  # every PatientName/ID, accession, study id and UID

    @property
    def in_range(self) -> list[Path]:
        return self.good + self.broken


def _variant(source: Path, target: Path, *, new_study: bool = False, **changes: object) -> Path:
    ds = pydicom.dcmread(source)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if new_study:
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    for name, value in changes.items():
        if value is None:
            delattr(ds, name)
        else:
            setattr(ds, name, value)
    ds.save_as(target, enforce_file_format=True)
    return target


def seed_files(folder: Path) -> Seeded:
    """The files, written to ``folder``; nothing uploaded yet."""
    folder.mkdir(parents=True, exist_ok=True)
    seeded = Seeded(good=[NEMA / name for name in GOOD])
    uncompressed = pydicom.dcmread(NEMA / "RG1_UNCR.dcm")
    cut = uncompressed.PixelData[: len(uncompressed.PixelData) // 3]
    seeded.broken.append(_variant(NEMA / "RG1_UNCR.dcm", folder / "truncated.dcm", PixelData=cut))
    j2k = pydicom.dcmread(NEMA / "RG3_J2KR.dcm")
    codestream = b"".join(next(generate_fragmented_frames(j2k.PixelData, number_of_frames=1)))
    seeded.broken.append(
        _variant(
            NEMA / "RG3_J2KR.dcm",
            folder / "truncated_j2k.dcm",
            PixelData=encapsulate([codestream[: len(codestream) // 4]]),  # a JPEG 2000 codestream cut short
        )
    )
    seeded.broken.append(_variant(NEMA / "RG1_UNCR.dcm", folder / "no_pixels.dcm", PixelData=None))
    seeded.outside.append(_variant(NEMA / "RG3_UNCR.dcm", folder / "outside.dcm", new_study=True, StudyDate="20200101"))
    report = pydicom.dcmread(get_testdata_file("test-SR.dcm"))
    report.StudyDate = "20040826"
    report.save_as(folder / "report.dcm")
    seeded.outside.append(folder / "report.dcm")
    for path in seeded.good + seeded.broken + seeded.outside:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in ("PatientName", "PatientID", "AccessionNumber", "StudyID"):
            if str(ds.get(keyword, "") or "").strip():
                seeded.identifiers.add(str(ds.get(keyword)))
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            seeded.identifiers.add(str(ds.get(keyword)))
    return seeded


def spread_studies(folder: Path, count: int) -> list[Path]:
    """``count`` one-image CR studies on different days of the queried month, two on its last day."""
    folder.mkdir(parents=True, exist_ok=True)
    days = [1 + 4 * k for k in range(count - 1)] + [1 + 4 * (count - 2)]
    return [
        _variant(NEMA / "RG3_UNCR.dcm", folder / f"study{k}.dcm", new_study=True, StudyDate=f"200408{day:02d}")
        for k, day in enumerate(days)
    ]
