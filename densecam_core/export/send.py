"""Send exported objects back into their studies over DICOMweb (``--send``), one object per request, and say
per object whether the server stored it (``send-summary.csv``); ``verify`` finds each one there afterwards."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pydicom

from densecam_core import fileio
from densecam_core.data.sources.dicomweb.address import DicomwebAddress, DicomwebAddressError, parse_address
from densecam_core.data.sources.dicomweb.connection import DicomwebRequestError, open_session, refuse_unusable
from densecam_core.data.sources.dicomweb.credentials import credentials_from_environment
from densecam_core.data.sources.dicomweb.stow import is_stored, store_instance

SEND_SUMMARY = "send-summary.csv"
COLUMNS = ["image_id", "file", "status", "reason"]


@dataclass(frozen=True)
class SendSummary:
    stored: int
    failed: int
    table: pd.DataFrame

    def render(self) -> str:
        return f"sent {self.stored + self.failed} objects: {self.stored} stored, {self.failed} not (see {SEND_SUMMARY})"


def destination(url: str) -> DicomwebAddress:
    """The server of ``--send dicomweb+https://host/path`` (filters make no sense there and are refused)."""
    address = parse_address(url)
    if address.filters:
        raise DicomwebAddressError("`send` takes the server's address only (no ?filters)")
    return address


def send_objects(folder: Path, objects: list[tuple[str, str]], url: str, *, verify: bool = False) -> SendSummary:
    """POST each ``(image_id, file name)`` of ``folder`` to the study it belongs to, and record the answers."""
    address = destination(url)
    base = address.base
    credentials = credentials_from_environment()
    rows = []
    with open_session(credentials, connections=1) as session:
        for position, (image_id, name) in enumerate(objects):
            data = (folder / name).read_bytes()
            header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            study, sop = str(header.StudyInstanceUID), str(header.SOPInstanceUID)
            stored = store_instance(session, base, study, sop, data)
            if position == 0 and stored.error is not None and stored.error.unusable:  # all others would fail alike
                refuse_unusable(stored.error, address.server, credentials)
            status, reason = ("stored", "") if stored.ok else ("failed", stored.reason)
            if stored.ok and verify:
                try:
                    found = is_stored(session, base, study, sop)
                except DicomwebRequestError as exc:
                    found, reason = False, exc.reason
                status, reason = (
                    ("verified", "") if found else ("failed", reason or "stored, but QIDO-RS does not find it")
                )
            rows.append({"image_id": image_id, "file": name, "status": status, "reason": reason})
    table = pd.DataFrame(rows, columns=COLUMNS)
    fs, root = fileio.filesystem(str(folder))
    fileio.write_bytes_atomic(fs, fileio.join(root, SEND_SUMMARY), table.to_csv(index=False).encode())
    failed = int((table["status"] == "failed").sum())
    return SendSummary(len(table) - failed, failed, table)
