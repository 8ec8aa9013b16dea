"""What a DICOMweb address and its credentials may hold, checked before anything is sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from densecam_core.data.sources import open_source
from densecam_core.data.sources.dicomweb.address import DicomwebAddressError, parse_address
from densecam_core.data.sources.dicomweb.credentials import CredentialsError, credentials_from_environment
from densecam_core.data.sources.dicomweb.source import DicomwebSource


@pytest.mark.parametrize(
    "url, message",
    [
        ("dicomweb+https://pacs/dicom-web?PatientID=1", "identifies a patient"),
        ("dicomweb+https://pacs/dicom-web?PatientName=Doe", "identifies a patient"),
        ("dicomweb+https://pacs/dicom-web?AccessionNumber=A1", "identifies a patient"),
        ("dicomweb+https://pacs/dicom-web?SOPInstanceUID=1.2", "identifies a patient"),
        ("dicomweb+https://pacs/dicom-web?00100020=1", "unknown DICOMweb filter"),
        ("dicomweb+https://me:pw@pacs/dicom-web", "holds credentials"),
        ("dicomweb+https://token@pacs/dicom-web", "holds credentials"),
        ("dicomweb+https://pacs/dicom-web?StudyDate=2024-01", "is not a date"),
    ],
)
def test_refused_addresses(url: str, message: str):
    with pytest.raises(DicomwebAddressError, match=message) as caught:
        parse_address(url)
    assert "pw" not in str(caught.value).replace("password", "")


def test_an_address_records_scheme_host_path_and_filters_only():
    address = parse_address("dicomweb+https://pacs.example:8443/dicom-web/?StudyDate=20240101-20240131&Modality=CR")
    assert address.base == "https://pacs.example:8443/dicom-web"
    assert address.recorded() == "dicomweb+https://pacs.example:8443/dicom-web?StudyDate=20240101-20240131&Modality=CR"
    assert address.study_filters == {"StudyDate": "20240101-20240131", "ModalitiesInStudy": "CR"}
    assert address.instance_filters == {"Modality": "CR"}
    assert isinstance(open_source("dicomweb+http://127.0.0.1:1/x"), DicomwebSource)


def _secret(path: Path, text: str, mode: int) -> str:
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_credentials_come_from_owner_only_files(tmp_path: Path):
    token = _secret(tmp_path / "token", "abc.def\n", 0o600)
    found = credentials_from_environment({"DENSECAM_DICOMWEB_TOKEN_FILE": token})
    assert found.token == "abc.def" and "abc" not in repr(found)
    password = _secret(tmp_path / "pw", "hunter2\n", 0o600)
    found = credentials_from_environment({"DENSECAM_DICOMWEB_USER": "ana", "DENSECAM_DICOMWEB_PASSWORD_FILE": password})
    assert (found.user, found.password) == ("ana", "hunter2") and "hunter2" not in repr(found)
    assert credentials_from_environment({}).token is None  # ~/.netrc, as requests reads it
    shared = _secret(tmp_path / "shared", "hunter2\n", 0o644)
    with pytest.raises(CredentialsError, match="chmod 600"):
        credentials_from_environment({"DENSECAM_DICOMWEB_USER": "ana", "DENSECAM_DICOMWEB_PASSWORD_FILE": shared})
    with pytest.raises(CredentialsError, match="set both"):
        credentials_from_environment({"DENSECAM_DICOMWEB_USER": "ana"})
    with pytest.raises(CredentialsError, match="does not exist"):
        credentials_from_environment({"DENSECAM_DICOMWEB_TOKEN_FILE": str(tmp_path / "none")})
