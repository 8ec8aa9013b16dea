"""What the job benchmarks compare against, written once: the generated tree, and the in-process
Explainer on the same images decoded beforehand (fed as the job feeds it: uint8, grey batches kept
one channel, pinned on a GPU, every result copied back to the host)."""

from __future__ import annotations

import argparse
import os
import time

import pandas as pd
import torch

from densecam_core import Explainer, generate_mura, read_manifest
from densecam_core.data.loader import BatchLoader


def add_tree_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rgb-fraction", type=float, default=0.2, help="share of RGB PNGs (the generator's default; MURA's are grey)"
    )


def generated_manifest(work: str, images: int, rgb_fraction: float) -> pd.DataFrame:
    """A generated MURA-shaped tree under ``work``/tree, and its manifest."""
    generate_mura(os.path.join(work, "tree"), images=images, seed=0, rgb_fraction=rgb_fraction)
    return read_manifest(os.path.join(work, "tree"))


class InProcessExplainer:
    """The baseline: decoded once (untimed, with one warm-up pass); ``rate()`` times a pass over them."""

    def __init__(
        self,
        model: torch.nn.Module,
        paths: list[str],
        *,
        size: int,
        batch: int,
        precision: str,
        cuda_graphs: bool = False,
    ) -> None:
        self.explainer = Explainer(model, precision=precision, cuda_graphs=cuda_graphs)
        loader = BatchLoader(paths, size=size, batch_size=batch, grey_batches=True)
        pin = self.explainer.device.type == "cuda"
        self.batches = [b.images.pin_memory() if pin else b.images for b in loader]
        self.count = len(paths)
        self.explainer(self.batches[0]).to("cpu")  # warm-up (and with CUDA graphs, the recording)

    def rate(self) -> float:
        """Images/s of one timed pass."""
        start = time.perf_counter()
        for images in self.batches:
            self.explainer(images).to("cpu")  # the job copies every result back to write it: so does the baseline
        return self.count / (time.perf_counter() - start)
