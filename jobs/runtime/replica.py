"""An actor's model replica, loaded from the weights the driver sent and checked against its fingerprint."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import torch

from densecam_core.model.checkpoint import load_densenet, model_fingerprint, state_dict_bytes


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


def load_run_model(checkpoint: str | None, run: Any) -> torch.nn.Module:
    """The checkpoint a job runs on a stored run, refused unless it is the run's own model (by fingerprint)."""
    model = load_densenet(checkpoint)
    fingerprint = model_fingerprint(model)
    if fingerprint != run.fingerprint:
        raise ValueError(
            f"the checkpoint {checkpoint or '<random init>'} has model fingerprint {fingerprint[:16]}, "
            f"but run {run.run_id} was explained with {run.fingerprint[:16]} ({run.record.checkpoint}): "
            "pass the run's checkpoint"
        )
    return model


def model_actors(
    ray: Any, worker_class: type, name: str, model: torch.nn.Module, resources: Any, *args: Any, **kwargs: Any
) -> Callable[[], Any]:
    """``make_actor`` for a job whose actors hold a replica of ``model``: the weights put once, each actor on its
    device with its threads, checking the fingerprint of what it received (``load_replica``)."""
    from jobs.runtime.dispatch import make_actor_class

    actor_class = make_actor_class(ray, worker_class, name)
    weights_ref = ray.put(state_dict_bytes(model))
    fingerprint = model_fingerprint(model)

    def make_actor() -> Any:
        return actor_class.options(num_cpus=resources.cpus_per_worker, num_gpus=resources.gpus_per_worker).remote(
            weights_ref,
            *args,
            device="cuda" if resources.gpus_per_worker > 0 else "cpu",
            threads=resources.threads,
            expected_fingerprint=fingerprint,
            **kwargs,
        )

    return make_actor
