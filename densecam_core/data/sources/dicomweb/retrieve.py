"""WADO-RS: one instance as stored (``transfer-syntax=*``: no transcoding, which without GDCM fails every JPEG
2000 instance and with it costs a third of a second and 7.5 times the bytes), checked to be whole and to be
the instance asked for before it enters the cache."""

from __future__ import annotations

import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pydicom
import requests
from requests_toolbelt.multipart.decoder import MultipartDecoder

from densecam_core.data.sources.dicomweb.connection import DicomwebRequestError, request
from densecam_core.data.sources.dicomweb.pacs_cache import cached_path, write_whole
from densecam_core.data.sources.dicomweb.query import Instance

ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
THREADS = 4


@dataclass(frozen=True)
class Pulled:
    relative: str  # the cached file, relative to the cache folder
    error: str | None  # why it could not be pulled (safe to store)
    fetched: bool  # False: it was in the cache already


def retrieve(session: requests.Session, base: str, instance: Instance) -> bytes:
    """The instance's bytes as stored on the server; DicomwebRequestError when they cannot be trusted."""
    url = f"{base}/studies/{instance.study}/series/{instance.series}/instances/{instance.sop}"
    response = request(session, "GET", url, "WADO-RS", headers={"Accept": ACCEPT})
    body = response.content
    try:
        decoder = MultipartDecoder(body, response.headers.get("Content-Type", ""))
    except Exception:
        raise DicomwebRequestError("WADO-RS answered a body that is not multipart/related") from None
    boundary = _boundary(response.headers.get("Content-Type", ""))
    if not body.rstrip().endswith(b"--" + boundary + b"--"):
        raise DicomwebRequestError("WADO-RS answered a multipart body cut short (no closing boundary)")
    parts = [p for p in decoder.parts if _content_type(p).startswith(b"application/dicom")]
    if len(parts) != 1:
        raise DicomwebRequestError(f"WADO-RS answered {len(parts)} DICOM parts for one instance")
    data = parts[0].content
    try:
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except Exception:
        raise DicomwebRequestError("WADO-RS answered a part that is not DICOM") from None
    if str(header.get("SOPInstanceUID", "")) != instance.sop:
        raise DicomwebRequestError("WADO-RS answered another instance than the one asked for")
    return data


def _boundary(content_type: str) -> bytes:
    for piece in content_type.split(";"):
        name, _, value = piece.strip().partition("=")
        if name.lower() == "boundary":
            return value.strip('"').encode()
    return b"\0no boundary\0"


def _content_type(part: object) -> bytes:
    headers = getattr(part, "headers", {})
    return bytes(headers.get(b"Content-Type", b"")).lower()


def pull(
    session: requests.Session,
    base: str,
    root: Path,
    instances: list[Instance],
    name: Callable[[Instance], tuple[str, str]],
    *,
    threads: int = THREADS,
) -> list[Pulled]:
    """Each instance into the cache (``name``: its study and instance pseudonyms), skipping cached ones."""

    def one(instance: Instance) -> Pulled:
        study, sop = name(instance)
        target = cached_path(root, study, sop)
        relative = str(target.relative_to(root))
        if target.is_file():
            return Pulled(relative, None, fetched=False)
        try:
            write_whole(root, target, retrieve(session, base, instance))
        except DicomwebRequestError as exc:
            return Pulled(relative, exc.reason, fetched=True)
        return Pulled(relative, None, fetched=True)

    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="wado") as pool:
        return list(pool.map(one, instances))
