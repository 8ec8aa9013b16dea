"""cluster.yaml is a valid Ray cluster-launcher config (Ray's own JSON schema)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")
ray = pytest.importorskip("ray")


def test_cluster_yaml_matches_rays_schema():
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "cluster.yaml").read_text())
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    assert config["head_node_type"] in config["available_node_types"]
    assert any("pip install" in c and "densecam" in c for c in config["setup_commands"])
    broken = dict(config, max_workers="many")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
