"""userns-remap (host.userns_remap): the daemon setting, the remap user's id range, the guard
that refuses to switch on a host with data, whom a secret's ACL names, and host.check's line."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace

import pytest

from fabfile.commands import host as cmd
from fabfile.config import USERNS_BASE, load_environment
from fabfile.errors import BadInput
from fabfile.hosts import check as hostcheck
from fabfile.hosts import setup as host
from fabfile.sync import secret_items
from tests.conftest import env_yaml, shipped
from tests.unit.test_config import ONE_HOST
from tests.unit.test_host import SAMPLE
from tests.unit.test_sync import env_with_file

SANDBOX = shipped("sandbox")
REMAPPED = replace(SANDBOX, host_setup=replace(SANDBOX.host_setup, userns_remap=True))


def test_the_setting_is_read_and_checked(environments):
    environments(env_yaml(ONE_HOST, "host: {userns_remap: true}\n"))
    assert load_environment("test").host_setup.userns_remap is True
    environments(env_yaml(ONE_HOST, "host: {userns_remap: maybe}\n"))
    with pytest.raises(BadInput, match="userns_remap"):
        load_environment("test")
    assert shipped("prod").host_setup.userns_remap is True  # production hosts start fresh


def test_daemon_json_names_the_remap_user_only_when_asked():
    assert "userns-remap" not in json.loads(host.daemon_json(SANDBOX))
    assert json.loads(host.daemon_json(REMAPPED))["userns-remap"] == "jafar-remap"


def test_the_remap_user_and_its_range_come_before_the_daemon_restarts():
    script = host.prepare_script(REMAPPED, REMAPPED.hosts[0])
    user = script.index(cmd.ensure_system_user("jafar-remap"))
    ranges = [script.index(cmd.ensure_subordinate_range(f, "jafar-remap", 231072, 65536))
              for f in ("/etc/subuid", "/etc/subgid")]
    assert user < min(ranges) and max(ranges) < script.index("/etc/docker/daemon.json")
    assert "jafar-remap" not in host.prepare_script(SANDBOX, SANDBOX.hosts[0])


def test_the_system_user_builder():
    assert cmd.ensure_system_user("jafar-remap") == (
        "if ! id -u jafar-remap >/dev/null 2>&1; then\n"
        "  useradd --system --no-create-home --shell /usr/sbin/nologin jafar-remap\n"
        "  echo 'CHANGED created user jafar-remap'\n"
        "fi")


def run_range(path, base: int = 231072) -> subprocess.CompletedProcess[str]:
    script = cmd.ensure_subordinate_range(str(path), "jafar-remap", base, 65536)
    return subprocess.run(["bash", "-c", "set -eu\n" + script], capture_output=True, text=True,
                          timeout=30, check=False)


def test_the_range_is_added_once_and_a_wrong_one_replaced(tmp_path):
    subuid = tmp_path / "subuid"
    subuid.write_text("admin:100000:65536\ndeploy:165536:65536\n")
    first = run_range(subuid)
    assert first.returncode == 0 and "CHANGED" in first.stdout
    again = run_range(subuid)
    assert (again.returncode, again.stdout) == (0, "")
    subuid.write_text("admin:100000:65536\njafar-remap:300000:1000\n")
    assert run_range(subuid).returncode == 0
    assert subuid.read_text() == "admin:100000:65536\njafar-remap:231072:65536\n"


def test_a_range_another_user_holds_is_refused_unchanged(tmp_path):
    subuid = tmp_path / "subuid"
    subuid.write_text("admin:100000:65536\ndeploy:165536:65536\nalice:231072:65536\n")
    before = subuid.read_text()
    r = run_range(subuid)
    assert r.returncode == 1
    assert r.stderr.strip() == (f"{subuid}: the ids 231072-296607 overlap alice's range; free "
                                "them or use another host")
    assert subuid.read_text() == before
    # touching the edges is not overlapping
    subuid.write_text("a:165536:65536\nb:296608:65536\n")
    assert run_range(subuid).returncode == 0


@pytest.mark.parametrize("env, probe, refused", [
    (REMAPPED, "remap=0 volumes=0 containers=0", None),          # a fresh host: switch
    (REMAPPED, "remap=1 volumes=7 containers=12", None),         # already on: nothing moves
    (SANDBOX, "remap=0 volumes=7 containers=12", None),          # off and staying off
    (REMAPPED, "remap=0 volumes=7 containers=12", "on"),         # data would vanish
    (REMAPPED, "remap=0 volumes=0 containers=1", "on"),          # a running host too
    (SANDBOX, "remap=1 volumes=3 containers=0", "off"),          # and back
])
def test_switching_is_refused_while_the_daemon_holds_data(env, probe, refused):
    why = host.remap_refusal(env, probe)
    if refused is None:
        assert why is None
        return
    assert why is not None and "\n" not in why
    assert why.startswith(f"refused to turn userns-remap {refused}: the Docker daemon holds ")
    assert "empty databases" in why and "host.userns_remap:" in why


def test_the_storage_probe_counts_every_root(tmp_path):
    # the probe's paths pointed at a scratch tree: the default root and a remapped one
    for sub in ("volumes/a", "volumes/b", "231072.231072/volumes/c", "containers/x"):
        (tmp_path / sub).mkdir(parents=True)
    (tmp_path / "volumes" / "metadata.db").write_text("")  # a file is not a volume
    probe = cmd.docker_storage_probe().replace("/var/lib/docker", str(tmp_path))
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    assert out.split() == ["remap=0", "volumes=3", "containers=1"]


def test_secrets_are_readable_by_the_remapped_uids(tmp_path):
    plain = {i.remote: i for i in secret_items(env_with_file(SANDBOX, tmp_path), SANDBOX.hosts[0])}
    mapped = {i.remote: i
              for i in secret_items(env_with_file(REMAPPED, tmp_path), REMAPPED.hosts[0])}
    assert plain["/opt/jafar/secrets/redis_password"].readers == (999, 1000)
    assert mapped["/opt/jafar/secrets/redis_password"].readers == (
        USERNS_BASE + 999, USERNS_BASE + 1000)
    assert mapped["/opt/jafar/secrets/gateway_tls_key"].readers == (USERNS_BASE,)


def test_host_check_wants_it_configured_and_in_effect():
    def line(sample: str):
        controls = hostcheck.evaluate(REMAPPED, REMAPPED.hosts[0], sample)
        return next(c for c in controls if c.control.startswith("docker userns-remap"))

    assert not any(c.control.startswith("docker userns-remap")
                   for c in hostcheck.evaluate(SANDBOX, SANDBOX.hosts[0], SAMPLE))
    assert not line(SAMPLE).ok
    configured = SAMPLE.replace('"live-restore": true', '"live-restore": true,\n'
                                '  "userns-remap": "jafar-remap"')
    assert (line(configured).ok, line(configured).actual) == (
        False, "configured, not in effect (restart docker)")
    running = configured.replace("logging=json-file", "logging=json-file security="
                                 '["name=seccomp,profile=builtin","name=userns"]')
    assert line(running).ok
