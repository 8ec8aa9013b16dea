"""The plumbing around a recorded pass (densecam_core.cam.cuda_graphs), on the CPU.

A CUDA graph cannot be recorded without a GPU; here a stand-in "records" by running the pass and
"replays" by running it again and writing the results into the outputs it first returned, as a
graph replay overwrites its fixed outputs. What is tested is everything around the recording: the
batch copied into the fixed input (grey broadcast), outputs copied out so that the next replay does
not change an earlier result, one recording per shape, the shape limit, and the overflow fallback.
The recording itself is compared with the eager pass on a GPU by benchmarks/gpu_memory.py --graphs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch

from densecam_core import Explainer
from densecam_core.cam.cuda_graphs import GraphCaptureWarning
from densecam_core.cam.explainer import Explanation


def _tensors(outputs: tuple[Explanation, torch.Tensor | None]) -> Iterator[torch.Tensor]:
    explanation, finite = outputs
    yield from (explanation.logits, explanation.cam)
    for per_block in explanation.maps.values():
        yield from per_block.values()
    if explanation.targets is not None:
        yield explanation.targets
    if finite is not None:
        yield finite


class RerunCapture:
    """Records by running the pass; replays by running it again into the first outputs."""

    def __init__(self) -> None:
        self.recorded = 0

    def __call__(self, thunk: Callable[[], tuple]) -> tuple[tuple, Callable[[], None]]:
        self.recorded += 1
        outputs = thunk()

        def replay() -> None:
            for kept, fresh in zip(_tensors(outputs), _tensors(thunk()), strict=True):
                kept.copy_(fresh)

        return outputs, replay


def _assert_same(got: Explanation, want: Explanation) -> None:
    torch.testing.assert_close(got.logits, want.logits, rtol=0, atol=0)
    torch.testing.assert_close(got.cam, want.cam, rtol=0, atol=0)
    assert got.maps.keys() == want.maps.keys()
    for method, per_block in want.maps.items():
        for block, values in per_block.items():
            torch.testing.assert_close(got.maps[method][block], values, rtol=0, atol=0)
    assert got.targets is not None and want.targets is not None
    assert torch.equal(got.targets, want.targets)


def _pixels(seed: int, batch: int = 2, channels: int = 3, size: int = 64) -> torch.Tensor:
    return torch.randint(
        0, 256, (batch, channels, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


@pytest.fixture()
def pair(model: torch.nn.Module) -> tuple[Explainer, Explainer, RerunCapture]:
    """An eager Explainer and one replaying recorded passes, on the same weights."""
    methods = ["gradcam", "hirescam", "layercam"]
    eager = Explainer(model, methods=methods, targets=[0])
    replaying = Explainer(model, methods=methods, targets=[0])
    capture = RerunCapture()
    replaying.graph_capture = capture
    return eager, replaying, capture


def test_replayed_results_equal_the_eager_pass_and_survive_the_next_replay(pair):
    eager, replaying, capture = pair
    first, second, grey = _pixels(1), _pixels(2), _pixels(3, channels=1)
    got_first = replaying(first)
    got_second = replaying(second)
    got_grey = replaying(grey)  # broadcast into the fixed three-channel input
    assert capture.recorded == 1  # one shape, one recording
    _assert_same(got_first, eager(first))  # not overwritten by the two replays after it
    _assert_same(got_second, eager(second))
    _assert_same(got_grey, eager(grey))
    assert not torch.equal(got_first.cam, got_second.cam)  # the input really changed between replays


def test_one_recording_per_shape_up_to_the_limit_then_eager(pair):
    eager, replaying, capture = pair
    replaying.MAX_GRAPHS = 2
    for batch in (2, 3, 2, 3):
        replaying(_pixels(batch, batch=batch))
    assert capture.recorded == 2
    beyond = _pixels(9, batch=4)
    _assert_same(replaying(beyond), eager(beyond))  # a third shape runs eagerly
    assert capture.recorded == 2
    floats = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    _assert_same(replaying(floats), eager(floats))  # float input is never recorded
    assert capture.recorded == 2


def test_an_overflowing_scaled_gradient_is_redone_unscaled(pair):
    """As in the eager pass: a scaled backward seed whose gradients are not finite gives the unscaled result."""
    eager, replaying, _ = pair
    replaying.grad_scale = float("inf")
    pixels = _pixels(5)
    _assert_same(replaying(pixels), eager(pixels))


def test_a_scaled_gradient_that_stays_finite_is_divided_out(pair):
    eager, replaying, _ = pair
    replaying.grad_scale = 1024.0  # fp16's scale: a power of two, exact
    pixels = _pixels(6)
    got, want = replaying(pixels), eager(pixels)
    for method, per_block in want.maps.items():
        for block, values in per_block.items():
            torch.testing.assert_close(
                got.maps[method][block], values, rtol=1e-5, atol=1e-5 * float(values.abs().max())
            )


def test_cuda_graphs_need_a_cuda_model(model):
    with pytest.raises(ValueError, match="CUDA"):
        Explainer(model, cuda_graphs=True)


def test_a_pass_that_cannot_be_recorded_runs_eagerly_with_a_warning(pair):
    eager, replaying, _ = pair

    def refusing(thunk):
        raise RuntimeError("operation not permitted when stream is capturing")

    replaying.graph_capture = refusing
    pixels = _pixels(7)
    with pytest.warns(GraphCaptureWarning, match="op by op"):
        got = replaying(pixels)
    _assert_same(got, eager(pixels))
    assert replaying.graph_capture is None  # not tried again for every batch
    _assert_same(replaying(_pixels(8)), eager(_pixels(8)))


def test_a_cpu_worker_ignores_the_jobs_cuda_graphs_setting(model):
    from jobs.explain.settings import ExplainSettings
    from jobs.explain.worker import ExplainWorker

    settings = ExplainSettings(methods=("gradcam",), size=64, cuda_graphs=True)
    worker = ExplainWorker(model.state_dict(), settings, warm_up=False)
    assert worker.explainer.graph_capture is None
