"""The autoscaling path on one machine: a real head started as the README shows (`RAY_FAKE_CLUSTER=1 ray start
--head --autoscaling-config cluster-fake.yaml`, its own port and temp dir, token authentication), with no CPU or
GPU of its own, and `sweeps/run.py --address` joining it with a `resources.gpu: auto` sweep: the driver finds
that the autoscaler starts GPU nodes, so its WaveNet asks a whole (fake) GPU and its two Wave-U-Nets half of one
each. The autoscaler must start GPU worker nodes for them, each trial must see the GPU Ray gave it in
CUDA_VISIBLE_DEVICES, and the two Wave-U-Nets must share one node's GPU at the same time."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from sepray import names, tracking
from tests.integration.token_cluster import free_port, ray_head_command, wait_for
from tests.procs import alive, stop_group

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "tests" / "integration" / "cluster_gpu_sweep.yaml"
BIN = Path(sys.executable).parent
# node ids the fake provider gives: the head ...00000, the workers it starts ...00001, ...00002
FAKE_ID_BASE = "f" * 51
HEAD_ID = FAKE_ID_BASE + "00000"


def _processes_under(folder: str) -> list[int]:
    """This user's processes whose command line names ``folder`` (the Ray processes of this cluster)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != os.getuid():
                continue
            if folder.encode() in Path(f"/proc/{name}/cmdline").read_bytes():
                out.append(int(name))
        except OSError:
            continue
    return out


@pytest.fixture
def fake_cluster(tmp_path):
    # Ray's socket paths must stay short: its temp dir directly under /tmp, not pytest's deep tmp_path
    temp = tempfile.mkdtemp(prefix="sepray-fake-", dir="/tmp")
    port = free_port()
    config = yaml.safe_load((REPO / "cluster-fake.yaml").read_text())
    config["provider"]["gcs_address"] = f"127.0.0.1:{port}"
    (tmp_path / "fake.yaml").write_text(yaml.safe_dump(config))
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    log = tmp_path / "head.log"
    env = {
        **os.environ,
        **auth,
        "RAY_FAKE_CLUSTER": "1",
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",  # the autoscaler looks every second (Ray's default: 5)
        "RAY_AUTOSCALER_FATESHARE_WORKERS": "1",  # its worker nodes go when the autoscaler goes
    }
    head = subprocess.Popen(
        ray_head_command(
            port,
            *("--num-cpus", "0", "--num-gpus", "0", "--dashboard-agent-listen-port", "0", "--temp-dir", temp),
            *("--autoscaling-config", str(tmp_path / "fake.yaml")),
        ),
        cwd=tmp_path,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: "Ray runtime started" in log.read_text(), "ray head", log)
        yield {"work": tmp_path, "address": f"127.0.0.1:{port}", "auth": auth, "temp": temp}
    finally:
        stop_group(head)
        # the worker nodes the autoscaler started, wherever they were reparented
        deadline = time.time() + 10
        while time.time() < deadline and any(alive(p) for p in _processes_under(temp)):
            time.sleep(0.5)
        for pid in _processes_under(temp):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def _overlap(a, b) -> bool:
    return a.info.start_time < b.info.end_time and b.info.start_time < a.info.end_time


def test_gpu_trials_make_the_autoscaler_start_gpu_nodes_and_half_gpu_trials_share_one(fake_cluster):
    work = fake_cluster["work"]
    uri = f"sqlite:///{work / 'mlflow.db'}"  # every fake node is this machine: they all see the file
    env = {**os.environ, **fake_cluster["auth"], "MLFLOW_TRACKING_URI": uri, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "sweeps" / "run.py"),
            str(SPEC),
            "--address",
            fake_cluster["address"],
            "--set",
            f"storage={work / 'ray_results'}",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    # gpu: auto on a head without GPUs: the driver asked the autoscaler, which starts GPU nodes, and said so
    assert (
        "resources.gpu auto: 1 GPU per wavenet trial, 0.5 GPU per waveunet trial (no node of the Ray cluster "
        "has a GPU yet; its autoscaler starts GPU nodes for them)"
    ) in out
    assert "Adding" in out and "gpu_worker" in out  # the autoscaler's own event lines

    parent = tracking.find_runs("fake-gpu", f"tags.`{names.KIND}` = 'sweep'", uri)[0]
    children = tracking.child_runs("fake-gpu", parent.info.run_id, uri, kind="trial")
    assert len(children) == 3 and all(c.info.status == "FINISHED" for c in children)
    by_family: dict[str, list] = {}
    for child in children:
        by_family.setdefault(child.data.params["model.name"], []).append(child)
        assert child.data.params["train.device"] == "auto"  # trained on the CPU: a fake GPU has no CUDA
        assert child.data.tags[names.TRAIN_DEVICE] == "cpu"
        # the one GPU of its node that Ray gave it (a fake node's GPU ids count from 0)
        assert child.data.tags[names.CUDA_VISIBLE_DEVICES] == "0", child.data.tags
    node = {c.info.run_id: c.data.tags[names.RAY_NODE_ID] for c in children}
    # every trial ran on a worker node the autoscaler started, none on the head
    assert all(n.startswith(FAKE_ID_BASE) and n != HEAD_ID for n in node.values()), node
    assert len(set(node.values())) == 2, node  # the WaveNet's node, and the one the Wave-U-Nets shared

    (wavenet,), unets = by_family["wavenet"], by_family["waveunet"]
    assert len(unets) == 2
    # auto gives a Wave-U-Net 0.5 GPU: two trials on one (fake) GPU, same node, running at the same time
    assert node[unets[0].info.run_id] == node[unets[1].info.run_id]
    assert _overlap(unets[0], unets[1])
    # and a WaveNet a whole GPU: nothing else ran on its node meanwhile
    assert node[wavenet.info.run_id] != node[unets[0].info.run_id]
