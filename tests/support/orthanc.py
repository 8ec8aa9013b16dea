"""A real PACS for the tests: Orthanc (Debian's ``orthanc``, ``orthanc-dicomweb``, ``orthanc-gdcm``) on free
loopback ports, a temporary storage folder, authentication on with a random password kept in a mode-600
file, stopped by its PID. Orthanc 1.10 has no bind address: ``RemoteAccessAllowed: false`` refuses clients
that are not on 127.0.0.1, and its DICOM port accepts no association from an unknown AE title."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.support.system import require

PLUGINS = Path("/usr/share/orthanc/plugins")
USER = "densecam"


@dataclass(frozen=True)
class Pacs:
    url: str  # http://127.0.0.1:PORT/dicom-web
    rest: str  # http://127.0.0.1:PORT (Orthanc's own REST API)
    user: str
    password: str
    password_file: Path
    pid: int

    @property
    def source(self) -> str:
        return "dicomweb+" + self.url

    def env(self) -> dict[str, str]:
        """The environment that lets densecam log in."""
        return {"DENSECAM_DICOMWEB_USER": self.user, "DENSECAM_DICOMWEB_PASSWORD_FILE": str(self.password_file)}

    def session(self) -> requests.Session:
        session = requests.Session()
        session.auth = (self.user, self.password)
        return session

    def upload(self, path: Path) -> str:
        """Store a file through Orthanc's REST API (not DICOMweb); its Orthanc id."""
        answer = self.session().post(f"{self.rest}/instances", data=path.read_bytes(), timeout=30)
        answer.raise_for_status()
        return str(answer.json()["ID"])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_orthanc(folder: Path, *, compression: bool = False, limit_find: int = 0) -> Iterator[Pacs]:
    """Orthanc serving DICOMweb on loopback until the block ends; ``limit_find`` caps every find's answers
    (0: no cap), as a busy site's PACS does."""
    (orthanc,) = require("Orthanc")  # Debian installs it in /usr/sbin
    for plugin in ("libOrthancDicomWeb.so", "libOrthancGdcm.so"):
        if not (PLUGINS / plugin).is_file():
            require(f"orthanc plugin {plugin}")
    folder.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(18)
    password_file = folder / "password"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    http, dicom = free_port(), free_port()
    config = {
        "Name": "densecam-test",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "HttpPort": http,
        "DicomPort": dicom,
        "DicomAet": "DENSECAMTEST",
        "DicomModalities": {},
        "DicomAlwaysAllowEcho": False,
        "DicomAlwaysAllowStore": False,
        "DicomCheckModalityHost": True,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: password},
        "HttpCompressionEnabled": compression,
        "LimitFindResults": limit_find,
        "LimitFindInstances": limit_find,
        "Plugins": [str(PLUGINS / "libOrthancDicomWeb.so"), str(PLUGINS / "libOrthancGdcm.so")],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = open(folder / "orthanc.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen([orthanc, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    pacs = Pacs(
        f"http://127.0.0.1:{http}/dicom-web", f"http://127.0.0.1:{http}", USER, password, password_file, process.pid
    )
    try:
        _wait_ready(pacs, process, folder)
        yield pacs
    finally:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log.close()


def _wait_ready(pacs: Pacs, process: subprocess.Popen, folder: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"Orthanc exited with {process.returncode}: {(folder / 'orthanc.log').read_text()[-2000:]}"
            )
        try:
            if pacs.session().get(f"{pacs.rest}/system", timeout=2).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"Orthanc did not answer within {timeout} s")
