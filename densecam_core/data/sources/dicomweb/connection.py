"""HTTP to a DICOMweb server: keep-alive sessions, retries with backoff on 429/502/503/504 honouring
Retry-After (capped), no compression (pixel data does not compress, and gzip costs ten times the transfer),
and reasons that never hold a URL, a UID or a secret: urllib3 logs request paths, which name studies,
series and instances, so its records are redacted before any handler sees them."""

from __future__ import annotations

import logging
import re
from typing import Any, NoReturn

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from densecam_core.data.errors import ManifestError
from densecam_core.data.sources.dicomweb.credentials import HOW, Credentials

RETRY_STATUSES = (429, 502, 503, 504)
TRIES = 4
BACKOFF_SECONDS = 0.25
MAX_RETRY_AFTER_SECONDS = 30.0
TIMEOUT_SECONDS = (10.0, 120.0)  # connect, read
_PATH = re.compile(r"/(studies|series|instances)/[^\s\"'?]*")
_LOGGERS = (
    "urllib3.connectionpool",
    "urllib3.util.retry",
    "urllib3.connection",
    "urllib3.response",
    "urllib3.poolmanager",
)


class DicomwebUnreachable(ManifestError):
    """The server cannot be used at all (down, refusing, 401/403): the job stops before any work."""


class DicomwebRequestError(Exception):
    """One request failed; ``reason`` is safe to store (no URL, no UID, no secret)."""

    def __init__(self, reason: str, status: int | None = None, *, connection: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.status, self.connection = reason, status, connection

    @property
    def unusable(self) -> bool:
        """The server cannot be used at all (login refused, not reachable): every other request would fail alike."""
        return self.status in (401, 403) or self.connection


class _CappedRetry(Retry):
    def get_retry_after(self, response: Any) -> float | None:
        after = super().get_retry_after(response)
        return None if after is None else min(after, MAX_RETRY_AFTER_SECONDS)


class _RedactPaths(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg, record.args = _PATH.sub(r"/\1/…", message), None
        return True


def redact_library_logs() -> None:
    """Redact the request paths urllib3 logs (once per process)."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactPaths) for f in logger.filters):
            logger.addFilter(_RedactPaths())


def open_session(credentials: Credentials, *, connections: int = 4) -> requests.Session:
    redact_library_logs()
    session = requests.Session()
    session.headers["Accept-Encoding"] = "identity"
    session.headers["User-Agent"] = "densecam"
    if credentials.token:
        session.headers["Authorization"] = f"Bearer {credentials.token}"
    elif credentials.user:
        session.auth = (credentials.user, credentials.password or "")
    if credentials.ca_bundle:
        session.verify = credentials.ca_bundle
    if credentials.client_cert:
        session.cert = credentials.client_cert
    retry = _CappedRetry(
        total=TRIES - 1,
        backoff_factor=BACKOFF_SECONDS,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=None,  # POST too: a STOW of the same object is idempotent (same UIDs)
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    adapter = HTTPAdapter(max_retries=retry, pool_connections=connections, pool_maxsize=connections)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def request(session: requests.Session, method: str, url: str, what: str, **kwargs: Any) -> requests.Response:
    """``session.request`` whose failures are DicomwebRequestError with a safe reason (``what``: QIDO-RS…)."""
    kwargs.setdefault("timeout", TIMEOUT_SECONDS)
    kwargs.setdefault("verify", session.verify)  # else $REQUESTS_CA_BUNDLE would silently replace the CA bundle given
    try:
        response = session.request(method, url, **kwargs)
    except requests.exceptions.RetryError as exc:
        raise DicomwebRequestError(f"{what} failed after {TRIES} tries ({_status_of(exc)})") from None
    except requests.exceptions.ConnectionError as exc:
        raise DicomwebRequestError(f"{what}: the connection failed ({_kind(exc)})", connection=True) from None
    except requests.exceptions.Timeout:
        raise DicomwebRequestError(f"{what}: no answer within {TIMEOUT_SECONDS[1]:.0f} s") from None
    except requests.exceptions.RequestException as exc:
        raise DicomwebRequestError(f"{what}: {type(exc).__name__}") from None
    if response.ok:
        return response
    tries = len(response.raw.retries.history) + 1 if getattr(response.raw, "retries", None) else 1
    after = f" after {tries} tries" if tries > 1 else ""
    raise DicomwebRequestError(f"{what} answered HTTP {response.status_code}{after}", response.status_code)


def _kind(exc: Exception) -> str:
    text = str(exc)
    for kind in ("Connection refused", "Name or service not known", "timed out", "Connection reset", "certificate"):
        if kind.lower() in text.lower():
            return kind.lower()
    return type(exc).__name__


def _status_of(exc: Exception) -> str:
    match = re.search(r"too many (\d\d\d) error responses", str(exc))
    return f"HTTP {match.group(1)}" if match else "too many errors"


def refuse_unusable(error: DicomwebRequestError, server: str, credentials: Credentials) -> NoReturn:
    """Raise DicomwebUnreachable naming the server and what ``error`` says of it."""
    if error.status == 401:
        raise DicomwebUnreachable(
            f"the DICOMweb server {server} answered HTTP 401 (not authorised) to {credentials.described}; {HOW}"
        )
    if error.status == 403:
        raise DicomwebUnreachable(f"the DICOMweb server {server} answered HTTP 403: these credentials may not query it")
    raise DicomwebUnreachable(f"the DICOMweb server {server} cannot be used: {error.reason}")
