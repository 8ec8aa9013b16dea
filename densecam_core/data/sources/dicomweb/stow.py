"""STOW-RS: one object per request into its own study (one bad object must not fail the others, and a
server answers 409 for an object posted to another study), the answer read for what was stored and why
not, and QIDO-RS to find it there afterwards."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import requests

from densecam_core.data.sources.dicomweb.query import SOP_UID
from densecam_core.data.sources.dicomweb.session import DicomwebRequestError, request

REFERENCED, FAILED, FAILURE_REASON = "00081199", "00081198", "00081197"
REFERENCED_SOP_INSTANCE = "00081155"


@dataclass(frozen=True)
class Stored:
    ok: bool
    reason: str  # empty when stored


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
        return Stored(False, exc.reason + hint)
    answer = _json(response)
    failed = answer.get(FAILED, {}).get("Value") or []
    if failed:
        reasons = sorted({str(_first(item, FAILURE_REASON)) for item in failed})
        return Stored(False, f"STOW-RS refused it (failure reason {', '.join(reasons)})")
    referenced = {_first(item, REFERENCED_SOP_INSTANCE) for item in answer.get(REFERENCED, {}).get("Value") or []}
    if sop not in referenced:
        return Stored(False, f"STOW-RS answered HTTP {response.status_code} without referencing the object")
    return Stored(True, "")


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _first(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


def is_stored(session: requests.Session, base: str, study: str, sop: str) -> bool:
    """Whether QIDO-RS finds the object in the study."""
    response = request(
        session, "GET", f"{base}/studies/{study}/instances", "QIDO-RS",
        params={"SOPInstanceUID": sop}, headers={"Accept": "application/dicom+json"},
    )  # fmt: skip
    if response.status_code == 204 or not response.content:
        return False
    try:
        answer = response.json()
    except ValueError:
        return False
    return any(_first(item, SOP_UID) == sop for item in answer if isinstance(item, dict))
