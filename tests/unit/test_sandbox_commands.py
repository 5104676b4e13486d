"""The local docker commands that build the sandbox, and its host layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabfile.commands import sandbox as cmd
from fabfile.errors import BadInput
from fabfile.local_sandbox import layout
from sandbox.hostflags import HOST_RUN_FLAGS


def test_network_and_registry():
    assert cmd.network_create() == ["docker", "network", "create", "--subnet", "172.30.99.0/24",
                                    "--label", "org.jafar.sandbox.role=network", "jafar-sandbox"]
    assert cmd.registry_run("jafar-sandbox/registry:abc") == [
        "docker", "run", "--detach", "--name", "jafar-sandbox-registry", "--restart",
        "unless-stopped", "--network", "jafar-sandbox", "--network-alias", "registry",
        "--publish", "127.0.0.1:5000:5000", "--volume",
        "jafar-sandbox-registry:/var/lib/docker-registry", "--label",
        "org.jafar.sandbox.role=registry", "jafar-sandbox/registry:abc"]


def test_host_run_publishes_on_loopback_only_and_ends_with_the_image():
    argv = cmd.host_run("jafar-sandbox-1", "img:1", Path("/s/seed"), "172.30.99.11",
                        ["127.0.0.1:2222:22", "127.0.0.1:8443:443"])
    assert argv[:3] == ["docker", "run", "--detach"] and argv[-1] == "img:1"
    assert all(flag in argv for flag in HOST_RUN_FLAGS)
    assert "--ip=172.30.99.11" in argv and "--volume=jafar-sandbox-1-docker:/var/lib/docker" in argv
    assert [a for a in argv if a.startswith("--publish=")] == [
        "--publish=127.0.0.1:2222:22", "--publish=127.0.0.1:8443:443"]


def test_push_and_remove():
    assert cmd.push("a:1", "127.0.0.1:5000/x:1") == [
        ["docker", "tag", "a:1", "127.0.0.1:5000/x:1"],
        ["docker", "push", "--quiet", "127.0.0.1:5000/x:1"]]
    assert cmd.remove(["h1", "r"]) == ["docker", "rm", "--force", "--volumes", "h1", "r"]


def test_layout():
    (one,) = layout(1)
    assert (one.name, one.roles, one.ssh_port, one.ip) == (
        "jafar-sandbox-1", ("data", "core"), 2222, "172.30.99.11")
    three = layout(3)
    assert [(h.name, h.roles, h.ssh_port) for h in three] == [
        ("jafar-sandbox-1", ("data",), 2222), ("jafar-sandbox-2", ("core",), 2223),
        ("jafar-sandbox-3", ("core",), 2224)]
    with pytest.raises(BadInput, match="--hosts must be from 1 to 9, got 0"):
        layout(0)


def test_the_sandbox_env_file_keeps_credentials_and_a_rotations_twin_users():
    from fabfile.local_sandbox import env_file_text

    old = {"LEDGER_DB_USER": "jafar_ledger_clone", "MONGO_APP_USER": "someone_else",
           "REDIS_PASSWORD": "kept-redis-password-0123"}
    lines = env_file_text(None, old).splitlines()
    assert "LEDGER_DB_USER=jafar_ledger_clone" in lines   # a rotation moved the services
    assert "MONGO_APP_USER=jafar_app" in lines            # not a twin: the sandbox's own name
    assert "REDIS_PASSWORD=kept-redis-password-0123" in lines
