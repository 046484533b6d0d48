"""The Ray instance of a sweep: start a local one or join a cluster, what a trial asks of it and whether any
node can ever hold one.
"""

from __future__ import annotations

import os

import ray

from sepray.errors import SweepError
from sepray.sweep.spec import SweepSpec

LOCAL_NODE_ADDRESS = "127.0.0.1"  # the node address of a local Ray instance


def trial_request(spec: SweepSpec) -> dict[str, float]:
    """The resources one trial asks Ray for."""
    request = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    if spec.resources.memory_gb:
        request["memory"] = spec.resources.memory_gb * 2**30
    return request


def check_schedulable(spec: SweepSpec) -> None:
    """SweepError naming what is missing unless some alive node of the cluster can ever hold one trial."""
    need = {"CPU": spec.resources.cpu, "GPU": spec.resources.gpu, "memory": spec.resources.memory_gb * 2**30}
    need = {k: v for k, v in need.items() if v > 0}
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(all(node.get(k, 0.0) >= v for k, v in need.items()) for node in nodes):
        return
    best = {k: max((node.get(k, 0.0) for node in nodes), default=0.0) for k in need}
    missing = [k for k, v in need.items() if best[k] < v]
    raise SweepError(
        f"{spec.label}: resources: a trial needs {describe_resources(need)}, but no node of the Ray cluster has that "
        f"(the largest offer {describe_resources(best)}); short of {', '.join(missing) or 'one node with all of it'}: "
        "lower resources.* (--set resources.cpu=1) or add nodes"
    )


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
# credentials (a server with basic auth) and HTTP retry settings, and sepray's tracking retry window
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
)
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
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except (OSError, ValueError) as exc:
        raise SweepError(
            f"cannot join the Ray cluster at {address}: nothing accepts connections at {gcs} "
            f"({exc.strerror or exc}); is the head up (`ray start --head --port {port or 6379}`)?"
        ) from None


def init_ray(address: str | None, num_cpus: int | None) -> None:
    """Start a fresh local Ray instance (``address=None``) or join the cluster at ``address``."""
    if ray.is_initialized():
        return
    try:
        if address is None:
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
            ray.init(address=address, runtime_env={"env_vars": env} if env else None)
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
