"""One job per run at a time: ``lock.json`` in the run folder, with a heartbeat.

Why: two jobs writing the same run would race on plan segments and shards; a dead job's lock must
not block the next one forever.
"""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import datetime
from typing import Any

from densecam_core import fileio
from densecam_core.store import format as fmt


def _holder() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(), "heartbeat": time.time()}


def _alive(holder: dict[str, Any], stale_after: float) -> bool:
    if holder.get("host") == socket.gethostname():
        try:
            os.kill(int(holder["pid"]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return time.time() - float(holder.get("heartbeat", 0)) < stale_after


class RunLock:
    """``lock.json`` in the run folder: a second job refuses; a dead holder's lock is taken over.

    Exclusive creation is atomic on local disks; on object stores the check is best effort.
    """

    def __init__(self, run_url: str, stale_after: float = 120.0) -> None:
        self.fs, root = fileio.filesystem(run_url)
        self.path = fileio.join(root, fmt.LOCK_FILE)
        self.stale_after = stale_after
        self.holder = _holder()

    def acquire(self) -> None:
        self.fs.makedirs(self.path.rsplit("/", 1)[0], exist_ok=True)
        for _ in range(2):
            if self._create_exclusive():
                return
            try:
                current = fileio.read_json(self.fs, self.path)
            except (FileNotFoundError, ValueError):
                continue
            if _alive(current, self.stale_after):
                raise fmt.StoreError(
                    f"run is being written by another job (host {current.get('host')}, pid {current.get('pid')}, "
                    f"since {datetime.fromtimestamp(current.get('started', 0)).isoformat(timespec='seconds')}); "
                    f"wait for it, or delete {self.path} if that job is gone"
                )
            self.fs.rm(self.path)  # the holder died: take over
        raise fmt.StoreError(f"could not take the run lock {self.path}")

    def _create_exclusive(self) -> bool:
        payload = json.dumps(self.holder).encode()
        if fileio.protocol(self.fs) in ("file", "local"):
            try:
                handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return False
            with os.fdopen(handle, "wb") as out:
                out.write(payload)
            return True
        if self.fs.exists(self.path):
            return False
        self.fs.pipe_file(self.path, payload)
        return True

    def heartbeat(self) -> None:
        self.holder["heartbeat"] = time.time()
        fileio.write_json_atomic(self.fs, self.path, self.holder)

    def release(self) -> None:
        try:
            if fileio.read_json(self.fs, self.path).get("pid") == self.holder["pid"]:
                self.fs.rm(self.path)
        except (FileNotFoundError, ValueError):
            pass
