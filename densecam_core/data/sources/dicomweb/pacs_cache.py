"""The PACS cache: a folder densecam owns, instances under their keyed pseudonyms (``s-…/i-….dcm``), each
written whole or not at all, so that a killed pull resumes and a second run reads nothing from the PACS."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from densecam_core.data.errors import ManifestError

MARKER = ".densecam-pacs-cache.json"
PARTIAL = ".partial"


class PacsCacheError(ManifestError):
    """The cache folder cannot be used; refused before the pull."""


def open_cache(folder: str, key_id: str | None) -> Path:
    """The cache folder, created or checked: densecam's own (its marker), under the same pseudonym key, and
    writable. A folder holding other files is refused rather than mixed with."""
    root = Path(folder).expanduser()
    marker = root / MARKER
    if root.exists() and not root.is_dir():
        raise PacsCacheError(f"`pacs_cache` {str(root)!r} is not a folder")
    if root.is_dir() and any(root.iterdir()) and not marker.is_file():
        raise PacsCacheError(
            f"`pacs_cache` {str(root)!r} already holds other files; name an empty or new folder (densecam keeps "
            "its pulled instances there under pseudonymous names)"
        )
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = tempfile.NamedTemporaryFile(dir=root, prefix=".probe-")  # noqa: SIM115 - closed at once
        probe.close()
    except OSError as exc:
        raise PacsCacheError(f"`pacs_cache` {str(root)!r} is not writable ({exc.strerror})") from None
    if marker.is_file():
        recorded = json.loads(marker.read_text(encoding="utf-8")).get("pseudonym_key_id")
        if recorded != key_id:
            raise PacsCacheError(
                f"`pacs_cache` {str(root)!r} was filled under another pseudonym key; use the same key or another folder"
            )
    else:
        marker.write_text(json.dumps({"format": 1, "pseudonym_key_id": key_id}), encoding="utf-8")
    (root / PARTIAL).mkdir(exist_ok=True)
    return root


def cached_path(root: Path, study: str, instance: str) -> Path:
    return root / study / f"{instance}.dcm"


def write_whole(root: Path, target: Path, data: bytes) -> None:
    """``data`` at ``target`` by rename: a reader sees the whole file or none."""
    target.parent.mkdir(exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=root / PARTIAL, delete=False)  # noqa: SIM115 - renamed below
    try:
        with handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, target)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def in_pacs_cache(path: str) -> bool:
    """Whether ``path`` is an instance of a PACS cache (written only once checked to be the instance asked for)."""
    return (Path(path).parent.parent / MARKER).is_file()
