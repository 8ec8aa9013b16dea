"""QIDO-RS: which studies, then which image instances, a source's filters select. Pages are asked for
explicitly and a short page ends a listing; a server that repeats a page is refused (some ignore
``offset``, and a naive pager loops forever). Servers also cap a find's answers without saying so, so a
date range is split in halves while the halves hold more than the whole did, and a count that still
looks capped is reported, never dropped silently."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from densecam_core.data.sources.dicomweb.address import DATE_FORMAT, DicomwebAddress
from densecam_core.data.sources.dicomweb.connection import DicomwebRequestError, request

PAGE = 1000
MAX_WINDOW_DAYS = 31
IMAGE_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1": "CR",
    "1.2.840.10008.5.1.4.1.1.1.1": "DX",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "DX (for processing)",
    "1.2.840.10008.5.1.4.1.1.1.2": "MG",
    "1.2.840.10008.5.1.4.1.1.1.2.1": "MG (for processing)",
    "1.2.840.10008.5.1.4.1.1.1.3": "IO",
    "1.2.840.10008.5.1.4.1.1.1.3.1": "IO (for processing)",
}
"""Projection radiographs: what the explainer reads. Secondary Captures, Segmentations and reports (densecam's
own maps among them) are never pulled."""
STUDY_UID, SERIES_UID, SOP_UID, SOP_CLASS, RELATED = "0020000D", "0020000E", "00080018", "00080016", "00201208"


@dataclass(frozen=True)
class Instance:
    study: str
    series: str
    sop: str


@dataclass
class Listing:
    instances: list[Instance] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    queries: int = 0
    other_objects: int = 0  # instances of the studies that are not images (SR, SEG, SC, …)
    unlisted: list[tuple[str, str]] = field(default_factory=list)  # (study UID, why its instances are unknown)


def first_value(item: dict[str, Any], tag: str) -> str | None:
    """The first value of ``tag`` in a DICOM JSON dataset, as text; None when it has none."""
    values = item.get(tag, {}).get("Value") or [None]
    return None if values[0] is None else str(values[0])


def qido_json(session: requests.Session, url: str, params: dict[str, str]) -> list[dict[str, Any]]:
    """One QIDO-RS answer: its datasets (none for 204 or an empty body); anything else is a DicomwebRequestError."""
    response = request(session, "GET", url, "QIDO-RS", params=params, headers={"Accept": "application/dicom+json"})
    if response.status_code == 204 or not response.content:
        return []
    try:
        answer = response.json()
    except ValueError:
        raise DicomwebRequestError("QIDO-RS answered something that is not JSON") from None
    if not isinstance(answer, list) or not all(isinstance(item, dict) for item in answer):
        raise DicomwebRequestError("QIDO-RS answered JSON that is not a list of datasets")
    return answer


class Qido:
    def __init__(self, session: requests.Session, address: DicomwebAddress, page: int = PAGE) -> None:
        self.session, self.address, self.page = session, address, page
        self.listing = Listing()
        self.cap: int | None = None  # the smallest count a find was seen cut at

    def find(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        """Every answer of one find, page by page."""
        found: list[dict[str, Any]] = []
        seen: set[tuple[str | None, ...]] = set()
        while True:
            answer = self._page(path, {**params, "limit": str(self.page), "offset": str(len(found))})
            keys = {
                (first_value(item, STUDY_UID), first_value(item, SERIES_UID), first_value(item, SOP_UID))
                for item in answer
            }
            if found and keys and keys <= seen:
                raise DicomwebRequestError("QIDO-RS: the server repeated a page (it ignores offset); paging stopped")
            seen |= keys
            found.extend(answer)
            if len(answer) < self.page:
                return found

    def _page(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        self.listing.queries += 1
        return qido_json(self.session, f"{self.address.base}/{path}", params)

    def studies(self) -> list[dict[str, Any]]:
        """The studies the filters select; a closed date range in windows, split while splitting finds more."""
        filters = self.address.study_filters
        dates = self.address.date_range
        if dates is None:
            return self.find("studies", filters)
        found: dict[str, dict[str, Any]] = {}
        for first, last in _windows(*dates, MAX_WINDOW_DAYS):
            for item in self._window(filters, first, last, self._count_window(filters, first, last)):
                found.setdefault(first_value(item, STUDY_UID) or "", item)
        return [found[k] for k in sorted(found)]

    def _count_window(self, filters: dict[str, str], first: dt.date, last: dt.date) -> list[dict[str, Any]]:
        return self.find("studies", {**filters, "StudyDate": _range(first, last)})

    def _window(
        self, filters: dict[str, str], first: dt.date, last: dt.date, whole: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        if len(whole) < 2:
            return whole
        if first == last:
            if self.cap is not None and len(whole) >= self.cap:
                self.listing.warnings.append(
                    f"QIDO-RS: StudyDate={first.strftime(DATE_FORMAT)} answered {len(whole)} studies, the server's "
                    "cap on answers: studies of that day may be missing (raise the server's limit)"
                )
            return whole
        middle = first + (last - first) // 2
        halves = [
            self._count_window(filters, first, middle),
            self._count_window(filters, middle + dt.timedelta(days=1), last),
        ]
        if sum(map(len, halves)) <= len(whole) and all(halves):
            return whole  # the halves hold no more than the whole: it was complete
        if sum(map(len, halves)) > len(whole):
            self._saw_cap(len(whole))
        bounds = [(first, middle), (middle + dt.timedelta(days=1), last)]
        return [item for (a, b), half in zip(bounds, halves) for item in self._window(filters, a, b, half)]

    def _saw_cap(self, count: int) -> None:
        if self.cap is None or count < self.cap:
            self.cap = count
            self.listing.warnings.append(
                f"QIDO-RS: the server cut a find at {count} answers without saying so; densecam split the date "
                "range until every part answered in full"
            )

    def instances(self, study: dict[str, Any], pseudonym: Callable[[str], str]) -> list[Instance]:
        """The image instances of one study that the instance filters select."""
        uid = first_value(study, STUDY_UID)
        if uid is None:
            return []
        answer = self.find(f"studies/{uid}/instances", self.address.instance_filters)
        related = first_value(study, RELATED)
        if related is not None and not self.address.instance_filters and len(answer) < int(float(related)):
            self.listing.warnings.append(
                f"QIDO-RS: study {pseudonym(uid)} lists {len(answer)} of its {related} instances; the server may "
                "cap answers (raise its limit)"
            )
        images = []
        for item in answer:
            sop, series = first_value(item, SOP_UID), first_value(item, SERIES_UID)
            if first_value(item, SOP_CLASS) in IMAGE_CLASSES and sop and series:
                images.append(Instance(uid, series, sop))
            else:
                self.listing.other_objects += 1
        return images


def _range(first: dt.date, last: dt.date) -> str:
    return f"{first.strftime(DATE_FORMAT)}-{last.strftime(DATE_FORMAT)}"


def _windows(first: dt.date, last: dt.date, days: int) -> list[tuple[dt.date, dt.date]]:
    windows, start = [], first
    while start <= last:
        end = min(last, start + dt.timedelta(days=days - 1))
        windows.append((start, end))
        start = end + dt.timedelta(days=1)
    return windows


def list_instances(
    session: requests.Session,
    address: DicomwebAddress,
    pseudonym: Callable[[str], str],
    *,
    page: int = PAGE,
    studies: list[str] | None = None,
) -> Listing:
    """Every image instance the address selects, in a fixed order (by study, series and instance UID);
    ``studies``: only these studies (a targeted pull), their instances filtered as the address says."""
    qido = Qido(session, address, page)
    found = (
        qido.studies()
        if studies is None
        else [s for uid in studies for s in qido.find("studies", {"StudyInstanceUID": uid})]
    )
    for study in found:
        try:
            qido.listing.instances.extend(qido.instances(study, pseudonym))
        except DicomwebRequestError as exc:  # one study's listing failed: a row says so, the others go on
            qido.listing.unlisted.append((first_value(study, STUDY_UID) or "", exc.reason))
    qido.listing.instances.sort(key=lambda i: (i.study, i.series, i.sop))
    return qido.listing
