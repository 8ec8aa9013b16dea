"""STOW-RS: one object per request into its own study (one bad object must not fail the others, and a
server answers 409 for an object posted to another study), the answer read for what was stored and why
not, and QIDO-RS to find it there afterwards."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import requests

from densecam_core.data.sources.dicomweb.connection import DicomwebRequestError, request
from densecam_core.data.sources.dicomweb.query import SOP_UID, first_value, qido_json

REFERENCED, FAILED, FAILURE_REASON = "00081199", "00081198", "00081197"
REFERENCED_SOP_INSTANCE = "00081155"


@dataclass(frozen=True)
class Stored:
    ok: bool
    reason: str  # empty when stored
    error: DicomwebRequestError | None = None  # the request's own failure, when the request failed


def store_instance(session: requests.Session, base: str, study: str, sop: str, data: bytes) -> Stored:
    """POST one object to ``/studies/{study}``; stored only when the answer references it and fails nothing."""
    boundary = "densecam-" + secrets.token_hex(12)
    body = b"".join(
        (
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
            data,
            f"\r\n--{boundary}--\r\n".encode(),
        )
    )
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
    }
    try:
        response = request(session, "POST", f"{base}/studies/{study}", "STOW-RS", data=body, headers=headers)
    except DicomwebRequestError as exc:
        hint = " (the study does not accept it: another study's object?)" if exc.status == 409 else ""
        return Stored(False, exc.reason + hint, exc)
    answer = _json(response)
    failed = answer.get(FAILED, {}).get("Value") or []
    if failed:
        reasons = sorted({str(first_value(item, FAILURE_REASON)) for item in failed})
        return Stored(False, f"STOW-RS refused it (failure reason {', '.join(reasons)})")
    referenced = {first_value(item, REFERENCED_SOP_INSTANCE) for item in answer.get(REFERENCED, {}).get("Value") or []}
    if sop not in referenced:
        return Stored(False, f"STOW-RS answered HTTP {response.status_code} without referencing the object")
    return Stored(True, "")


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def is_stored(session: requests.Session, base: str, study: str, sop: str) -> bool:
    """Whether QIDO-RS finds the object in the study."""
    answer = qido_json(session, f"{base}/studies/{study}/instances", {"SOPInstanceUID": sop})
    return any(first_value(item, SOP_UID) == sop for item in answer)
