"""The cluster topology on one machine: a real `ray start --head` (token authentication on, as Ray 2.60 sets
it up for a head that has a token) and a real `mlflow server` with proxied artifacts listening on every
interface, as cluster.yaml runs them; `sweeps/run.py --address HOST:PORT` joins that cluster, every trial logs
through the server by the node's address, and `sepray separate` reads the winner back through it."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import soundfile as sf

from sepray import tracking
from tests.integration.token_cluster import BIN, run_driver

NAME = "quickstart-smoke"
# the cluster and its smoke sweep (tests/integration/conftest.py) are shared with test_report_browser.py, on one
# pytest-xdist worker (tests/conftest.py: SHARED_WORKER)


def test_sweep_joins_the_cluster_and_logs_through_the_tracking_server(
    token_cluster, cluster_smoke_sweep, tmp_path
):
    cluster, proc = token_cluster, cluster_smoke_sweep
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    assert "Connecting to existing Ray cluster" in proc.stderr + proc.stdout  # joined, did not start its own
    # the driver's loopback URI would be each node's own loopback: trials log by this node's address instead
    # (the server accepts that Host header only because the fixture allowed it, so the trials really used it)
    assert f"trials log to {cluster['trial_url']} so that other nodes reach it" in proc.stdout
    uri = cluster["url"]
    runs = tracking.find_runs(NAME, uri=uri)
    parents = [r for r in runs if r.data.tags.get("sepray.kind") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = tracking.child_runs(NAME, parents[0].info.run_id, uri)
    assert len(children) >= 2 and len(runs) == len(children) + 1
    best = parents[0].data.tags["sepray.best_run_id"]
    assert best in {c.info.run_id for c in children}
    # the trials' packages went through the server into its artifact destination, not a local path
    assert list((cluster["work"] / "artifacts").rglob("model/config.json"))
    assert not (cluster["work"] / "mlartifacts").exists() and not (cluster["work"] / "mlflow.db").exists()

    song = tmp_path / "song.wav"
    sf.write(song, 0.1 * np.random.default_rng(0).standard_normal((8000 * 3, 2)), 8000)
    out = tmp_path / "separated"
    sep = subprocess.run(
        [str(BIN / "sepray"), "separate", "--run-id", best, str(song), "-o", str(out)],
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sep.returncode == 0, sep.stderr[-3000:]
    for source in ("vocals", "accompaniment"):
        info = sf.info(out / "song" / f"{source}.wav")
        assert (info.frames, info.channels, info.samplerate) == (8000 * 3, 2, 8000)


def test_joining_a_token_cluster_without_the_token_is_one_line_with_the_remedy(token_cluster):
    cluster = token_cluster
    proc = run_driver(cluster, "--address", cluster["address"], auth=False, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"sepray: error: cannot start or join the Ray cluster at {cluster['address']}")
    assert "RAY_AUTH_MODE=token" in last
