"""The tracking server cluster.yaml runs on the head requires a login: a real `mlflow server --app-name
basic-auth` refuses an unauthenticated request, and a smoke sweep with MLFLOW_TRACKING_USERNAME /
MLFLOW_TRACKING_PASSWORD from the environment logs every trial through it."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from sepray import names, tracking
from tests.integration.token_cluster import BIN, _healthy, free_port, wait_for
from tests.procs import stop_group

REPO = Path(__file__).resolve().parents[2]
SPEC = Path(__file__).with_name("cluster_sweep.yaml")


def test_the_tracking_server_refuses_anonymous_requests_and_a_sweep_logs_with_credentials(tmp_path):
    user, password = "sepray", secrets.token_urlsafe(16)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "mlflow.log"
    server = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--app-name",
            "basic-auth",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        + ["--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--workers", "1"]
        + ["--artifacts-destination", str(tmp_path / "artifacts")],
        cwd=tmp_path,
        env={
            **os.environ,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_AUTH_ADMIN_USERNAME": user,  # the admin account, created on first start (cluster.yaml)
            "MLFLOW_AUTH_ADMIN_PASSWORD": password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
        },
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: _healthy(url), "mlflow server", log)
        request = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
        try:
            urllib.request.urlopen(request, timeout=10)
            raise AssertionError("an anonymous request was answered")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
        env = {**os.environ, "MLFLOW_TRACKING_URI": url, "PYTHONWARNINGS": "ignore"}
        env.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)
        proc = subprocess.run(
            [
                sys.executable,
                str(REPO / "sweeps" / "run.py"),
                str(SPEC),
                "--num-cpus",
                "1",
                "--set",
                "name=auth",
            ]
            + ["--set", "search.params.train.lr={choice: [1.0e-3, 2.0e-3]}", "--set", "budget.epochs=1"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        os.environ.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)
        try:
            (parent,) = tracking.find_runs("auth", f"tags.`{names.KIND}` = 'sweep'", url)
            children = tracking.child_runs("auth", parent.info.run_id, url)
        finally:
            os.environ.pop("MLFLOW_TRACKING_USERNAME")
            os.environ.pop("MLFLOW_TRACKING_PASSWORD")
        assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
        assert parent.data.tags[names.BEST_RUN_ID] in {c.info.run_id for c in children}
    finally:
        stop_group(server)
