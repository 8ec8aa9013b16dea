"""SpawnedPool: a GPU actor's process pools never wait without a deadline, and a stuck child is replaced."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.processes import ended

from densecam_core.parallel.spawned import SpawnedPool

pytestmark = pytest.mark.slow  # every test spawns processes
REPO = Path(__file__).resolve().parents[2]


def stuck_child(pool) -> list:
    """Start a task that never ends in ``pool`` (a read from a dead mount) and return its processes."""
    pool.submit(time.sleep, 600)
    deadline = time.monotonic() + 60
    while not pool._processes and time.monotonic() < deadline:
        time.sleep(0.05)
    return list(pool._processes.values())


def test_close_kills_a_child_stuck_past_the_grace_period():
    pool = SpawnedPool(1, "a decode process")
    processes = stuck_child(pool.get())
    time.sleep(0.5)  # the child is inside the task, not waiting for it
    started = time.monotonic()
    pool.close(grace=0.5)
    assert time.monotonic() - started < 5, "close waited on the stuck child"
    assert ended(processes, 10)


def test_a_retired_pool_serves_its_shard_and_stops_once_that_shard_is_done():
    pool = SpawnedPool(1, "a decode process")
    try:
        with pool.lease() as first:
            processes = stuck_child(first)
            pool.retire()  # the shard saw a read past its deadline: its process may be stuck
            assert first.submit(abs, -2) is not None, "the shard can still submit to the pool it holds"
            with pool.lease() as second:  # another shard, meanwhile: new processes
                assert second is not first
                assert second.submit(abs, -3).result(timeout=60) == 3
            assert not ended(processes, 0.5), "stopped while a shard still held it"
        assert ended(processes, 10), "the stuck child outlived the last lease of its retired pool"
        with pool.lease() as third:
            assert third is pool.pool and third is not first
    finally:
        pool.close()


def test_retiring_an_unused_pool_stops_it_at_once():
    pool = SpawnedPool(1, "the writer process")
    processes = stuck_child(pool.get())
    pool.retire()
    assert pool.pool is None and ended(processes, 10)
    assert pool.run(abs, -4) == 4  # the next use starts new processes
    pool.close()


def _script_runs(tmp_path, pool_code: str) -> int:
    """How many processes ran a main script that makes a one-process pool and runs a task in it."""
    tmp_path.mkdir()
    marker = tmp_path / "ran.txt"
    script = tmp_path / "main_script.py"
    script.write_text(
        "import os\n"
        f"with open({str(marker)!r}, 'a') as f:\n"
        "    f.write(f'{os.getpid()}\\n')\n"
        "if __name__ == '__main__':\n"
        f"    {pool_code}\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, str(script)], env=env, check=True, timeout=120)
    return len(marker.read_text().split())


def test_children_do_not_rerun_the_parents_main_script(tmp_path):
    """In a Ray actor the main script is Ray's worker: children re-running it imported Ray."""
    plain = "import concurrent.futures as c, multiprocessing as m; c.ProcessPoolExecutor(1, mp_context=m.get_context('spawn')).submit(os.getpid).result()"
    ours = "from densecam_core.parallel.spawned import SpawnedPool; p = SpawnedPool(1, 'a child'); p.run(os.getpid); p.close()"
    assert _script_runs(tmp_path / "plain", plain) == 2  # the control: plain spawn runs the script in the child too
    assert _script_runs(tmp_path / "ours", ours) == 1
