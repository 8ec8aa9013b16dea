"""What identifies a source file for the input cache: path and size, then its modification time (stat) or a digest of its bytes (content)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

from densecam_core import fileio
from densecam_core.data.sources.locations import is_remote, local_path


@dataclass(frozen=True)
class SourceIdentity:
    """What must be unchanged for a cached input to stand for its file."""

    path: str
    size: int
    stamp: str


CACHE_IDENTITIES = ("stat", "content")
"""How a cached input is matched to its file. ``stat``: path, size and modification time (or an object
store's ETag), one stat per file, blind to a file rewritten in place at the same size with its time
restored (``cp -p``, ``rsync -t``). ``content``: path, size and a BLAKE2b digest of the bytes: every
file is read whole on every job (docs/PERFORMANCE.md has the cost), no decode on a hit."""


CONTENT_PREFIX = "blake2b:"


def validate_cache_identity(name: str) -> str:
    if name not in CACHE_IDENTITIES:
        raise ValueError(f"`cache_identity` must be one of {', '.join(CACHE_IDENTITIES)}; got {name!r}")
    return name


def identify(path: str, content: bool = False) -> SourceIdentity | None:
    """The file's identity now, or None when it is missing, unreadable or not a regular file.

    ``content``: its stamp is a digest of the bytes instead of the modification time."""
    identity = _stat_identity(path)
    if identity is None or not content:
        return identity
    try:
        digest = hashlib.blake2b(digest_size=16)
        fs, inner = fileio.filesystem(path)
        with fileio.open_regular(fs, inner) as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    except (OSError, ValueError):
        return None
    return SourceIdentity(path, identity.size, CONTENT_PREFIX + digest.hexdigest())


def _stat_identity(path: str) -> SourceIdentity | None:
    try:
        if is_remote(path):
            fs, inner = fileio.filesystem(path)
            info = fs.info(inner)
            if info.get("type", "file") != "file":
                return None
            stamp = next(
                (
                    str(info[k])
                    for k in ("ETag", "etag", "LastModified", "last_modified", "mtime", "created")
                    if info.get(k) is not None
                ),
                "",
            )
            return SourceIdentity(path, int(info.get("size") or 0), stamp)
        local = local_path(path)
        info = os.stat(local)
        if not stat.S_ISREG(info.st_mode) or not os.access(local, os.R_OK):
            return None
        return SourceIdentity(path, int(info.st_size), str(info.st_mtime_ns))
    except (OSError, ValueError):
        return None


def _identify_all(paths: Sequence[str], content: bool = False) -> list[SourceIdentity | None]:
    return [identify(path, content) for path in paths]


def identify_paths(
    paths: Sequence[str], threads: int, executor: Executor | None = None, *, content: bool = False
) -> list[SourceIdentity | None]:
    """Each file's identity, in order: on ``executor``, else on ``threads`` new threads (object stores:
    one request each), in one task per thread, since a future per file cost more than a local stat."""
    tasks = max(1, min(len(paths), threads))
    with contextlib.ExitStack() as stack:
        pool = executor or stack.enter_context(ThreadPoolExecutor(tasks))
        chunks = [paths[i::tasks] for i in range(tasks)]
        parts = list(pool.map(_identify_all, chunks, [content] * tasks))
    return [parts[i % tasks][i // tasks] for i in range(len(paths))]
