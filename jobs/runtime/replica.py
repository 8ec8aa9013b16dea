"""An actor's model replica, loaded from the weights the driver sent and checked against its fingerprint."""

from __future__ import annotations

import io

import torch

from densecam_core.model.checkpoint import load_densenet, model_fingerprint


def load_replica(
    weights: bytes | dict, *, device: str, threads: int | None = None, expected_fingerprint: str | None = None
) -> torch.nn.Module:
    """The model both jobs' workers run: a fingerprint mismatch means the weights changed in transit."""
    if threads:
        torch.set_num_threads(threads)
    source = io.BytesIO(weights) if isinstance(weights, (bytes, bytearray)) else weights
    model = load_densenet(source, device=device)
    if expected_fingerprint and expected_fingerprint != model_fingerprint(model):
        raise RuntimeError("weights received by the worker differ from the driver's (fingerprint mismatch)")
    return model
