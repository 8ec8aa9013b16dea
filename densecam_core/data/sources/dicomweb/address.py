"""A DICOMweb source's address: ``dicomweb+https://host/dicom-web?StudyDate=…&Modality=CR``. Only filters that
cannot single out a patient are accepted (the URL is recorded in the run and visible in the process list),
and never credentials."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from densecam_core.data.errors import ManifestError
from densecam_core.data.sources.locations import scheme_of

SCHEMES = {"dicomweb+https": "https", "dicomweb+http": "http"}
STUDY_FILTERS = ("StudyDate", "ModalitiesInStudy", "StudyDescription")
INSTANCE_FILTERS = ("Modality", "BodyPartExamined", "ViewPosition", "ImageLaterality", "Laterality")
ALLOWED_FILTERS = STUDY_FILTERS + INSTANCE_FILTERS
IDENTIFYING = (
    "PatientID", "PatientName", "PatientBirthDate", "OtherPatientIDs", "IssuerOfPatientID", "AccessionNumber",
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "StudyID", "ReferringPhysicianName",
)  # fmt: skip
DATE_FORMAT = "%Y%m%d"


class DicomwebAddressError(ManifestError):
    """The address itself is refused: before anything is sent."""


@dataclass(frozen=True)
class DicomwebAddress:
    base: str  # https://host:port/dicom-web
    filters: tuple[tuple[str, str], ...]

    @property
    def study_filters(self) -> dict[str, str]:
        found = {k: v for k, v in self.filters if k in STUDY_FILTERS}
        modality = self.instance_filters.get("Modality")
        if modality and "ModalitiesInStudy" not in found:
            found["ModalitiesInStudy"] = modality  # narrows the studies; instances are filtered again
        return found

    @property
    def instance_filters(self) -> dict[str, str]:
        return {k: v for k, v in self.filters if k in INSTANCE_FILTERS}

    @property
    def date_range(self) -> tuple[dt.date, dt.date] | None:
        """``StudyDate=A-B`` (or one date) as dates; None without a closed range."""
        text = dict(self.filters).get("StudyDate")
        if not text:
            return None
        first, _, last = text.partition("-")
        if "-" in text and (not first or not last):
            return None  # an open range cannot be split
        return _date(first), _date(last or first)

    @property
    def server(self) -> str:
        """``scheme://host:port``: what messages name."""
        parts = urlsplit(self.base)
        return f"{parts.scheme}://{parts.netloc}"

    def recorded(self) -> str:
        """What a run records: scheme, host, path and the (non-identifying) filters."""
        query = "&".join(f"{k}={v}" for k, v in self.filters)
        return f"dicomweb+{self.base}" + (f"?{query}" if query else "")


def _date(text: str) -> dt.date:
    try:
        return dt.datetime.strptime(text, DATE_FORMAT).date()
    except ValueError:
        raise DicomwebAddressError(f"StudyDate {text!r} is not a date YYYYMMDD (a range: YYYYMMDD-YYYYMMDD)") from None


def is_dicomweb(text: str) -> bool:
    return scheme_of(text) in SCHEMES


def parse_address(text: str) -> DicomwebAddress:
    """The address of ``dicomweb+http(s)://host/path?filters``; credentials and identifying filters refused."""
    parts = urlsplit(text)
    scheme = SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise DicomwebAddressError(f"a DICOMweb source starts with {' or '.join(s + '://' for s in SCHEMES)}")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise DicomwebAddressError(
            "the DICOMweb URL holds credentials (user:password@): they would be recorded and shown in the process "
            "list. Remove them and set DENSECAM_DICOMWEB_USER with DENSECAM_DICOMWEB_PASSWORD_FILE, or "
            "DENSECAM_DICOMWEB_TOKEN_FILE, or use ~/.netrc"
        )
    if not parts.hostname:
        raise DicomwebAddressError("the DICOMweb URL names no host")
    filters = tuple(parse_qsl(parts.query, keep_blank_values=True))
    for key, _ in filters:
        if key in IDENTIFYING:
            raise DicomwebAddressError(
                f"the filter {key!r} identifies a patient or study; it would be recorded in the run and visible "
                "in the process list. Filter by date, modality and body part, and give a targeted pull a file of "
                "studies with `pacs_studies`"
            )
        if key not in ALLOWED_FILTERS:
            raise DicomwebAddressError(f"unknown DICOMweb filter {key!r}; accepted: {', '.join(ALLOWED_FILTERS)}")
    address = DicomwebAddress(f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}", filters)
    address.date_range  # noqa: B018 - a bad date is refused now, not at the first query
    return address
