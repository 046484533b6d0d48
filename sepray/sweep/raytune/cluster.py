"""The Ray instance of a sweep: start a local one or join a cluster, what a trial asks of it and whether any
node can ever hold one.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray
from ray.tune import PlacementGroupFactory
from ray.tune.execution.placement_groups import resource_dict_to_pg_factory

from sepray.errors import SweepError
from sepray.sweep.sections import AUTO
from sepray.sweep.spec import SweepSpec
from sepray.sweep.trial import sampled_params

LOCAL_NODE_ADDRESS = "127.0.0.1"  # the node address of a local Ray instance


def trial_request(spec: SweepSpec, family: str | None = None) -> dict[str, float]:
    """The resources one trial (of model family ``family``) asks Ray for (``gpu: auto`` resolved first)."""
    res = spec.resources.of_family(family)
    if res.gpu == AUTO:
        raise ValueError(f"{spec.label}: resources.gpu is still auto: resolve it first (resolve_auto_gpu)")
    request = {"cpu": res.cpu, "gpu": res.gpu}
    if res.memory_gb:
        request["memory"] = res.memory_gb * 2**30
    return request


class TrialResources:
    """``tune.with_resources``'s callable: a trial's request by the model family of its config (picklable)."""

    def __init__(self, spec: SweepSpec):
        self.default_family = spec.fixed["model"].get("name")
        self.requests = {fam: trial_request(spec, fam) for fam in spec.trial_families()}
        self.default = trial_request(spec)

    def family(self, config: dict[str, Any]) -> str | None:
        return sampled_params(config).get("model.name", self.default_family)

    def request(self, config: dict[str, Any]) -> dict[str, float]:
        return self.requests.get(self.family(config), self.default)

    def __call__(self, config: dict[str, Any]) -> PlacementGroupFactory:
        return resource_dict_to_pg_factory(self.request(config))


def describe_requests(spec: SweepSpec) -> str:
    """What a trial asks for, per family where they differ: ``1 CPU, 0.5 GPU (wavenet: 1 CPU, 1 GPU)``."""
    base = trial_request(spec)
    other = [(f, trial_request(spec, f)) for f in spec.trial_families() if trial_request(spec, f) != base]
    text = describe_resources(base)
    if other:
        text += " (" + "; ".join(f"{f}: {describe_resources(r)}" for f, r in other) + ")"
    return text


def _need(request: dict[str, float]) -> dict[str, float]:
    """A request in the names of Ray's node resources, zeros left out."""
    need = {"CPU": request["cpu"], "GPU": request["gpu"], "memory": request.get("memory", 0.0)}
    return {k: v for k, v in need.items() if v > 0}


def _alive_nodes() -> list[dict[str, float]]:
    return [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]


def _fits(need: dict[str, float], nodes: list[dict[str, float]]) -> bool:
    return any(all(node.get(k, 0.0) >= v for k, v in need.items()) for node in nodes)


def plan_resources(spec: SweepSpec, autoscaling: bool = False, log=print) -> SweepSpec:
    """The spec with ``resources.gpu: auto`` resolved for this cluster (:func:`resolve_auto_gpu`), after
    :func:`check_schedulable` found a node (or the autoscaler) for one trial of each family."""
    spec, accepted = resolve_auto_gpu(spec, autoscaling, log)
    check_schedulable(spec, autoscaling, log, accepted)
    return spec


def resolve_auto_gpu(
    spec: SweepSpec, autoscaling: bool = False, log=print
) -> tuple[SweepSpec, list[dict[str, float]]]:
    """Replace ``resources.gpu: auto`` by each family's GPU share (``sections.AUTO_GPU_SHARE``) when some alive
    node has a GPU, or -- ``autoscaling``, a cluster joined by address -- when its autoscaler starts GPU nodes for
    those requests; else by 0 (the trials run on CPUs). Prints one line saying what it chose and why.

    Returns the resolved spec and the requests the autoscaler accepted (check_schedulable does not ask it again)."""
    res = spec.resources
    if not res.auto_gpu:
        return spec, []
    families = spec.trial_families()
    shares = res.auto_families(families)
    nodes = _alive_nodes()
    gpu_nodes = [n["GPU"] for n in nodes if n.get("GPU", 0.0) > 0]
    accepted: list[dict[str, float]] = []
    if gpu_nodes:
        use = True
        why = (
            f"the Ray cluster has {sum(gpu_nodes):g} GPU on {len(gpu_nodes)} node{'s' * (len(gpu_nodes) > 1)}"
        )
    elif autoscaling:
        candidate = replace(spec, resources=res.resolve_auto(families, True))
        needs = _distinct([_need(trial_request(candidate, fam)) for fam in shares])
        use = autoscaler_adds_nodes(needs)
        accepted = needs if use else []
        why = (
            "no node of the Ray cluster has a GPU yet; its autoscaler starts GPU nodes for them"
            if use
            else "no node of the Ray cluster has a GPU and its autoscaler starts none"
        )
    else:
        use, why = False, "the local Ray instance has no GPU"
    if use:
        chosen = ", ".join(
            f"{share:g} GPU per {fam + ' ' if fam else ''}trial" for fam, share in shares.items()
        )
    else:
        chosen = "0 GPU, the trials train on CPUs"
    log(f"resources.gpu auto: {chosen} ({why})")
    return replace(spec, resources=res.resolve_auto(families, use)), accepted


def _distinct(needs: list[dict[str, float]]) -> list[dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for need in needs:
        out.setdefault(json.dumps(need, sort_keys=True), need)
    return list(out.values())


def check_schedulable(
    spec: SweepSpec, autoscaling: bool = False, log=print, accepted: list[dict[str, float]] = ()
) -> None:
    """SweepError naming what is missing unless some node of the cluster can ever hold one trial of each of the
    sweep's model families (its own request, ``resources.per_family``).

    ``autoscaling`` (a cluster joined by address): a request no alive node holds is handed to the cluster's
    autoscaler (``ray.autoscaler.sdk.request_resources``); when it starts a node for it, the sweep goes on.
    ``accepted``: requests the autoscaler already accepted (:func:`resolve_auto_gpu` asked it).
    """
    families = spec.trial_families() or (None,)
    needs: dict[str, tuple[str | None, dict[str, float]]] = {}
    for fam in families:
        need = _need(trial_request(spec, fam))
        needs.setdefault(json.dumps(need, sort_keys=True), (fam, need))
    nodes = _alive_nodes()
    unfit = [(fam, need) for fam, need in needs.values() if not _fits(need, nodes) and need not in accepted]
    if not unfit:
        return
    if autoscaling and autoscaler_adds_nodes([need for _, need in unfit]):
        log(
            "note: no node of the Ray cluster holds a trial yet ("
            + "; ".join(describe_resources(need) for _, need in unfit)
            + "); its autoscaler is starting nodes for them"
        )
        return
    fam, need = max(unfit, key=lambda item: tuple(item[1].get(k, 0.0) for k in ("GPU", "CPU", "memory")))
    best = {k: max((node.get(k, 0.0) for node in nodes), default=0.0) for k in need}
    missing = [k for k in need if best[k] < need[k]]
    who = f"a {fam} trial" if fam and len(families) > 1 else "a trial"
    written = (spec.raw.get("resources") or {}).get("per_family") or {}  # gpu: auto adds entries of its own
    key = f"resources.per_family.{fam}" if fam in written else "resources"
    raise SweepError(
        f"{spec.label}: {key}: {who} needs {describe_resources(need)}, but no node of the Ray cluster has that "
        f"(the largest offer {describe_resources(best)}); short of {', '.join(missing) or 'one node with all of it'}"
        f"{'' if not autoscaling else ' and its autoscaler started no node for it'}: "
        "lower resources.* (--set resources.cpu=1) or add nodes"
    )


AUTOSCALER_UPDATES = 2  # autoscaler updates after the request that launched nothing: it cannot (the first
# may have begun before the request; the second decided on it) ...
CLOCK_MARGIN_S = 0.5  # ... unless the first began after it (by the head's clock: its status says when)
AUTOSCALER_PROBE_S = 60.0  # the longest the driver waits for the autoscaler's answer
READONLY_NODE_TYPE = re.compile(
    r"node_[0-9a-f]+"
)  # Ray's anonymous type of a node a read-only autoscaler lists


def autoscaler_adds_nodes(needs: list[dict[str, float]]) -> bool:
    """Whether the cluster's autoscaler starts nodes for these requests (it is asked for them, once each).

    The answer is read from the autoscaler's own status (GCS key ``__autoscaling_status``, written after every
    update): a launch or a node pending, a node of a launcher node type more than before (a provider that starts
    nodes at once, such as ``fake_multinode``), or an alive node now holding all of them. A cluster started
    without a launcher config (its autoscaler is read-only) launches nothing: the nodes it lists (anonymous
    ``node_<id>`` types) are ones that joined by themselves -- the head registering after the first update, a
    worker started by hand -- and no answer; after the first autoscaler update that read the request (Ray's
    default: every 5 s) the answer is no.
    """
    from ray.autoscaler.sdk import request_resources

    before = _autoscaler_status()
    if before is None:
        return False  # no autoscaler reports on this cluster
    launched = _launched(before)
    request_resources(bundles=needs)
    asked = time.time()
    try:
        deadline = time.monotonic() + AUTOSCALER_PROBE_S
        seen = {before.get("time")}
        while time.monotonic() < deadline:
            nodes = _alive_nodes()
            if all(_fits(need, nodes) for need in needs):
                return True
            status = _autoscaler_status() or {}
            report = status.get("autoscaler_report") or {}
            if report.get("pending_launches") or report.get("pending_nodes") or _launched(status) - launched:
                return True
            seen.add(status.get("time"))
            if len(seen) > AUTOSCALER_UPDATES or (status.get("time") or 0) > asked + CLOCK_MARGIN_S:
                return False
            time.sleep(0.25)
        return False
    finally:
        request_resources(bundles=[])  # the trials' own requests keep the nodes from here on


def _autoscaler_status() -> dict[str, Any] | None:
    from ray.experimental.internal_kv import _internal_kv_get

    raw = _internal_kv_get(ray._private.ray_constants.DEBUG_AUTOSCALING_STATUS)
    return json.loads(raw) if raw else None


def _launched(status: dict[str, Any]) -> set[tuple[str, str]]:
    """The nodes of launcher node types the autoscaler's provider has (address, type); a read-only autoscaler's
    nodes (anonymous types ``node_<hex id>``) are left out."""
    mapping = (status.get("autoscaler_report") or {}).get("node_type_mapping") or {}
    return {(ip, kind) for ip, kind in mapping.items() if not READONLY_NODE_TYPE.fullmatch(str(kind))}


def describe_resources(resources: dict[str, float]) -> str:
    parts = []
    for key in ("CPU", "GPU", "memory", "cpu", "gpu"):
        if key in resources:
            value = resources[key]
            parts.append(f"{value / 2**30:.1f} GB memory" if key == "memory" else f"{value:g} {key.upper()}")
    return ", ".join(parts) or "nothing"


# ----------------------------------------------------------------------------------------------------------
# the Ray instance


def node_address() -> str:
    """This node's address in the Ray cluster (what other nodes reach it by)."""
    return ray.util.get_node_ip_address()


def shutdown() -> None:
    ray.shutdown()


# environment variables a driver joining a cluster hands its trials (through Ray's runtime_env): MLflow's
# credentials (a server with basic auth) and HTTP retry settings, sepray's tracking retry window, and what the
# trials need to copy a remote data.path (s3:// credentials, region, an S3-compatible endpoint; gs:// key file)
FORWARDED_ENV = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "SEPRAY_TRACKING_RETRY_SECONDS",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "GOOGLE_APPLICATION_CREDENTIALS",
)
ZERO_GPU_OVERRIDE = "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"  # "1": a task of 0 GPUs gets CUDA_VISIBLE_DEVICES=""
CONNECT_TIMEOUT_S = 5.0  # to find that nothing listens at a cluster's address (Ray itself waits minutes)


def check_reachable(address: str) -> None:
    """SweepError unless something accepts a TCP connection at the cluster's GCS address (``auto``: the cluster
    this machine belongs to); Ray's own ``ray.init`` would retry for minutes against a port with no Ray."""
    import socket

    from ray._private.services import canonicalize_bootstrap_address

    if address.startswith("ray://"):
        return  # Ray client: ray.init reports an unreachable server itself
    try:
        gcs = canonicalize_bootstrap_address(address)
    except (ConnectionError, ValueError) as exc:
        raise SweepError(
            f"cannot join the Ray cluster at {address}: {str(exc).strip().splitlines()[0]}"
        ) from None
    if gcs is None:
        return
    host, _, port = gcs.rpartition(":")
    if not (port.isdigit() and 0 < int(port) < 65536):
        raise SweepError(
            f"--address {address}: expected HOST:PORT with a port number (1-65535), got {port!r}"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise SweepError(
            f"cannot join the Ray cluster at {address}: nothing accepts connections at {gcs} "
            f"({exc.strerror or exc}); is the head up (`ray start --head --port {port or 6379}`)?"
        ) from None


def create_local_token() -> Path | None:
    """Write the token a new local Ray instance authenticates with, owner-only, when Ray would write one.

    A local ``ray.init()`` turns on token authentication (unless ``RAY_AUTH_MODE`` says otherwise) and, when it
    finds no token, writes ``~/.ray/auth_token`` with the default umask: 0644, readable by every user of the
    machine. sepray writes it first, 0600 (its folder 0700 when new), where Ray reads it: ``RAY_AUTH_TOKEN_PATH``
    or ``~/.ray/auth_token``. A token that exists (or ``RAY_AUTH_TOKEN``) is left as it is. Returns the new file.
    """
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token" or os.environ.get("RAY_AUTH_TOKEN"):
        return None
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()
    if path.exists():
        return None
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process wrote it meanwhile
        return None
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))  # Ray's own format: 256 random bits in hex
    return path


def init_ray(address: str | None, num_cpus: int | None) -> None:
    """Start a fresh local Ray instance (``address=None``) or join the cluster at ``address``."""
    if ray.is_initialized():
        return
    # a trial that asked for no GPU must not see the node's GPUs (it would train on one Ray never gave it):
    # Ray 2.60 leaves CUDA_VISIBLE_DEVICES alone for a task of 0 GPUs unless told to set it to "" (ray#54868)
    hide = {ZERO_GPU_OVERRIDE: os.environ.get(ZERO_GPU_OVERRIDE, "1")}
    try:
        if address is None:
            os.environ.update(hide)  # the local instance's raylet, and so its workers, inherit it
            create_local_token()
            # a fresh local instance, never a cluster that happens to run on this machine
            # and one that other machines are not told of: its node address is the loopback (what Ray still
            # opens on all interfaces is listed in the README, guarded by Ray's token authentication)
            ray.init(
                address="local",
                num_cpus=num_cpus,
                include_dashboard=False,
                _node_ip_address=LOCAL_NODE_ADDRESS,
            )
        else:
            check_reachable(address)
            # the trials on other nodes need the driver's tracking credentials and retry settings
            env = {k: v for k, v in os.environ.items() if k in FORWARDED_ENV}
            ray.init(address=address, runtime_env={"env_vars": {**env, **hide}})
    except SweepError:
        raise
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = "a local Ray instance" if address is None else f"the Ray cluster at {address}"
        hint = ""
        if address not in (None, "auto") and not os.environ.get("RAY_AUTH_MODE"):
            # Ray sends its token to an explicitly named address only when told to
            hint = (
                "; if that cluster uses token authentication (Ray's default when its head has a token), "
                "set RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN or ~/.ray/auth_token"
            )
        raise SweepError(f"cannot start or join {where}: {str(exc).strip().splitlines()[0]}{hint}") from None
