"""Actor sizing (jobs/runtime/resources.py) against fake clusters: no Ray needed."""

from __future__ import annotations

import pytest

from jobs.explain.config import ExplainConfig, batch_size_for
from jobs.runtime.resources import Resources, size_actors


def node(cpus: float, gpus: float = 0.0) -> dict[str, float]:
    return {"CPU": cpus, "GPU": gpus} if gpus else {"CPU": cpus}


def test_cpu_actors_fill_the_cluster_by_default():
    assert size_actors({"CPU": 8}, [node(8)], ExplainConfig()) == Resources(2, 4.0, 0.0, 4)
    assert size_actors({"CPU": 2}, [node(2)], ExplainConfig()) == Resources(1, 2.0, 0.0, 2)


def test_gpu_actor_takes_its_nodes_cpus_per_gpu_less_one_for_ray():
    # one node of 16 CPUs and 2 GPUs: (16 - 1) / 2 = 7.5 -> 7 CPUs (and decode threads) per GPU actor
    assert size_actors({"CPU": 16, "GPU": 2}, [node(16, 2)], ExplainConfig()) == Resources(
        2, 7.0, 1.0, 7, concurrency=3
    )
    # the smallest GPU node decides, so every actor fits wherever it lands
    nodes = [node(16, 1), node(96, 8), node(4)]
    assert size_actors({"CPU": 116, "GPU": 9}, nodes, ExplainConfig()) == Resources(9, 11.0, 1.0, 11, concurrency=3)
    assert size_actors({"CPU": 16, "GPU": 2}, [node(16, 2)], ExplainConfig(cpus_per_worker=3)).cpus_per_worker == 3


def test_explicit_workers_divide_the_cpus():
    """--workers 2 on a 2-CPU machine: one CPU each, instead of a refusal."""
    assert size_actors({"CPU": 2}, [node(2)], ExplainConfig(workers=2), can_grow=False) == Resources(2, 1.0, 0.0, 1)
    assert size_actors({"CPU": 2}, [node(2)], ExplainConfig(workers=3), can_grow=False) == Resources(3, 0.66, 0.0, 1)


def test_empty_autoscaling_cluster(capsys):
    """cluster.yaml's head has no CPUs and GPU workers start from zero."""
    with pytest.raises(ValueError, match="pass --workers N"):
        size_actors({"CPU": 0}, [node(0)], ExplainConfig())
    # explicit workers wait for the autoscaler instead of being refused; no GPU node yet: 4 CPUs each
    assert size_actors({"CPU": 0}, [node(0)], ExplainConfig(workers=3, gpus_per_worker=1)) == Resources(
        3, 4.0, 1.0, 4, concurrency=3
    )
    assert "Actors start as nodes join" in capsys.readouterr().err


def test_beyond_a_local_ray_is_refused_at_once():
    """The local Ray the job started itself has no autoscaler: waiting would be waiting forever."""
    with pytest.raises(ValueError, match="do not fit the local Ray.*0 GPUs and 2 CPUs"):
        size_actors({"CPU": 2}, [node(2)], ExplainConfig(workers=1, gpus_per_worker=1), can_grow=False)
    with pytest.raises(ValueError, match="lower --workers"):
        size_actors({"CPU": 2}, [node(2)], ExplainConfig(workers=3, cpus_per_worker=1), can_grow=False)


def test_batch_size_defaults_follow_the_actors_device():
    assert batch_size_for(ExplainConfig(), 0.0) == 8
    assert batch_size_for(ExplainConfig(), 1.0) is None  # each GPU actor measures what fits its device
    assert batch_size_for(ExplainConfig(batch_size=5), 1.0) == 5


def test_bad_settings_are_refused_by_validate():
    for bad, message in (
        (dict(input_cache="sometimes"), "--input-cache"),
        (dict(workers=0), "--workers"),
        (dict(actor_start_retries=-1), "--actor-start-retries"),
        (dict(cpus_per_worker=0), "--cpus-per-worker"),
    ):
        with pytest.raises(ValueError, match=message):
            ExplainConfig(**bad).validate()


def test_cuda_graphs_are_on_by_default_and_can_be_turned_off():
    """The job records GPU actors' passes as CUDA graphs unless told not to; a CPU actor ignores the setting."""
    from jobs.cli.explain import build_parser, config_from

    parser = build_parser()
    assert config_from(parser.parse_args([])).cuda_graphs is True
    assert config_from(parser.parse_args(["--no-cuda-graphs"])).cuda_graphs is False
