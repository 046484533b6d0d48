"""cluster.yaml passes the Ray cluster launcher's own schema validation (offline, no cloud credentials)."""

from __future__ import annotations

from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]


def test_cluster_yaml_is_a_valid_ray_cluster_config():
    raw = yaml.safe_load((REPO / "cluster.yaml").read_text())
    config = prepare_config(raw)
    validate_config(config)
    assert config["head_node_type"] in config["available_node_types"]
    assert any("mlflow server" in cmd for cmd in config["head_start_ray_commands"])
    assert (REPO / "docker" / "Dockerfile").is_file()
