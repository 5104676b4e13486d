"""Loading and validating config/environments.yml."""

from __future__ import annotations

import pytest

from fabfile.config import load_environment
from fabfile.errors import BadInput
from tests.conftest import env_yaml, shipped

ONE_HOST = """\
- name: h1
  address: 127.0.0.1
  port: 2222
  user: admin
  key: /tmp/none
  roles: [data, core]
"""


def test_shipped_environments_load():
    prod = shipped("prod")
    assert prod.protected and prod.topology == "split"
    assert [h.name for h in prod.hosts] == ["prod-data-1", "prod-core-1", "prod-core-2"]
    assert prod.data_host.private_address == "10.0.2.10"
    assert prod.bastion is not None and prod.bastion.address == "203.0.113.10"
    sandbox = shipped("sandbox")
    assert sandbox.hosts[0].ssh.port == 2222 and sandbox.hosts[0].roles == ("data", "core")
    assert shipped("staging").deploy_path == "/opt/jafar"


def test_defaults_and_values(environments):
    environments(env_yaml(ONE_HOST))
    env = load_environment("test")
    assert (env.project, env.deploy_path, env.topology, env.command_timeout) == \
        ("jafar", "/opt/jafar", "single", 600)
    assert env.hosts[0].ssh.user == "admin" and env.hosts[0].ssh.port == 2222


def test_adhoc_target_uses_defaults(environments):
    environments("defaults:\n  registry: r.example/jafar\n  tag: t9\nenvironments: {}\n")
    env = load_environment("ubuntu@10.1.2.3:2200")
    host = env.hosts[0]
    assert (host.ssh.user, host.ssh.address, host.ssh.port) == ("ubuntu", "10.1.2.3", 2200)
    assert host.roles == ("data", "core") and env.tag == "t9" and host.name == "10-1-2-3"


@pytest.mark.parametrize("hosts, extra, message", [
    (ONE_HOST.replace("2222", "70000"), "",
     "environments.test.hosts[0].port: must be an integer from 1 to 65535, got 70000"),
    (ONE_HOST.replace("2222", "ssh"), "",
     "environments.test.hosts[0].port: must be an integer from 1 to 65535, got 'ssh'"),
    (ONE_HOST.replace("[data, core]", "[web]"), "",
     "environments.test.hosts[0].roles[0]: must be one of data, core, got 'web'"),
    (ONE_HOST.replace("address: 127.0.0.1", "address: 'bad host!'"), "",
     "environments.test.hosts[0].address: 'bad host!' is neither an IP address nor a host name"),
    (ONE_HOST + "  colour: red\n", "",
     "environments.test.hosts[0].colour: unknown key"),
    (ONE_HOST, "topology: split\n",
     "environments.test.topology: split keeps data alone"),
    (ONE_HOST.replace("[data, core]", "[data]") + ONE_HOST.replace("h1", "h2")
     .replace("[data, core]", "[core]"), "topology: split\n",
     "split topology: data host h1 needs private_address"),
    (ONE_HOST, "deploy_path: opt/jafar\n",
     "environments.test.deploy_path: must be an absolute path"),
    (ONE_HOST, "tag: 'bad tag'\n", "environments.test.tag: invalid value 'bad tag'"),
    (ONE_HOST, "log_driver: awslogs\n",
     "environments.test.awslogs_group: missing; log_driver awslogs needs awslogs_group"),
    (ONE_HOST, "compose_profiles: [kibana]\n",
     "environments.test.compose_profiles[0]: must be one of grafana"),
])
def test_invalid_values_name_file_key_and_fix(environments, hosts, extra, message):
    path = environments(env_yaml(hosts, extra))
    with pytest.raises(BadInput) as exc:
        load_environment("test")
    text = str(exc.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text


def test_unknown_environment_lists_the_known_ones(environments):
    environments(env_yaml(ONE_HOST))
    with pytest.raises(BadInput, match=r"unknown environment 'nope': choose one of test"):
        load_environment("nope")


def test_malformed_yaml_names_the_line(environments):
    path = environments("environments:\n  test: [unclosed\n")
    with pytest.raises(BadInput, match=rf"{path}: malformed YAML at line 3"):
        load_environment("test")


def test_overlay_overrides_the_environment_when_present(environments, tmp_path):
    overlay = tmp_path / "overlay.yml"
    environments(env_yaml(ONE_HOST, f"overlay: {overlay}\n"))
    assert load_environment("test").tag == "t1"  # no overlay file yet: the config alone
    overlay.write_text("tag: abc123\nhosts:\n  - {name: s1, address: 127.0.0.1, port: 2299, "
                       "user: admin, key: /k, roles: [data, core]}\n")
    env = load_environment("test")
    assert env.tag == "abc123" and env.hosts[0].ssh.port == 2299
    overlay.write_text("colour: red\n")
    with pytest.raises(BadInput, match=rf"{overlay}: overlay.colour: unknown key"):
        load_environment("test")
