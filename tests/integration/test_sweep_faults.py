"""A sweep on a real multi-node Ray cluster on one machine, and what each fault does to it.

One head (`ray start --head --num-cpus 0`: no trial runs there) and two worker nodes (`ray start --address ...
--num-cpus 1`), each its own `ray start --block` process group with token authentication, and one real `mlflow
server` every trial logs to by the head's node address. The sweep (tests/integration/cluster_sweep.yaml) is a grid
of three tiny Wave-U-Nets, two at a time, so the first two run on different nodes; the third has lr=1e30 and
diverges at its first step. Then: bad cluster input, the tracking server down for a few seconds and for longer
than the trials' retry window, and last (it leaves one worker) a worker node killed mid-sweep.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray.util import get_node_ip_address

from sepray import names, tracking
from tests.integration.token_cluster import BIN, _healthy, free_port, wait_for
from tests.procs import descendants, stop_group

REPO = Path(__file__).resolve().parents[2]
SPEC = Path(__file__).with_name("cluster_sweep.yaml")
# the GCS notices a dead node in seconds (defaults: about 30 s)
FAST_HEALTH_CHECKS = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}
HEALTHY_ONLY = "search.params.train.lr={choice: [1.0e-3, 2.0e-3]}"


def _start(args: list[str], log: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        args, cwd=cwd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def _raylet_node_id(proc: subprocess.Popen) -> tuple[int, str]:
    """(pid, node id) of the raylet below a `ray start --block` process."""
    for pid in descendants(proc.pid):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet":
                args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
                return pid, next(a.split("=", 1)[1] for a in args if a.startswith("--node_id="))
        except (OSError, StopIteration):
            continue
    raise AssertionError(f"no raylet below process {proc.pid}")


class Cluster:
    def __init__(self, work: Path):
        self.work = work
        self.token = secrets.token_hex(32)
        self.auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}
        self.procs: list[subprocess.Popen] = []
        self.workers: dict[str, tuple[subprocess.Popen, int]] = {}  # node id -> (ray start, raylet pid)
        self.server: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, **self.auth, **FAST_HEALTH_CHECKS}
        port = free_port()
        head_log = self.work / "head.log"
        head = _start(
            [str(BIN / "ray"), "start", "--head", "--block", "--port", str(port), "--num-cpus", "0"]
            + ["--include-dashboard=false", "--disable-usage-stats"],
            head_log,
            env,
            self.work,
        )
        self.procs.append(head)
        self.mlflow_port = free_port()
        self.url = f"http://127.0.0.1:{self.mlflow_port}"
        self.node_ip = get_node_ip_address()  # what the nodes will announce (Ray's own choice)
        self._spawn_mlflow()  # comes up while the nodes do
        wait_for(lambda: "Ray runtime started" in head_log.read_text(), "ray head", head_log)
        assert self.node_ip == re.search(r"Local node IP: (\S+)", head_log.read_text()).group(1)
        self.address = f"{self.node_ip}:{port}"
        for i in range(2):  # one at a time: two raylets starting at once timed out on a loaded machine
            log = self.work / f"worker{i}.log"
            worker = _start(
                [str(BIN / "ray"), "start", "--address", self.address, "--block", "--num-cpus", "1"]
                + ["--disable-usage-stats"],
                log,
                env,
                self.work,
            )
            self.procs.append(worker)
            wait_for(
                lambda log=log: "Ray runtime started" in log.read_text(), f"worker {i}", log, timeout=150
            )
            pid, node_id = _raylet_node_id(worker)
            self.workers[node_id] = (worker, pid)
        wait_for(lambda: _healthy(self.url), "mlflow server", self.work / "mlflow.log")

    def _spawn_mlflow(self) -> None:
        # the trials reach it by the head's node address (the driver rewrites the loopback URI)
        hosts = ",".join(f"{h}:{self.mlflow_port}" for h in ("127.0.0.1", "localhost", self.node_ip))
        self.server = _start(
            [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{self.work / 'server.db'}"]
            + ["--artifacts-destination", str(self.work / "artifacts"), "--host", "0.0.0.0"]
            + ["--port", str(self.mlflow_port), "--allowed-hosts", hosts, "--workers", "1"],
            self.work / "mlflow.log",
            {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            self.work,
        )

    def start_mlflow(self) -> None:
        """(Re)start the tracking server on the same port and store, and wait until it answers."""
        self._spawn_mlflow()
        wait_for(lambda: _healthy(self.url), "mlflow server", self.work / "mlflow.log")

    def stop_mlflow(self) -> None:
        stop_group(self.server)
        self.server = None

    def stop(self) -> None:
        if self.server is not None:
            stop_group(self.server)
        for proc in reversed(self.procs):  # workers first, then the head
            stop_group(proc)

    def driver(self, name: str, *args: str, env: dict[str, str] | None = None, address: str | None = None):
        """A sweep driver process joining this cluster (``sweeps/run.py``), its output in the work folder."""
        out = self.work / f"{name}.out"
        command = [sys.executable, str(REPO / "sweeps" / "run.py"), str(SPEC), "--set", f"name={name}"]
        command += ["--address", address or self.address, *args]
        full_env = {**os.environ, "MLFLOW_TRACKING_URI": self.url, "PYTHONWARNINGS": "ignore", **self.auth}
        proc = subprocess.Popen(
            command,
            cwd=self.work,
            env={**full_env, **(env or {})},
            stdout=out.open("w"),
            stderr=subprocess.STDOUT,
        )
        return proc, out

    def run(self, name: str, *args: str, timeout: float = 300, **kw) -> tuple[int, str]:
        proc, out = self.driver(name, *args, **kw)
        try:
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
        return proc.returncode, out.read_text()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("faults"))
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _children(name: str, uri: str) -> list:
    parents = tracking.find_runs(name, f"tags.`{names.KIND}` = 'sweep'", uri)
    assert len(parents) == 1, parents
    return tracking.child_runs(name, parents[0].info.run_id, uri, kind="trial")


def _wait_for_an_epoch(name: str, uri: str, proc, out: Path, timeout: float = 200):
    """The first child run that logged an epoch while RUNNING (the sweep must still be going)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"the sweep ended first:\n{out.read_text()[-3000:]}"
        if f"sweep {name}: parent run" in out.read_text():
            runs = tracking.find_runs(name, f"tags.`{names.KIND}` = 'trial'", uri)
            running = [r for r in runs if r.info.status == "RUNNING" and r.data.metrics.get("epoch", 0) >= 1]
            if running:
                return running[0]
        time.sleep(0.5)
    raise AssertionError(f"no trial logged an epoch in {timeout} s:\n{out.read_text()[-3000:]}")


def _kill_node(leader: subprocess.Popen) -> None:
    """SIGKILL a worker node's `ray start --block` process and every process below it (raylet, workers)."""
    below = descendants(leader.pid)
    for pid in [leader.pid, *below]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    leader.wait(timeout=20)


def _epochs(run_id: str, uri: str) -> list[int]:
    return sorted(step for step, _ in tracking.Run(run_id, uri).metric_history("epoch"))


def test_trials_run_on_several_nodes_and_a_diverged_trial_fails_alone(cluster):
    started = time.time()
    rc, out = cluster.run("faults-spread")
    print(f"sweep took {time.time() - started:.0f} s")
    assert rc == 0, out[-4000:]
    children = _children("faults-spread", cluster.url)
    assert len(children) == 3
    by_lr = {float(c.data.params["train.lr"]): c for c in children}
    nodes = {c.data.tags[names.RAY_NODE_ID] for c in children}
    assert nodes <= set(cluster.workers) and len(nodes) == 2  # never the head (0 CPUs), both workers
    assert len({c.data.tags[names.TRIAL_ID] for c in children}) == 3
    diverged = by_lr[1e30]
    assert diverged.info.status == "FAILED" and diverged.data.tags[names.OUTCOME] == names.FAILED
    assert diverged.data.tags[names.LAST_ERROR].startswith("FloatingPointError: training diverged")
    assert names.RETRIES not in diverged.data.tags  # failed for good at once, not retried
    assert not list((cluster.work / "ray_results" / "faults-spread").glob("*/error.txt"))
    for lr in (1e-3, 2e-3):
        assert by_lr[lr].info.status == "FINISHED" and _epochs(by_lr[lr].info.run_id, cluster.url) == [1, 2]
    assert "FloatingPointError: training diverged" in out  # the leaderboard says why it failed
    best = tracking.find_runs("faults-spread", f"tags.`{names.KIND}` = 'sweep'", cluster.url)[0]
    assert best.data.tags[names.BEST_RUN_ID] in {by_lr[1e-3].info.run_id, by_lr[2e-3].info.run_id}
    # every run reached the one server: its artifact store holds the finished trials' packages
    assert len(list((cluster.work / "artifacts").rglob("model/config.json"))) >= 2


@pytest.mark.parametrize(
    "args, to_nothing, expected",
    [
        (["--set", "resources.gpu=1"], False, "short of GPU"),
        ([], True, "nothing accepts connections at"),
    ],
    ids=["gpu-on-a-cpu-cluster", "address-with-no-ray"],
)
def test_bad_cluster_input_is_one_line_and_exit_2_at_once(cluster, args, to_nothing, expected):
    started = time.time()
    address = f"127.0.0.1:{free_port()}" if to_nothing else None
    rc, out = cluster.run("faults-bad", *args, timeout=120, address=address)
    elapsed = time.time() - started
    assert rc == 2, out[-3000:]
    last = out.strip().splitlines()[-1]
    assert last.startswith("sepray: error:") and expected in last, last
    # "at once": not after waiting for resources (budget.pending_seconds, 600 s) or a connection timeout. The
    # driver's own start (importing torch, Ray and MLflow) takes ~16 s idle and took 37-39 s under load 10-13.
    assert elapsed < 60, f"took {elapsed:.0f} s"


def test_a_short_tracking_outage_loses_nothing(cluster):
    name = "faults-short-outage"
    proc, out = cluster.driver(
        name, "--set", HEALTHY_ONLY, "--set", "budget.epochs=4", "--set", "budget.steps_per_epoch=4"
    )
    try:
        _wait_for_an_epoch(name, cluster.url, proc, out)
        cluster.stop_mlflow()
        time.sleep(3)
        cluster.start_mlflow()  # same port, same store
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        if cluster.server is None:
            cluster.start_mlflow()
    assert proc.returncode == 0, out.read_text()[-4000:]
    children = _children(name, cluster.url)
    assert len(children) == 2
    for child in children:
        assert child.info.status == "FINISHED"
        assert _epochs(child.info.run_id, cluster.url) == [1, 2, 3, 4]  # every epoch, once


def test_a_long_tracking_outage_fails_the_attempt_clearly_and_ray_retries_it(cluster):
    name = "faults-long-outage"
    proc, out = cluster.driver(
        name,
        "--set",
        HEALTHY_ONLY,
        "--set",
        "budget.epochs=3",
        "--set",
        "budget.steps_per_epoch=4",
        "--set",
        "max_failures=30",
        env={"SEPRAY_TRACKING_RETRY_SECONDS": "2"},  # handed to the trials on the other nodes
    )
    try:
        _wait_for_an_epoch(name, cluster.url, proc, out)
        cluster.stop_mlflow()
        time.sleep(10)
        cluster.start_mlflow()
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        if cluster.server is None:
            cluster.start_mlflow()
    text = out.read_text()
    assert proc.returncode == 0, text[-4000:]
    assert "the tracking store did not answer for 2 s" in text  # the attempt's error, in Ray's trial output
    children = _children(name, cluster.url)
    assert len(children) == 2
    retried = [c for c in children if int(c.data.tags.get(names.RETRIES, 0)) >= 1]
    assert retried, [c.data.tags for c in children]
    assert any("did not answer" in c.data.tags.get(names.LAST_ERROR, "") for c in retried)
    for child in children:
        assert child.info.status == "FINISHED"
        assert _epochs(child.info.run_id, cluster.url) == [1, 2, 3]


def test_a_worker_node_dies_and_its_trial_continues_on_another_node(cluster):
    """Last: it leaves the cluster with one worker."""
    name = "faults-node-dies"
    proc, out = cluster.driver(
        name, "--set", HEALTHY_ONLY, "--set", "budget.epochs=4", "--set", "budget.steps_per_epoch=8"
    )
    try:
        victim = _wait_for_an_epoch(name, cluster.url, proc, out)
        node = victim.data.tags[names.RAY_NODE_ID]
        # The node dies: every process of it at once. (The trial's worker outlives a killed raylet for about a
        # second idle, and its results reach the driver without the raylet: on a loaded machine it could end
        # its trial before Ray noticed, and nothing would move.)
        _kill_node(cluster.workers[node][0])
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out.read_text()[-4000:]
    children = _children(name, cluster.url)
    assert len(children) == 2  # the retry reattached its run
    moved = next(c for c in children if c.info.run_id == victim.info.run_id)
    assert moved.data.tags.get(names.RETRIES) == "1", (moved.data.tags, out.read_text()[-6000:])
    visited = moved.data.tags[names.RAY_NODE_IDS].split(",")
    assert visited[0] == node and len(visited) == 2 and visited[1] in cluster.workers and visited[1] != node
    for child in children:
        assert child.info.status == "FINISHED"
        assert _epochs(child.info.run_id, cluster.url) == [
            1,
            2,
            3,
            4,
        ]  # resumed from its checkpoint, no doubles
        assert child.info.run_id in out.read_text()  # the leaderboard lists every trial
