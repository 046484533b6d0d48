"""resources.per_family: each trial asks Ray for its model family's resources; the torch threads follow the
family's CPUs; the schedulability check considers every family's request; resources.gpu: auto."""

from __future__ import annotations

import copy

import pytest

from sepray.errors import SweepError
from sepray.sweep.raytune import cluster
from sepray.sweep.sections import SpecError
from sepray.sweep.space import GRID_KEY
from sepray.sweep.spec import parse_spec
from sepray.sweep.trial import TrialContext
from tests.sweep.test_spec import FAMILIES, LABEL

MIXED = {
    **copy.deepcopy(FAMILIES),
    "resources": {"cpu": 1, "gpu": 0.25, "per_family": {"wavenet": {"cpu": 2, "gpu": 1}}},
}


def test_per_family_entries_inherit_the_keys_they_do_not_set():
    spec = parse_spec(
        {**MIXED, "resources": {"cpu": 1, "gpu": 0.5, "memory_gb": 2, "per_family": {"wavenet": {"gpu": 1}}}},
        LABEL,
    )
    wavenet = spec.resources.of_family("wavenet")
    assert (wavenet.cpu, wavenet.gpu, wavenet.memory_gb) == (1.0, 1.0, 2.0)
    assert spec.resources.of_family("waveunet") is spec.resources
    assert cluster.trial_request(spec, "wavenet") == {"cpu": 1.0, "gpu": 1.0, "memory": 2 * 2**30}
    assert cluster.trial_request(spec, "waveunet") == {"cpu": 1.0, "gpu": 0.5, "memory": 2 * 2**30}


def test_a_trial_asks_for_its_familys_resources():
    spec = parse_spec(MIXED, LABEL)
    resources = cluster.TrialResources(spec)
    # Optuna's flat config, and a grid point
    assert resources.request({"model.name": "wavenet", "model.input": "raw"}) == {"cpu": 2.0, "gpu": 1.0}
    assert resources.request({GRID_KEY: {"model.name": "waveunet"}}) == {"cpu": 1.0, "gpu": 0.25}
    bundles = resources({"model.name": "wavenet"}).bundles
    assert bundles == [{"CPU": 2.0, "GPU": 1.0}]
    assert cluster.describe_requests(spec) == "1 CPU, 0.25 GPU (wavenet: 2 CPU, 1 GPU)"


def test_a_fixed_family_takes_its_entry():
    raw = {**copy.deepcopy(MIXED), "model": {"name": "wavenet", **MIXED["families"]["wavenet"]}}
    del raw["families"]
    raw["search"] = {"num_samples": 2, "params": {"train.lr": {"loguniform": [1e-4, 1e-3]}}}
    spec = parse_spec(raw, LABEL)
    assert spec.trial_families() == ("wavenet",)
    assert cluster.TrialResources(spec).request({"train.lr": 1e-3}) == {"cpu": 2.0, "gpu": 1.0}


def test_torch_threads_follow_the_familys_cpus():
    spec = parse_spec(MIXED, LABEL)
    assert spec.fixed["train"]["threads"] == 1
    assert (
        spec.resolve_trial(
            {"model.name": "wavenet", "model.input": "raw", "model.head": "mulaw"}
        ).train.threads
        == 2
    )
    assert spec.resolve_trial({"model.name": "waveunet", "model.levels": 3}).train.threads == 1
    context = TrialContext.of(spec, "sqlite:///x.db", "parent")
    assert (
        context.trial_config(
            {"model.name": "wavenet", "model.input": "raw", "model.head": "mulaw"}
        ).train.threads
        == 2
    )
    # an explicit train.threads wins for every family
    pinned = parse_spec({**MIXED, "train": {"threads": 3}}, LABEL)
    assert pinned.family_threads == {}
    assert (
        pinned.resolve_trial(
            {"model.name": "wavenet", "model.input": "raw", "model.head": "mulaw"}
        ).train.threads
        == 3
    )


def _nodes(monkeypatch, *resources):
    monkeypatch.setattr(cluster.ray, "nodes", lambda: [{"Alive": True, "Resources": r} for r in resources])


def test_the_largest_family_request_must_fit_some_node(monkeypatch):
    spec = parse_spec(MIXED, LABEL)
    _nodes(monkeypatch, {"CPU": 4.0, "GPU": 1.0})
    cluster.check_schedulable(spec)  # both families fit the one GPU node
    _nodes(monkeypatch, {"CPU": 4.0}, {"CPU": 1.0, "GPU": 0.5})  # a waveunet fits, a wavenet does not
    with pytest.raises(SweepError) as info:
        cluster.check_schedulable(spec)
    message = str(info.value)
    assert message.startswith(f"{LABEL}: resources.per_family.wavenet: a wavenet trial needs 2 CPU, 1 GPU")
    assert "short of GPU" in message and "\n" not in message


def test_an_autoscaler_that_starts_nodes_is_not_rejected(monkeypatch):
    spec = parse_spec(MIXED, LABEL)
    _nodes(monkeypatch, {"CPU": 1.0})
    asked = []
    monkeypatch.setattr(cluster, "autoscaler_adds_nodes", lambda needs: asked.append(needs) or True)
    notes = []
    cluster.check_schedulable(spec, autoscaling=True, log=notes.append)
    assert asked == [[{"CPU": 1.0, "GPU": 0.25}, {"CPU": 2.0, "GPU": 1.0}]]
    assert "its autoscaler is starting nodes for them" in notes[0]
    monkeypatch.setattr(cluster, "autoscaler_adds_nodes", lambda needs: False)
    with pytest.raises(SweepError, match=r"short of CPU, GPU and its autoscaler started no node for it"):
        cluster.check_schedulable(spec, autoscaling=True)
    with pytest.raises(SweepError, match=r"short of CPU, GPU: lower"):  # a local instance never autoscales
        cluster.check_schedulable(spec)


def _autoscaler(monkeypatch, statuses):
    """The autoscaler's status as the probe reads it: ``statuses(asked_count)`` after each request."""
    import ray.autoscaler.sdk

    asked = []
    monkeypatch.setattr(ray.autoscaler.sdk, "request_resources", lambda bundles: asked.append(bundles))
    monkeypatch.setattr(cluster, "_autoscaler_status", lambda: statuses(len(asked)))
    monkeypatch.setattr(cluster.time, "sleep", lambda s: None)
    return asked


def test_the_probe_reads_the_autoscalers_answer(monkeypatch):
    import time

    _nodes(monkeypatch, {"CPU": 1.0})
    need = [{"CPU": 1.0, "GPU": 1.0}]
    head = {"node_type_mapping": {"head": "ray.head.default"}}
    now = time.time()
    # a launcher config: the update after the request launches a node
    asked = _autoscaler(
        monkeypatch,
        lambda n: {
            "time": now + n,
            "autoscaler_report": head if n == 0 else {**head, "pending_launches": {"gpu": 1}},
        },
    )
    assert cluster.autoscaler_adds_nodes(need) and asked == [need, []]  # asked, then the request withdrawn
    # read-only: an update that began after the request launched nothing
    asked = _autoscaler(monkeypatch, lambda n: {"time": now + 10 * n, "autoscaler_report": head})
    assert not cluster.autoscaler_adds_nodes(need) and asked == [need, []]
    # a provider that starts a node at once (fake_multinode): no launch pending, one launcher node more
    worker = {"node_type_mapping": {"head": "ray.head.default", "w": "ray.worker.gpu"}}
    asked = _autoscaler(
        monkeypatch, lambda n: {"time": now + n, "autoscaler_report": head if n == 0 else worker}
    )
    assert cluster.autoscaler_adds_nodes(need) and asked == [need, []]
    # read-only, and nodes join meanwhile (the head registering after the first update, a worker started by
    # hand): they are listed under anonymous types, and are no answer
    joined = {"node_type_mapping": {"10.0.0.1": "node_" + "ab12" * 14, "10.0.0.2": "node_" + "cd34" * 14}}
    asked = _autoscaler(
        monkeypatch, lambda n: {"time": now + 10 * n, "autoscaler_report": {} if n == 0 else joined}
    )
    assert not cluster.autoscaler_adds_nodes(need) and asked == [need, []]
    # no autoscaler reports at all: not asked
    asked = _autoscaler(monkeypatch, lambda n: None)
    assert not cluster.autoscaler_adds_nodes(need) and asked == []


# ----------------------------------------------------------------------------------------------------------
# resources.gpu: auto (the default)

AUTO = {
    **copy.deepcopy(FAMILIES),
    "resources": {"cpu": 1, "gpu": "auto", "per_family": {"wavenet": {"cpu": 2}}},  # wavenet inherits auto
}


def test_gpu_auto_is_the_default_and_a_bad_value_names_the_key():
    assert parse_spec(copy.deepcopy(FAMILIES), LABEL).resources.gpu == "auto"
    spec = parse_spec(AUTO, LABEL)
    assert spec.resources.of_family("wavenet").gpu == "auto" and spec.resources.auto_gpu
    with pytest.raises(ValueError, match="still auto"):
        cluster.trial_request(spec, "wavenet")  # Ray is never handed an unresolved request
    for value, message in [
        ("banana", "resources.gpu: expected a number or auto, got 'banana'"),
        (float("nan"), "resources.gpu: expected a finite number, got nan"),
        (-1, "resources.cpu: cpu and gpu must be >= 0"),
    ]:
        with pytest.raises(SpecError) as info:
            parse_spec({**AUTO, "resources": {"gpu": value}}, LABEL)
        assert str(info.value).startswith(f"{LABEL}: {message}")
    with pytest.raises(SpecError, match=r"resources\.cpu: must be > 0 with gpu: auto"):
        parse_spec({**AUTO, "resources": {"cpu": 0}}, LABEL)


def test_auto_takes_each_familys_share_on_a_cluster_with_gpus(monkeypatch):
    _nodes(monkeypatch, {"CPU": 0.0}, {"CPU": 4.0, "GPU": 1.0}, {"CPU": 4.0, "GPU": 2.0})
    lines = []
    spec, accepted = cluster.resolve_auto_gpu(parse_spec(AUTO, LABEL), log=lines.append)
    assert lines == [
        "resources.gpu auto: 0.5 GPU per waveunet trial, 1 GPU per wavenet trial "
        "(the Ray cluster has 3 GPU on 2 nodes)"
    ]
    assert accepted == [] and not spec.resources.auto_gpu
    requests = cluster.TrialResources(spec)
    assert requests.request({"model.name": "waveunet"}) == {"cpu": 1.0, "gpu": 0.5}
    assert requests.request({"model.name": "wavenet"}) == {"cpu": 2.0, "gpu": 1.0}
    # a number in per_family still wins over auto, and is not announced as a choice
    raw = copy.deepcopy(AUTO)
    raw["resources"]["per_family"]["waveunet"] = {"gpu": 0.2}
    lines.clear()
    spec, _ = cluster.resolve_auto_gpu(parse_spec(raw, LABEL), log=lines.append)
    assert cluster.trial_request(spec, "waveunet") == {"cpu": 1.0, "gpu": 0.2}
    assert cluster.trial_request(spec, "wavenet") == {"cpu": 2.0, "gpu": 1.0}
    assert lines[0].startswith("resources.gpu auto: 1 GPU per wavenet trial (")
    # a request no node holds names the key the user wrote, not the entries auto made
    with pytest.raises(SweepError, match=rf"^{LABEL}: resources: a wavenet trial needs 8 CPU, 1 GPU"):
        cluster.plan_resources(parse_spec({**AUTO, "resources": {"cpu": 8}}, LABEL), log=lines.append)


def test_auto_is_zero_without_gpus_and_asks_the_same_as_gpu_0(monkeypatch):
    _nodes(monkeypatch, {"CPU": 2.0})
    monkeypatch.setattr(cluster, "autoscaler_adds_nodes", lambda needs: pytest.fail("a local instance"))
    lines = []
    spec = cluster.plan_resources(parse_spec(AUTO, LABEL), log=lines.append)
    assert lines == [
        "resources.gpu auto: 0 GPU, the trials train on CPUs (the local Ray instance has no GPU)"
    ]
    zero = parse_spec(
        {**AUTO, "resources": {"cpu": 1, "gpu": 0, "per_family": {"wavenet": {"cpu": 2}}}}, LABEL
    )
    for family in ("waveunet", "wavenet"):
        assert cluster.trial_request(spec, family) == cluster.trial_request(zero, family)
        assert cluster.trial_request(spec, family)["gpu"] == 0.0
    assert spec.fixed == zero.fixed and spec.family_threads == zero.family_threads  # the same trials


def test_auto_asks_the_autoscaler_for_gpu_nodes_once(monkeypatch):
    _nodes(monkeypatch, {"CPU": 0.0})  # a head with nothing of its own, as cluster-fake.yaml starts it
    asked = []
    monkeypatch.setattr(cluster, "autoscaler_adds_nodes", lambda needs: asked.append(needs) or True)
    lines = []
    spec = cluster.plan_resources(parse_spec(AUTO, LABEL), autoscaling=True, log=lines.append)
    # asked once, by the auto resolution; the schedulability check takes its answer
    assert asked == [[{"CPU": 1.0, "GPU": 0.5}, {"CPU": 2.0, "GPU": 1.0}]]
    assert lines == [
        "resources.gpu auto: 0.5 GPU per waveunet trial, 1 GPU per wavenet trial (no node of the Ray "
        "cluster has a GPU yet; its autoscaler starts GPU nodes for them)"
    ]
    assert cluster.trial_request(spec, "wavenet")["gpu"] == 1.0
    # an autoscaler that starts no GPU node: CPU trials
    monkeypatch.setattr(cluster, "autoscaler_adds_nodes", lambda needs: False)
    lines.clear()
    spec, accepted = cluster.resolve_auto_gpu(parse_spec(AUTO, LABEL), autoscaling=True, log=lines.append)
    assert accepted == [] and cluster.trial_request(spec, "wavenet")["gpu"] == 0.0
    assert lines[0].endswith("(no node of the Ray cluster has a GPU and its autoscaler starts none)")


def test_a_real_local_ray_instance_resolves_auto_to_what_it_has():
    """The fake cluster's spec (gpu: auto) on this machine's own local Ray instance: 0 GPU without one."""
    from pathlib import Path

    import ray

    from sepray.sweep.spec import load_spec

    spec = load_spec(Path(__file__).parents[1] / "integration" / "cluster_gpu_sweep.yaml")
    assert spec.resources.gpu == "auto"
    cluster.init_ray(None, 1)
    try:
        lines = []
        spec = cluster.plan_resources(spec, log=lines.append)
        has_gpu = ray.cluster_resources().get("GPU", 0) > 0
    finally:
        cluster.shutdown()
    expected = 1.0 if has_gpu else 0.0
    assert cluster.trial_request(spec, "wavenet") == {"cpu": 1.0, "gpu": expected}
    assert cluster.trial_request(spec, "waveunet") == {"cpu": 1.0, "gpu": expected / 2}
    if not has_gpu:
        assert lines == [
            "resources.gpu auto: 0 GPU, the trials train on CPUs (the local Ray instance has no GPU)"
        ]
