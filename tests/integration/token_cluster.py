"""The cluster topology on one machine, shared by the tests that need it: a real `ray start --head` (token
authentication on, as Ray 2.60 sets it up for a head that has a token) and a real `mlflow server` with proxied
artifacts listening on every interface, as cluster.yaml runs them. Plus the helpers the process-starting tests
share (free ports, waiting for a log line or a healthy server)."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.procs import stop_group

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "sweeps" / "quickstart.yaml"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what: str, log: Path, timeout: float = 90.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} did not come up in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def ray_head_command(port: int, *extra: str) -> list[str]:
    """``ray start --head`` in the foreground on ``port``, without dashboard or usage stats, plus ``extra``."""
    head = [str(BIN / "ray"), "start", "--head", "--block", "--port", str(port)]
    return [*head, *extra, "--include-dashboard=false", "--disable-usage-stats"]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def start_token_cluster(work: Path) -> Iterator[dict]:
    """A token-authenticated Ray head (2 CPUs) and a tracking server the trials reach by the node's address."""
    token = secrets.token_hex(32)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    mlflow_log, ray_log = work / "mlflow.log", work / "ray.log"
    port = free_port()
    head = subprocess.Popen(
        ray_head_command(port, "--num-cpus", "2"),
        cwd=work,
        env={**os.environ, **auth},
        stdout=ray_log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = None
    try:
        wait_for(lambda: "Ray runtime started" in ray_log.read_text(), "ray head", ray_log)
        node_ip = re.search(r"Local node IP: (\S+)", ray_log.read_text()).group(1)
        mlflow_port = free_port()
        hosts = ",".join(f"{h}:{mlflow_port}" for h in ("127.0.0.1", "localhost", node_ip))
        server = subprocess.Popen(
            [
                str(BIN / "mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{work / 'server.db'}",
                "--artifacts-destination",
                str(work / "artifacts"),
                "--host",
                "0.0.0.0",  # as on a cluster head: trials on other nodes reach it by the node's address
                "--port",
                str(mlflow_port),
                "--allowed-hosts",
                hosts,
                "--workers",
                "1",
            ],
            cwd=work,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            stdout=mlflow_log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{mlflow_port}"
        wait_for(lambda: _healthy(url), "mlflow server", mlflow_log)
        yield {
            "work": work,
            "url": url,
            "trial_url": f"http://{node_ip}:{mlflow_port}",
            "address": f"127.0.0.1:{port}",
            "auth": auth,
        }
    finally:
        stop_group(head)
        if server is not None:
            stop_group(server)


def run_driver(cluster, *args: str, auth: bool = True, timeout: int = 400) -> subprocess.CompletedProcess:
    """`sweeps/run.py sweeps/quickstart.yaml --smoke-test ARGS` logging to the cluster's tracking server."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": cluster["url"], "PYTHONWARNINGS": "ignore"}
    env.pop("RAY_AUTH_MODE", None)
    if auth:
        env.update(cluster["auth"])
    return subprocess.run(
        [sys.executable, str(REPO / "sweeps" / "run.py"), str(SPEC), "--smoke-test", *args],
        cwd=cluster["work"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
