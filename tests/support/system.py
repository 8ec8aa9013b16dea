"""System programs some tests drive (Debian packages): missing ones fail the test naming the command that
installs them, never skip it (a skipped test is a check a newcomer never ran)."""

from __future__ import annotations

import shutil

import pytest

INSTALL = (
    "bash tests/setup.sh  (or: sudo apt-get install -y dicom3tools chromium chromium-driver orthanc orthanc-dicomweb "
    "orthanc-gdcm)"
)


def require(*programs: str) -> list[str]:
    """The full paths of ``programs``; a missing one fails the test with the install command."""
    found = [shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin") for program in programs]
    missing = [p for p, path in zip(programs, found) if path is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed; run {INSTALL}", pytrace=False)
    return [str(path) for path in found]
