"""Local docker command lines (argv lists) that build the sandbox: network, registry, hosts."""

from __future__ import annotations

from pathlib import Path

from sandbox.hostflags import host_run_args

NETWORK = "jafar-sandbox"
SUBNET = "172.30.99.0/24"  # the sandbox's own bridge network; only its containers live there
REGISTRY = "jafar-sandbox-registry"
REGISTRY_ALIAS = "registry"
REGISTRY_PORT = 5000
LABEL = "org.jafar.sandbox.role"
# the stand-in for the on-call endpoints (sandbox/images/alert-receiver): a fixed address on
# the sandbox network, which config/environments.yml's sandbox alerting: block names
RECEIVER = "jafar-sandbox-alert-receiver"
RECEIVER_IP = "172.30.99.5"
RECEIVER_PORT = 9095


def network_create() -> list[str]:
    return ["docker", "network", "create", "--subnet", SUBNET, "--label", f"{LABEL}=network",
            NETWORK]


def registry_run(image: str) -> list[str]:
    """The registry standing in for ECR: pushed to on loopback, pulled from as registry:5000."""
    return ["docker", "run", "--detach", "--name", REGISTRY, "--restart", "unless-stopped",
            "--network", NETWORK, "--network-alias", REGISTRY_ALIAS,
            "--publish", f"127.0.0.1:{REGISTRY_PORT}:5000",
            "--volume", f"{REGISTRY}:/var/lib/docker-registry",
            "--label", f"{LABEL}=registry", image]


def receiver_run(image: str) -> list[str]:
    """The alert receiver: reached by the hosts' Alertmanagers at RECEIVER_IP, read by the
    tests on loopback."""
    return ["docker", "run", "--detach", "--name", RECEIVER, "--restart", "unless-stopped",
            "--network", NETWORK, "--ip", RECEIVER_IP,
            "--publish", f"127.0.0.1:{RECEIVER_PORT}:{RECEIVER_PORT}",
            "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--label", f"{LABEL}=receiver", image]


def host_run(name: str, image: str, seed_dir: Path, ip: str, publish: list[str]) -> list[str]:
    """A test host: systemd, sshd and its own Docker daemon, published on loopback only."""
    args = host_run_args(seed_dir=seed_dir, docker_volume=f"{name}-docker", name=name,
                         hostname=name, network=NETWORK, labels={LABEL: "host"},
                         image=image)
    extra = [f"--ip={ip}"] + [f"--publish={p}" for p in publish]
    return ["docker", *args[:-1], *extra, args[-1]]


def push(local: str, remote: str) -> list[list[str]]:
    return [["docker", "tag", local, remote], ["docker", "push", "--quiet", remote]]


def remove(names: list[str]) -> list[str]:
    return ["docker", "rm", "--force", "--volumes", *names]
