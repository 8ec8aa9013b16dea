"""Files on a local disk or behind an fsspec URL: the helpers every layer shares.

Why one module: the store, training and the demo all write JSON that readers must never see half
written, and all join paths onto URLs without losing the protocol. No torch import.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import posixpath
import stat
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem


class NotRegularFileError(OSError):
    """A store path that is a FIFO, socket or device: opening it for reading could block forever."""


class FileTooLargeError(OSError):
    """A file larger than the cap its reader sets: refused before it is read into memory."""


TMP_PREFIX = "_tmp-"
"""Files being written (renamed into place when whole): every reader and compaction skips them."""


class LinkOutsideError(OSError):
    """A path that leads, through a symbolic link at any level, outside the folder it must stay in."""


def open_regular(fs: fsspec.AbstractFileSystem, path: str, *, within: str | None = None) -> IO[bytes]:
    """``fs.open(path, "rb")``, except that on a local disk only regular files are opened: a FIFO named like
    a store file would otherwise block its reader forever (opened without blocking, then checked). With
    ``within`` (a local folder), a path that a link at any level leads out of it is refused, never read."""
    if not isinstance(fs, LocalFileSystem):
        return fs.open(path, "rb")
    local = fs._strip_protocol(path)
    if within is not None:
        refuse_outside(local, within)
    fd = os.open(local, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFileError(f"not a regular file (a FIFO, socket or device): {path}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_file(path: str | os.PathLike[str], *, max_bytes: int, within: str | None = None) -> bytes:
    """A local file's bytes, whole: the one reader of every file a user names (images, keys, labels, export
    sources). Only regular files are read (a FIFO is opened without blocking, then refused, so nothing waits
    for a writer that never comes), and never more than ``max_bytes`` (a huge file is refused before it is
    read); with ``within``, one that a symbolic link leads out of that folder is not read either. Raises
    ``NotRegularFileError``, ``FileTooLargeError``, ``LinkOutsideError``, ``IsADirectoryError`` or the OS's error."""
    if within is not None:
        refuse_outside(os.fspath(path), within)
    fd = os.open(os.fspath(path), os.O_RDONLY | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(f"not a file (a directory): {os.fspath(path)}")
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFileError(f"not a regular file (a FIFO, socket or device): {os.fspath(path)}")
        if info.st_size > max_bytes:
            raise FileTooLargeError(f"file too large: {info.st_size} bytes > {max_bytes}: {os.fspath(path)}")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            # read(n) allocates n bytes first: ask for the file's size (+1 to see a file that grew)
            data = handle.read(min(max_bytes, info.st_size) + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise FileTooLargeError(f"file too large: more than {max_bytes} bytes: {os.fspath(path)}")
    return data


def write_file_exclusive(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> None:
    """Write a local file through ``exclusive_file``: readers see the old file or the whole new one."""
    with exclusive_file(path) as handle:
        write(handle)


@contextlib.contextmanager
def exclusive_file(path: str | os.PathLike[str], *, text: bool = False) -> Iterator[IO[Any]]:
    """A local file written under a fresh random name created exclusively (``O_EXCL``: a link planted at a
    predictable temporary name is never followed), renamed over ``path`` when the block ends without an error
    (a link at ``path`` is replaced, never written through) and removed when it raises."""
    target = Path(path)
    fd, temporary = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=f"-{target.name}", dir=target.parent)
    try:
        with os.fdopen(fd, "w" if text else "wb", encoding="utf-8" if text else None) as handle:
            yield handle
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def real_subfolder(folder: str | os.PathLike[str], name: str) -> Path:
    """``folder/name`` as a real folder of ``folder``: a link or file found there is removed first, so
    that nothing written below it lands outside ``folder``."""
    path = Path(folder) / name
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    path.mkdir(exist_ok=True)
    return path


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, root path) for a local path or fsspec URL, without a trailing slash."""
    fs, root = fsspec.core.url_to_fs(url)
    return fs, root.rstrip("/") or "/"


def protocol(fs: fsspec.AbstractFileSystem) -> str:
    """The filesystem's main protocol name (``file``, ``s3``, ``memory`` ...)."""
    return fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]


def join(*parts: str) -> str:
    return posixpath.join(*parts)


def url_join(url: str, *parts: str) -> str:
    """Join onto a URL or local path keeping its protocol, for zarr and fsspec alike."""
    return "/".join([url.rstrip("/"), *parts])


def link_outside(path: str, root: str) -> str | None:
    """Where ``path`` really leads when a symbolic link at any level between ``root`` and it leads out of the
    local folder ``root``, else None: a store's readers refuse such paths instead of following data outside
    the store."""
    target, folder = os.path.realpath(path), os.path.realpath(root)
    return None if target == folder or target.startswith(folder.rstrip(os.sep) + os.sep) else target


def refuse_outside(path: str, root: str) -> None:
    """``LinkOutsideError`` when ``path`` leads out of the local folder ``root`` (``link_outside``)."""
    outside = link_outside(path, root)
    if outside:
        relative = os.path.relpath(path, root)
        raise LinkOutsideError(f"{relative} leads through a symbolic link to {outside}, outside {root}: not followed")


def links_out(root: str) -> list[tuple[str, str]]:
    """(path relative to ``root``, where it leads) for every symbolic link below the local folder ``root``
    that leads outside it, at any depth; links are listed, never followed."""
    found = []
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            path = os.path.join(folder, name)
            if os.path.islink(path) and (outside := link_outside(path, root)):
                found.append((os.path.relpath(path, root), outside))
    return found


def read_json(fs: fsspec.AbstractFileSystem, path: str, *, within: str | None = None) -> dict[str, Any]:
    with open_regular(fs, path, within=within) as handle:
        loaded = json.loads(handle.read().decode())
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} holds a JSON {type(loaded).__name__}, not an object")
    return loaded


def write_bytes_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write to a temporary name in the same folder, then rename: readers never see half a file.

    On an object store a PUT is atomic by itself; the rename is then a copy, also whole.
    """
    folder, name = posixpath.split(path)
    # "_"-prefixed: pyarrow, pandas, Spark and Hive skip such files when they read a folder of Parquet
    tmp = posixpath.join(folder, f"{TMP_PREFIX}{uuid.uuid4().hex}-{name}")
    fs.pipe_file(tmp, data)
    fs.mv(tmp, path)


def write_json_atomic(fs: fsspec.AbstractFileSystem, path: str, payload: dict[str, Any]) -> None:
    write_bytes_atomic(fs, path, json.dumps(payload, indent=2, sort_keys=True, default=str).encode())


def exchange_folders(a: str, b: str) -> bool:
    """Swap two local folders in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``): every reader sees
    one or the other, whole. False where the platform or filesystem cannot (the caller does it in steps)."""
    import ctypes
    import errno

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_cwd, exchange = -100, 2
    if renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EXDEV):  # not on this system or filesystem
        return False
    raise OSError(code, os.strerror(code), a)


def strict_json(value: Any) -> Any:
    """A copy that ``json.dumps(allow_nan=False)`` accepts: NaN / inf -> None, numpy scalars -> Python.

    Metrics are NaN when undefined (e.g. AUROC of one class); plain ``json.dumps`` would write the
    non-standard token ``NaN``, which strict parsers (browsers, jq, Java) reject.
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value
