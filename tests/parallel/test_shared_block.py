"""SharedBlock: arrays another process reads in place; the block is gone once its owner closes it."""

from __future__ import annotations

import numpy as np
import pytest

from densecam_core.parallel.shared_block import ALIGN, SharedBlock, attached


def test_arrays_written_by_the_owner_are_read_in_place_and_freed_on_close():
    specs = {"maps": ((3, 1, 5, 7), np.float32), "targets": ((3, 2), np.int32), "pixels": ((1, 9, 9), np.uint8)}
    with SharedBlock(specs) as block:
        for i, (name, values) in enumerate(block.arrays.items()):
            values[...] = np.arange(values.size).reshape(values.shape) * (i + 1)
            assert values.ctypes.data % ALIGN == 0, f"{name} starts on a cache line"
        with attached(block.handle) as arrays:
            assert {k: (v.shape, v.dtype) for k, v in arrays.items()} == {
                k: (shape, np.dtype(kind)) for k, (shape, kind) in specs.items()
            }
            for i, values in enumerate(arrays.values()):
                np.testing.assert_array_equal(values, np.arange(values.size).reshape(values.shape) * (i + 1))
            arrays["maps"][0, 0, 0, 0] = -1.0  # the same memory, not a copy
        assert block.arrays["maps"][0, 0, 0, 0] == -1.0
        name = block.handle
    with pytest.raises(FileNotFoundError), attached(name):
        pass


def test_an_empty_block_and_a_view_kept_past_close_are_harmless():
    with SharedBlock({}) as block:
        assert block.arrays == {}
    kept = SharedBlock({"x": ((4,), np.float64)})
    view = kept.arrays["x"]
    view[:] = 2.0
    kept.close()  # unlinked; the mapping lives on with the view
    assert view.sum() == 8.0


def test_no_room_in_shared_memory_gives_none_and_leaves_nothing(monkeypatch):
    import errno
    import os

    import densecam_core.parallel.shared_block as shared_block

    def full(descriptor, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    before = {n for n in os.listdir("/dev/shm") if n.startswith("psm_")}
    monkeypatch.setattr(os, "posix_fallocate", full)  # the pages cannot be reserved: /dev/shm is full
    with pytest.raises(OSError):
        SharedBlock({"x": ((1024,), np.uint8)})
    assert shared_block.shared_or_none({"x": ((1024,), np.uint8)}) is None
    monkeypatch.undo()
    monkeypatch.setattr(shared_block, "room_for", lambda nbytes: False)
    assert shared_block.shared_or_none({"x": ((1024,), np.uint8)}) is None
    assert {n for n in os.listdir("/dev/shm") if n.startswith("psm_")} == before
    monkeypatch.undo()
    block = shared_block.shared_or_none({"x": ((1024,), np.uint8)})
    assert block is not None
    block.close()


def test_room_for_reads_the_free_space_of_dev_shm():
    from densecam_core.parallel.shared_block import room_for

    assert room_for(1024)
    assert not room_for(1 << 62)  # more than any machine's shared memory


def test_blocks_of_a_killed_process_are_swept_and_live_ones_kept(tmp_path):
    """SIGKILL leaves a process no chance to unlink its blocks (a GPU actor whose driver died); they are
    named after their owner, so the next actor on the node unlinks those whose owner is gone."""
    import os
    import signal
    import subprocess
    import sys

    from densecam_core.parallel.shared_block import SHM_DIR, SharedBlock, sweep_dead_blocks

    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from densecam_core.parallel.shared_block import SharedBlock; "
            "b = SharedBlock({'x': ((1024,), 'uint8')}); print(b.handle.name, flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its resource tracker too, so both die together as under Ray
    )
    name = child.stdout.readline().strip()
    mine = SharedBlock({"x": ((16,), "uint8")})
    try:
        assert os.path.exists(os.path.join(SHM_DIR, name))
        assert name not in sweep_dead_blocks(), "a live owner's block is kept"
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        assert os.path.exists(os.path.join(SHM_DIR, name)), "SIGKILL leaves the block behind"
        assert name in sweep_dead_blocks()
        assert not os.path.exists(os.path.join(SHM_DIR, name))
        assert os.path.exists(os.path.join(SHM_DIR, mine.handle.name))
    finally:
        mine.close()
        child.kill()
        child.wait(timeout=30)


def test_the_semaphores_of_a_killed_actors_process_pool_are_swept():
    """A process pool's semaphores (named ones, under spawn) outlive a SIGKILLed owner; named after it,
    they are unlinked by the next sweep like its blocks."""
    import os
    import signal
    import subprocess
    import sys

    from densecam_core.parallel.shared_block import SHM_DIR, sweep_dead_blocks

    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, time; from densecam_core.parallel.spawned import SpawnedPool; p = SpawnedPool(1, 'x'); "
            "p.get().submit(os.getpid).result(); print(os.getpid(), flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        pid = child.stdout.readline().strip()
        mine = [n for n in os.listdir(SHM_DIR) if n.startswith(f"sem.densecam-{pid}-")]
        assert mine, "the pool's semaphores are named after their owner"
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        assert all(os.path.exists(os.path.join(SHM_DIR, n)) for n in mine), "SIGKILL leaves them behind"
        assert set(mine) <= set(sweep_dead_blocks())
        assert not any(os.path.exists(os.path.join(SHM_DIR, n)) for n in mine)
    finally:
        child.kill()
        child.wait(timeout=30)
