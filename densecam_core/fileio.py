"""Files on a local disk or behind an fsspec URL: the helpers every layer shares.

Why one module: the store, training and the demo all write JSON that readers must never see half
written, and all join paths onto URLs without losing the protocol. No torch import.
"""

from __future__ import annotations

import json
import math
import os
import posixpath
import stat
import uuid
from typing import IO, Any

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem


class NotRegularFileError(OSError):
    """A store path that is a FIFO, socket or device: opening it for reading could block forever."""


TMP_PREFIX = "_tmp-"
"""Files being written (renamed into place when whole): every reader and compaction skips them."""


def open_regular(fs: fsspec.AbstractFileSystem, path: str) -> IO[bytes]:
    """``fs.open(path, "rb")``, except that on a local disk only regular files are opened: a FIFO named like
    a store file would otherwise block its reader forever (opened without blocking, then checked)."""
    if not isinstance(fs, LocalFileSystem):
        return fs.open(path, "rb")
    fd = os.open(fs._strip_protocol(path), os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFileError(f"not a regular file (a FIFO, socket or device): {path}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


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
    """Where ``path`` really leads when it is a symbolic link out of the local folder ``root``, else None:
    a store's readers refuse such links instead of following data outside the store."""
    if not os.path.islink(path):
        return None
    target, folder = os.path.realpath(path), os.path.realpath(root)
    return None if target == folder or target.startswith(folder.rstrip(os.sep) + os.sep) else target


def read_json(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, Any]:
    with open_regular(fs, path) as handle:
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
