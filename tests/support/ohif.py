"""The most used open web viewer, OHIF (npm's prebuilt ``@ohif/app``, unpacked by tests/setup.sh into
``.cache/ohif``), served on 127.0.0.1 with the test PACS behind it on the same origin (a browser would refuse
Orthanc's answers from another origin), its login added by the server as a PACS gateway would."""

from __future__ import annotations

import mimetypes
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tests.support.local_http import answer, serving
from tests.support.orthanc import Pacs

REPO = Path(__file__).resolve().parents[2]
OHIF_VERSION = "3.13.2"
DIST = REPO / ".cache" / "ohif" / OHIF_VERSION / "package" / "dist"
CONFIG = """window.config = {
  routerBasename: null, extensions: [], modes: [], showStudyList: true, maxNumberOfWebWorkers: 1,
  showWarningMessageForCrossOrigin: false, showCPUFallbackMessage: false, showLoadingIndicator: true,
  defaultDataSourceName: 'pacs',
  dataSources: [{
    namespace: '@ohif/extension-default.dataSourcesModule.dicomweb', sourceName: 'pacs',
    configuration: {
      friendlyName: 'test PACS', name: 'orthanc', wadoUriRoot: '/dicom-web', qidoRoot: '/dicom-web',
      wadoRoot: '/dicom-web', qidoSupportsIncludeField: false, imageRendering: 'wadors',
      thumbnailRendering: 'wadors', enableStudyLazyLoad: true, supportsFuzzyMatching: false,
      supportsWildcard: true, bulkDataURI: { enabled: true }, omitQuotationForMultipartRequest: true,
    },
  }],
};
"""
mimetypes.add_type("application/wasm", ".wasm")
mimetypes.add_type("text/javascript", ".js")


def viewer_dist() -> Path:
    if not (DIST / "index.html").is_file():
        pytest.fail(f"OHIF {OHIF_VERSION} is not unpacked in {DIST}; run bash tests/setup.sh", pytrace=False)
    return DIST


@contextmanager
def serving_viewer(pacs: Pacs) -> Iterator[str]:
    """``http://127.0.0.1:PORT``: OHIF's files, its configuration, and ``/dicom-web`` forwarded to ``pacs``."""
    dist = viewer_dist()
    session = pacs.session()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path.startswith("/dicom-web/"):
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "range")}
                reply = session.get(pacs.rest + self.path, headers=headers, timeout=60)
                kept = {"Content-Type": reply.headers.get("Content-Type", "application/octet-stream")}
                return self._answer(reply.status_code, kept, reply.content)
            if path == "/app-config.js":
                return self._answer(200, {"Content-Type": "text/javascript"}, CONFIG.encode())
            target = (dist / path.lstrip("/")).resolve()
            if not target.is_file() or dist not in target.parents:
                target = dist / "index.html"  # the viewer's own routes
            kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            self._answer(200, {"Content-Type": kind}, target.read_bytes())

        def _answer(self, status: int, headers: dict[str, str], content: bytes) -> None:
            answer(self, status, headers, content)

    try:
        with serving(Handler) as url:
            yield url
    finally:
        session.close()
