"""A PACS as a source: the studies a DICOMweb query selects are pulled into a pseudonymous cache, then read
exactly as a folder of DICOM files is. Instances that could not be pulled stay rows, with their reason."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import ClassVar

import pandas as pd

from densecam_core.data.errors import ManifestError
from densecam_core.data.pseudonyms import Identifiers, load_identifiers
from densecam_core.data.rows import SOURCE_ERROR, rows_from_relative_paths
from densecam_core.data.sources.dicomweb.address import is_dicomweb, parse_address
from densecam_core.data.sources.dicomweb.connection import DicomwebRequestError, open_session, refuse_unusable
from densecam_core.data.sources.dicomweb.credentials import credentials_from_environment
from densecam_core.data.sources.dicomweb.pacs_cache import open_cache
from densecam_core.data.sources.dicomweb.query import Instance, list_instances
from densecam_core.data.sources.dicomweb.retrieve import THREADS, Pulled, pull
from densecam_core.data.sources.registry import SourceOptions

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
UNLISTED = "study-listing-failed"
"""The row of a study whose instances could not be listed (the study is known; its images are not)."""


class DicomwebSource:
    described: ClassVar[str] = (
        "a DICOMweb server, dicomweb+https://host/path?StudyDate=A-B&Modality=CR (dicomweb+http for a local one), "
        "pulled into `pacs_cache`"
    )
    threads: ClassVar[int] = THREADS

    @classmethod
    def accepts(cls, text: str) -> bool:
        return is_dicomweb(text)

    def __init__(self, text: str, options: SourceOptions) -> None:
        self.address = parse_address(text)
        self.options = options
        self.targeted: int | None = None  # how many studies a targeted pull named

    def recorded(self) -> str:
        targeted = f" (a targeted pull of {self.targeted} studies)" if self.targeted is not None else ""
        return self.address.recorded() + targeted

    def rows(self) -> pd.DataFrame:
        if not self.options.pacs_cache:
            raise ManifestError("a DICOMweb source is pulled into a cache folder first: name one (`pacs_cache`)")
        studies = read_study_list(self.options.studies) if self.options.studies else None
        self.targeted = None if studies is None else len(studies)
        names = _naming_key(self.options)
        credentials = credentials_from_environment()
        root = open_cache(self.options.pacs_cache, names.key_id)
        started = time.perf_counter()
        with open_session(credentials, connections=self.threads) as session:
            try:
                listing = list_instances(session, self.address, lambda uid: names("study", uid) or "", studies=studies)
            except DicomwebRequestError as exc:
                refuse_unusable(exc, self.address.server, credentials)

            def name(instance: Instance) -> tuple[str, str]:
                return names("study", instance.study) or "", names("instance", instance.sop) or ""

            pulled = pull(session, self.address.base, root, listing.instances, name, threads=self.threads)
        for warning in listing.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        fetched = sum(p.fetched and p.error is None for p in pulled)
        failed = sum(p.error is not None for p in pulled)
        cached = len(pulled) - fetched - failed
        print(
            f"PACS {self.address.server}: {len(pulled)} image instances "
            f"({listing.queries} queries, {listing.other_objects} other objects not pulled); {fetched} pulled, "
            f"{cached} already cached, {failed} failed, in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
        unlisted = [
            Pulled(f"{names('study', uid)}/{UNLISTED}", f"the instances of this study are unknown: {reason}", False)
            for uid, reason in listing.unlisted
        ]
        if not pulled and not unlisted:
            raise ManifestError(f"the DICOMweb query {self.recorded()!r} selects no image instances")
        frame = rows_from_relative_paths([p.relative for p in pulled + unlisted], root)
        frame[SOURCE_ERROR] = pd.array([p.error for p in pulled + unlisted], dtype="string")
        frame.attrs["walked_folder"] = str(root)  # readers refuse links out of the cache
        frame.attrs["pacs"] = {"pulled": fetched, "cached": cached, "failed": failed}
        return frame


def read_study_list(path: str) -> list[str]:
    """The StudyInstanceUIDs of a targeted pull, one per line (a local file: it never enters the store)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"`pacs_studies` {path!r} cannot be read ({type(exc).__name__})") from None
    studies = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    bad = [number for number, uid in enumerate(studies, start=1) if not _UID.fullmatch(uid)]
    if bad:
        raise ManifestError(f"`pacs_studies` {path!r}: entries {bad[:5]} are not StudyInstanceUIDs (digits and dots)")
    if not studies:
        raise ManifestError(f"`pacs_studies` {path!r} names no study")
    return list(dict.fromkeys(studies))


def _naming_key(options: SourceOptions) -> Identifiers:
    """The key the cache names instances under: the run's, else the default one (names are always pseudonyms,
    even when identifiers reach the index in clear)."""
    identifiers = options.identifiers() if options.identifiers is not None else load_identifiers()
    return identifiers if identifiers.key is not None else load_identifiers()
