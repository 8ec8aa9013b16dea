"""The source door: each kind of input (a folder, a table, a DICOMDIR, a URL, a PACS) is one class that says
whether it can open a manifest argument and lists its rows; ``open_source`` asks them in order."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

from densecam_core.data.errors import ManifestError
from densecam_core.data.sources.locations import is_url

if TYPE_CHECKING:
    import pandas as pd

    from densecam_core.data.pseudonyms import Identifiers


@dataclass(frozen=True)
class SourceOptions:
    """What a source may need beside its argument. ``identifiers`` is asked for only by a source that names
    files after patient data (a PACS pull caches instances under their keyed pseudonyms)."""

    image_root: str | None = None
    pacs_cache: str | None = None
    identifiers: Callable[[], Identifiers] | None = None
    studies: str | None = None


class Source(Protocol):
    """One kind of input. ``described`` says what a user may pass (listed when nothing accepts an argument)."""

    described: ClassVar[str]

    @classmethod
    def accepts(cls, text: str) -> bool: ...

    def __init__(self, text: str, options: SourceOptions) -> None: ...

    def rows(self) -> pd.DataFrame:
        """One row per image (``data.rows.COLUMNS`` at least, unfinished: ``data.rows.finish`` types them)."""
        ...

    def recorded(self) -> str:
        """What the run records as its source: nothing secret, nothing that identifies a patient."""
        ...


SOURCES: list[type[Source]] = []
"""Asked in order; the first that accepts an argument reads it. ``register_source`` adds one."""


def register_source(source: type[Source], *, first: bool = False) -> type[Source]:
    """Add a kind of source (``first``: asked before the others, to claim arguments they would take)."""
    _register_builtin()
    if source not in SOURCES:
        SOURCES.insert(0, source) if first else SOURCES.append(source)
    return source


def open_source(text: str, options: SourceOptions | None = None) -> Source:
    """The source that reads ``text``; none accepting it is one error listing what is accepted."""
    _register_builtin()
    for kind in SOURCES:
        if kind.accepts(text):
            return kind(text, options or SourceOptions())
    missing = " (no such file or folder exists)" if not is_url(text) and not os.path.exists(text) else ""
    accepted = "; ".join(kind.described for kind in SOURCES)
    raise ManifestError(f"manifest {text!r}: no source reads it{missing}. Accepted: {accepted}")


def _register_builtin() -> None:
    """The built-in sources, imported on first use (the PACS one only parses its URL until it is used)."""
    from densecam_core.data.sources import dicomweb, folder, table

    for kind in (dicomweb.DicomwebSource, table.UrlTableSource, folder.DicomdirSource, folder.FolderSource):
        if kind not in SOURCES:
            SOURCES.append(kind)
    if table.TableSource not in SOURCES:
        SOURCES.append(table.TableSource)
