"""Shared fixtures: small, non-degenerate DenseNets (random weights with BatchNorm statistics)."""

from __future__ import annotations

import copy
import gc
import os
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import torch

# torch and densecam are imported where they are used: the fast loop's coordinating process runs no test


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """The fast loop (``-m "not slow"``) runs on one process per core, one module per process at a time:
    its tests compute on small tensors, mostly on one thread, so a second process uses the second core
    (measured in docs/PERFORMANCE.md). Slow tests start Ray clusters, subprocesses and servers that use
    every core already, so a selection with slow tests stays on one process; ``-n`` chooses otherwise."""
    if os.environ.get("PYTEST_XDIST_WORKER") or not config.pluginmanager.has_plugin("xdist"):
        return
    fast_loop = config.option.markexpr.strip() == "not slow"
    chosen = config.option.numprocesses is not None or config.option.dist != "no" or config.option.usepdb
    if fast_loop and not chosen and _cores() > 1:
        config.option.numprocesses = min(_cores(), 4)  # each worker imports torch and collects every module
        config.option.dist = "loadfile"


if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    import torch

    # one compute thread per process per core: two processes of two OpenMP threads on two cores ran the
    # fast loop nine times slower than one process
    torch.set_num_threads(max(1, _cores() // workers))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Spare the collector what imports and collection built: torch, pandas and the collected tests are
    hundreds of thousands of objects that a full collection would walk again and again, for nothing (they
    live as long as the session); collect the young generation less often for the same reason."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


@pytest.fixture(scope="session")
def base_model() -> torch.nn.Module:
    from densecam_core import load_densenet169
    from densecam_core.testing import randomise_batchnorm

    return randomise_batchnorm(load_densenet169(seed=1), seed=2)


def _shape_of(model: torch.nn.Module) -> list:
    """Everything about a model but its values: modules, modes, hooks, parameters' and buffers' kinds, grads."""
    modules = [
        (name, type(m), m.training, len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
        for name, m in model.named_modules()
    ]
    params = [(n, p.shape, p.dtype, p.device, p.requires_grad, p.grad is None) for n, p in model.named_parameters()]
    buffers = [(n, b.shape, b.dtype, b.device) for n, b in model.named_buffers()]
    return [modules, params, buffers]


class _Copies:
    """Fresh copies of the base model for each test. A deepcopy of DenseNet169 costs a quarter of a second;
    a copy a test handed back with nothing but its values changed is restored in place instead."""

    def __init__(self, base: torch.nn.Module) -> None:
        self.base, self.spare, self.shape = base, None, _shape_of(base)

    def take(self) -> torch.nn.Module:
        spare, self.spare = self.spare, None
        if spare is None or _shape_of(spare) != self.shape:
            return copy.deepcopy(self.base)
        import torch

        with torch.no_grad():
            for mine, theirs in zip(spare.state_dict().values(), self.base.state_dict().values()):
                mine.copy_(theirs)
        return spare


@pytest.fixture(scope="session")
def _copies(base_model: torch.nn.Module) -> _Copies:
    return _Copies(base_model)


@pytest.fixture()
def model(_copies: _Copies) -> torch.nn.Module:
    """A copy of ``base_model`` that the test may change as it likes."""
    fresh = _copies.take()
    yield fresh
    _copies.spare = fresh


@pytest.fixture(scope="session")
def demo_result(tmp_path_factory) -> dict:
    """The demo pipeline at a tiny size (40 images of <= 96 px, 64 px input, 1 + 1 epochs, 4 images scored
    at K = 4: the scoring is half of the demo's time), run once."""
    from jobs.demo import run_demo
    from jobs.demo_config import DemoConfig

    config = DemoConfig(
        images=40,
        size=64,
        epochs=1,
        batch_size=4,
        min_side=48,
        max_side=96,
        overlays=2,
        sheet_images=4,
        evaluate_images=4,
        evaluate_steps=4,
        progress=False,
    )
    return run_demo(tmp_path_factory.mktemp("demo"), config)
