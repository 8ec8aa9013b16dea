"""The Explainer's pass replayed as a CUDA graph at a fixed batch shape.

Why: DenseNet169's forward and backward are about a thousand small kernels, each launched from
Python. In a GPU actor those launches compete for the interpreter lock with decoding, collation
and writing (docs/PERFORMANCE.md, "On a GPU"). A captured graph launches them all with one call.

The capture follows PyTorch's whole-network recipe: a few warm-up passes on a side stream, then one
pass (forward, ``autograd.grad``, the maps) recorded into a graph whose input and outputs are fixed
tensors. Each call copies its batch into the input, replays, and returns copies of the outputs (the
next replay overwrites them). How a pass is captured is a parameter (``Capture``), so the plumbing
around it is tested on the CPU with a stand-in that simply runs the pass again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import torch

T = TypeVar("T")

# A function that records a pass (a thunk) and returns its outputs and a replay that refreshes them in place.
Capture = Callable[[Callable[[], T]], tuple[T, Callable[[], None]]]


class GraphCaptureWarning(UserWarning):
    """A pass could not be recorded as a CUDA graph; the Explainer runs it op by op instead."""


WARM_UP_PASSES = 3  # cuDNN plans, the autograd engine's device threads and the allocator settle before capture


def cuda_capture(thunk: Callable[[], T]) -> tuple[T, Callable[[], None]]:
    """Warm up on a side stream, then record one pass into a CUDA graph with a private memory pool."""
    current = torch.cuda.current_stream()
    side = torch.cuda.Stream()
    side.wait_stream(current)
    with torch.cuda.stream(side):
        for _ in range(WARM_UP_PASSES):
            thunk()
    current.wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = thunk()
    return outputs, graph.replay


class CapturedPass(Generic[T]):
    """One recorded pass for one input shape: pixels in, the pass's outputs out.

    ``run`` maps a (B, 3, H, W) uint8 device tensor to any nesting of tensors (the Explainer gives an
    ``Explanation`` and a finiteness flag). Grey (B, 1, H, W) batches are broadcast into the three
    channels on the device, as the eager path does.
    """

    def __init__(
        self,
        run: Callable[[torch.Tensor], T],
        shape: tuple[int, int, int],
        device: torch.device,
        capture: Capture[T],
    ) -> None:
        batch, height, width = shape
        self.pixels = torch.zeros((batch, 3, height, width), dtype=torch.uint8, device=device)
        self.outputs, self._replay = capture(lambda: run(self.pixels))

    def __call__(self, images: torch.Tensor, copy: Callable[[T], T]) -> T:
        """Replay on ``images`` (uint8, on the recording's device); ``copy`` detaches the results from
        the graph's fixed outputs."""
        self.pixels.copy_(images)  # broadcasts grey to 3 channels
        self._replay()
        return copy(self.outputs)
