"""Arrays handed to another process through one shared-memory block instead of a pickle.

Why: a GPU actor hands every shard (its maps, and the decoded inputs for the input cache) to its
writer process. Pickled, those megabytes are copied under the actor's GIL, which the thread
launching kernels needs; in a shared block the actor writes each value once, where the writer reads
it, and the pipe carries only names, shapes and offsets.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np

ALIGN = 64  # each array starts on a cache line
SHM_DIR = "/dev/shm"  # where Linux keeps POSIX shared memory (a tmpfs)
BLOCK_NAME = re.compile(r"^(?:sem\.)?densecam-(\d+)-[0-9a-z_]+$")
"""Blocks are named after the process that owns them, so blocks of a process that was killed (a GPU
actor whose driver died: SIGKILL leaves no chance to unlink) can be found and swept by the next one."""


def _new_name() -> str:
    return f"densecam-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def sweep_dead_blocks(folder: str = SHM_DIR) -> list[str]:
    """Unlink the blocks, and the process pools' semaphores (``sem.densecam-<pid>-…``, spawned.py), whose
    owning process is gone; returns their names. Called when an actor starts, so what a killed job left
    on a node is freed by the next job there."""
    if not os.path.isdir(folder):
        return []
    swept = []
    for name in os.listdir(folder):
        match = BLOCK_NAME.match(name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError, PermissionError):
                os.unlink(os.path.join(folder, name))
                swept.append(name)
    return swept


def room_for(nbytes: int, spare: int = 16 << 20) -> bool:
    """Whether ``nbytes`` fit in shared memory twice over, plus ``spare``: containers often cap /dev/shm
    (64 MiB by default in Docker), and writing past the cap kills the process (SIGBUS) instead of raising."""
    if not os.path.isdir(SHM_DIR):
        return True  # no tmpfs: the platform's shared memory has no such cap
    stats = os.statvfs(SHM_DIR)
    return stats.f_bavail * stats.f_frsize >= 2 * nbytes + spare


@dataclass(frozen=True)
class BlockHandle:
    """What the other process needs to find the arrays: the block's name and each array's place."""

    name: str
    layout: tuple[tuple[str, tuple[int, ...], str, int], ...]  # key, shape, dtype, byte offset


Specs = Mapping[str, tuple[tuple[int, ...], "np.dtype | str | type"]]


def block_size(specs: Specs) -> int:
    """Bytes a block of ``specs`` takes, each array rounded up to whole cache lines."""
    return sum(-(-math.prod(shape) * np.dtype(kind).itemsize // ALIGN) * ALIGN for shape, kind in specs.values())


class SharedBlock:
    """Owner side: one block holding an array per key (uninitialised); ``close`` frees it.

    The block's memory is reserved when it is made: where shared memory is full this raises OSError
    (ENOSPC) here, instead of a SIGBUS killing the process when a page is first written.
    """

    def __init__(self, specs: Specs) -> None:
        layout, offset = [], 0
        for key, (shape, dtype) in specs.items():
            kind = np.dtype(dtype)
            layout.append((key, tuple(int(n) for n in shape), kind.str, offset))
            offset += block_size({key: (shape, dtype)})
        self.memory = shared_memory.SharedMemory(name=_new_name(), create=True, size=max(offset, ALIGN))
        try:
            _reserve(self.memory)
        except OSError:
            self.memory.close()
            self.memory.unlink()
            raise
        self.handle = BlockHandle(self.memory.name, tuple(layout))
        self.arrays = _views(self.memory, self.handle)

    def close(self) -> None:
        """Unlink the block: its name is gone at once, its memory once no array of it is left."""
        self.arrays = {}
        with contextlib.suppress(FileNotFoundError):
            self.memory.unlink()

    def __enter__(self) -> SharedBlock:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _reserve(memory: shared_memory.SharedMemory) -> None:
    """Allocate the block's pages now (tmpfs allocates them on first write otherwise)."""
    descriptor = getattr(memory, "_fd", -1)  # CPython's POSIX SharedMemory keeps its descriptor here
    if descriptor >= 0 and hasattr(os, "posix_fallocate"):
        os.posix_fallocate(descriptor, 0, memory.size)


def shared_or_none(specs: Specs) -> SharedBlock | None:
    """A block for ``specs``, or None where shared memory has no room for it (the caller pickles instead)."""
    if not room_for(block_size(specs)):
        return None
    try:
        return SharedBlock(specs)
    except OSError:  # full since room_for looked: other blocks took the room meanwhile
        return None


@contextlib.contextmanager
def attached(handle: BlockHandle) -> Iterator[dict[str, np.ndarray]]:
    """The other side: the block's arrays, valid inside the ``with`` (copy what must outlive it)."""
    arrays = _views(shared_memory.SharedMemory(name=handle.name), handle)
    try:
        yield arrays
    finally:
        arrays.clear()  # the mapping ends with the last array the caller kept


class _Region:
    """One array's place in a block, holding the block: an array made from it keeps the mapping alive.

    Why not ``np.ndarray(buffer=memory.buf)``: numpy keeps no buffer export, so ``SharedMemory.close``
    (also run when the object is collected) would unmap memory that arrays still point to.
    """

    def __init__(self, memory: shared_memory.SharedMemory, base: int, shape: tuple[int, ...], dtype: str, offset: int):
        self.memory = memory
        self.__array_interface__ = {"data": (base + offset, False), "shape": shape, "typestr": dtype, "version": 3}


def _views(memory: shared_memory.SharedMemory, handle: BlockHandle) -> dict[str, np.ndarray]:
    assert memory.buf is not None, "a block just created or attached is mapped"
    base = np.frombuffer(memory.buf, dtype=np.uint8).ctypes.data
    return {key: np.asarray(_Region(memory, base, shape, dtype, offset)) for key, shape, dtype, offset in handle.layout}
