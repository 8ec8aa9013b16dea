"""One job per run at a time: ``lock.json`` in the run folder, with a heartbeat.

Why: two jobs writing the same run would race on plan segments and shards; a dead job's lock must
not block the next one forever.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from datetime import datetime
from typing import Any

from densecam_core import fileio
from densecam_core.store import layout


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), or None where it cannot be read.

    Why: a PID alone does not name a process. After a container restart our own PID, or another
    live process's, can equal a dead holder's; the start time tells them apart.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return fields[19].decode()  # field 22 of stat(5); fields after the command name start at field 3
    except (OSError, IndexError):
        return None


def _holder() -> dict[str, Any]:
    now = time.time()
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_start": _process_start(os.getpid()),
        "token": uuid.uuid4().hex,
        "started": now,
        "heartbeat": now,
    }


def _alive(holder: dict[str, Any], stale_after: float) -> bool:
    """A holder is alive while its heartbeat is fresh and, on this host, its very process still runs."""
    if time.time() - float(holder.get("heartbeat", 0)) >= stale_after:
        return False  # dead, or hung: either way it no longer writes
    if holder.get("host") != socket.gethostname():
        return True
    pid = int(holder.get("pid", -1))
    recorded = holder.get("pid_start")
    current = _process_start(pid)
    if recorded is not None and current is not None:
        return bool(current == recorded)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe_holder(holder: dict[str, Any]) -> str:
    started = datetime.fromtimestamp(holder.get("started", 0)).isoformat(timespec="seconds")
    return f"run is being written by another job (host {holder.get('host')}, pid {holder.get('pid')}, since {started})"


class RunLock:
    """``lock.json`` in the run folder: a second job refuses; a dead holder's lock is taken over.

    Taking over is atomic on local disks: the stale lock is renamed to a unique name (one taker
    wins the rename; the others find it gone) and then created exclusively. On object stores, which
    have no atomic rename or exclusive create through fsspec, the check is best effort
    (docs/FORMAT.md says what holds there).
    """

    def __init__(self, run_url: str, stale_after: float = 120.0) -> None:
        self.fs, root = fileio.filesystem(run_url)
        self.path = fileio.join(root, layout.LOCK_FILE)
        self.stale_after = stale_after
        self.holder = _holder()
        self.local = fileio.protocol(self.fs) in ("file", "local")

    def acquire(self) -> None:
        self.fs.makedirs(self.path.rsplit("/", 1)[0], exist_ok=True)
        for _ in range(50):
            if self._create_exclusive():
                return
            try:
                current = fileio.read_json(self.fs, self.path)
            except FileNotFoundError:
                continue  # released or taken over meanwhile: try again
            except ValueError:
                current = {}  # half-written by a holder that died while writing it: stale
            if current and _alive(current, self.stale_after):
                raise layout.StoreError(
                    f"{describe_holder(current)}; wait for it, or delete {self.path} if that job is gone"
                )
            self._remove_stale()
        raise layout.StoreError(f"could not take the run lock {self.path}: other jobs keep taking it; try again")

    def live_holder(self) -> dict[str, Any] | None:
        """Who holds the lock now, if a live job does (nothing is taken): for messages that must say why
        a run looks empty or unfinished."""
        try:
            current = fileio.read_json(self.fs, self.path)
        except (FileNotFoundError, ValueError):
            return None
        return current if current and _alive(current, self.stale_after) else None

    def _remove_stale(self) -> None:
        """Remove the lock if it is still stale, one taker at a time.

        A taker that judged the lock stale must not remove a lock that another taker created since:
        removal happens under an exclusive ``.takeover`` guard, after judging the lock again. The
        exclusive create that follows decides which taker holds the run.
        """
        if not self.local:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(self.path)
            return
        guard = f"{self.path}.takeover"
        try:
            os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):  # a taker that died mid-takeover leaves an old guard
                if time.time() - os.path.getmtime(guard) > self.stale_after:
                    os.remove(guard)
            time.sleep(0.01)
            return
        try:
            try:
                current = fileio.read_json(self.fs, self.path)
            except FileNotFoundError:
                return
            except ValueError:
                current = {}
            if not current or not _alive(current, self.stale_after):
                os.remove(self.path)
        finally:
            os.remove(guard)

    def _create_exclusive(self) -> bool:
        payload = json.dumps(self.holder).encode()
        if self.local:
            # written whole under a private name, then hard-linked into place: link() fails if the lock
            # exists, so creation is exclusive and no reader ever sees a half-written lock
            tmp = f"{self.path}.new-{self.holder['token']}"
            with open(tmp, "wb") as out:
                out.write(payload)
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                return False
            finally:
                os.remove(tmp)
            return True
        if self.fs.exists(self.path):
            return False
        self.fs.pipe_file(self.path, payload)
        return True

    def owned(self) -> bool:
        try:
            return bool(fileio.read_json(self.fs, self.path).get("token") == self.holder["token"])
        except (FileNotFoundError, ValueError):
            return False

    def heartbeat(self) -> None:
        """Refresh the lock, after checking it is still ours (another job took it over if we stalled)."""
        if not self.owned():
            raise layout.StoreError(
                f"lost the run lock {self.path}: this job stalled past {self.stale_after:g} s and another took the "
                "run over; stop this job (the other one continues the run)"
            )
        self.holder["heartbeat"] = time.time()
        fileio.write_json_atomic(self.fs, self.path, self.holder)

    def release(self) -> None:
        if self.owned():
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(self.path)
