"""Where a file lives: a local path or a URL. The one place that tells them apart, so that a new kind of
location (a ``dicomweb+https://`` source, an ``s3://`` store) is recognised the same way everywhere."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

SCHEME_SEPARATOR = "://"
LOCAL_SCHEME = "file://"


def is_url(location: str | os.PathLike) -> bool:
    """``scheme://...`` (``file://`` included), as opposed to a plain path."""
    return SCHEME_SEPARATOR in os.fspath(location)


def is_remote(location: str | os.PathLike) -> bool:
    """A URL that is not ``file://``: read through fsspec, never opened as a local file."""
    text = os.fspath(location)
    return is_url(text) and not text.startswith(LOCAL_SCHEME)


def local_path(location: str | os.PathLike) -> str:
    """The path of a local location (``file:///x/a.png`` is ``/x/a.png``)."""
    return os.fspath(location).removeprefix(LOCAL_SCHEME)


def scheme_of(location: str) -> str:
    """``s3`` of ``s3://bucket/key``; empty for a plain path."""
    return location.split(SCHEME_SEPARATOR, 1)[0].lower() if is_url(location) else ""


def join(root: str, relative: str) -> str:
    """``relative`` under ``root``, a folder or a URL."""
    return posixpath.join(root.rstrip("/"), relative) if is_url(root) else str(Path(root) / relative)


def parent_of(location: str) -> str:
    """The folder (or URL prefix) holding ``location``: relative manifest paths start there."""
    return posixpath.dirname(location) if is_url(location) else str(Path(location).resolve().parent)


def is_absolute(location: str) -> bool:
    """A URL or an absolute path: it names its file without a root."""
    return is_url(location) or os.path.isabs(location)


def normalise_location(location: str) -> str:
    """One spelling per file: ``/x//a.png`` and ``/x/../x/a.png`` are ``/x/a.png`` (URLs: their path part)."""
    if is_url(location):
        scheme, rest = location.split(SCHEME_SEPARATOR, 1)
        host, slash, path = rest.partition("/")
        if not slash:
            return location
        return f"{scheme}{SCHEME_SEPARATOR}{host}{slash}{posixpath.normpath(path).lstrip('/') if path else ''}"
    return os.path.normpath(location)
