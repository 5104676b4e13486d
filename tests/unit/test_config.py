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
    assert env.gateway_bind is None
    environments(env_yaml(ONE_HOST, "gateway_bind: 10.0.1.11\n"))
    assert load_environment("test").gateway_bind == "10.0.1.11"
    environments(env_yaml(ONE_HOST))
    env = load_environment("test")
    assert (env.project, env.deploy_path, env.topology, env.command_timeout) == \
        ("jafar", "/opt/jafar", "single", 600)
    assert env.hosts[0].ssh.user == "admin" and env.hosts[0].ssh.port == 2222


def test_aws_block_and_secret_sources(environments, capsys):
    environments(env_yaml(ONE_HOST))
    env = load_environment("test")
    assert env.aws is None and env.secrets.kind == "file" and not env.secrets.stored
    environments(env_yaml(ONE_HOST, "aws: {region: eu-west-1, profile: ops, endpoint_url: "
                                    "'http://127.0.0.1:5999'}\nsecrets: {ssm: /jafar/t}\n"))
    env = load_environment("test")
    assert (env.aws.region, env.aws.profile, env.aws.endpoint_url) == (
        "eu-west-1", "ops", "http://127.0.0.1:5999")
    assert (env.secrets.kind, env.secrets.name) == ("ssm", "/jafar/t/")
    assert env.secrets.describe() == "SSM parameters under /jafar/t/"
    assert (env.aws.instance_tags, env.aws.role_tag, env.aws.alb) == (
        {"jafar-env": "test"}, "jafar-role", None)
    environments(env_yaml(ONE_HOST, "aws: {region: eu-west-1, instance_tags: {app: jafar, "
                                    "stage: t}, role_tag: role, alb: {name: lb-1, "
                                    "target_group: core-1}}\n"))
    env = load_environment("test")
    assert (env.aws.instance_tags, env.aws.role_tag) == ({"app": "jafar", "stage": "t"}, "role")
    assert (env.aws.alb.name, env.aws.alb.target_group) == ("lb-1", "core-1")
    assert capsys.readouterr().err == ""


def test_the_old_aws_region_key_is_read_with_a_notice(environments, capsys):
    environments(env_yaml(ONE_HOST, "log_driver: awslogs\nawslogs_group: /jafar/t\n"
                                    "aws_region: eu-west-1\n"))
    env = load_environment("test")
    assert env.aws.region == "eu-west-1" and env.awslogs_group == "/jafar/t"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "aws_region is read, but move it to aws: {region: " \
        "'eu-west-1'}" in err


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
     "environments.test.deploy_path: must be a dedicated folder under /opt or /srv"),
    (ONE_HOST, "tag: 'bad tag'\n", "environments.test.tag: invalid value 'bad tag'"),
    (ONE_HOST, "log_driver: awslogs\n",
     "environments.test.awslogs_group: missing; log_driver awslogs needs awslogs_group"),
    (ONE_HOST, "log_driver: awslogs\nawslogs_group: /jafar/t\n",
     "environments.test.aws: missing; log_driver awslogs needs the region"),
    (ONE_HOST, "aws: {region: eu-nowhere-9}\n",
     "environments.test.aws.region: unknown region 'eu-nowhere-9'"),
    (ONE_HOST, 'aws: {region: "eu-west-1\\n"}\n',
     "environments.test.aws.region: invalid value 'eu-west-1\\n'"),
    (ONE_HOST, "aws: {region: eu-west-1, access_key: AKIA}\n",
     "environments.test.aws.access_key: unknown key"),
    (ONE_HOST, "aws: {region: eu-west-1, endpoint_url: 'ftp://x'}\n",
     "environments.test.aws.endpoint_url: invalid value 'ftp://x'"),
    (ONE_HOST, "secrets: {manager: jafar/t}\n",
     "environments.test.secrets.manager: needs an aws: block"),
    (ONE_HOST, "aws: {region: eu-west-1}\nsecrets: {manager: jafar/t, ssm: /jafar/t/}\n",
     "environments.test.secrets: name one store"),
    (ONE_HOST, "aws: {region: eu-west-1}\nsecrets: {ssm: 'jafar/t'}\n",
     "environments.test.secrets.ssm: invalid value 'jafar/t'"),
    (ONE_HOST, "aws: {region: eu-west-1}\nsecrets: {vault: kv/jafar}\n",
     "environments.test.secrets.vault: unknown key"),
    (ONE_HOST, "aws: {region: eu-west-1, instance_tags: []}\n",
     "environments.test.aws.instance_tags: must be a mapping of tag: value"),
    (ONE_HOST, "aws: {region: eu-west-1, alb: {name: 'lb 1', target_group: tg}}\n",
     "environments.test.aws.alb.name: invalid value 'lb 1'"),
    (ONE_HOST, "registry: 123456789012.dkr.ecr.eu-west-1.amazonaws.com/jafar\n",
     "environments.test.aws: missing; the registry is ECR"),
    (ONE_HOST, "rotate_after_days: 0\n",
     "environments.test.rotate_after_days: must be an integer from 1 to 3650"),
    (ONE_HOST, "compose_profiles: [kibana]\n",
     "environments.test.compose_profiles[0]: must be one of grafana"),
    (ONE_HOST, "backup_at: '25:00'\n",
     "environments.test.backup_at: invalid value '25:00'; a UTC time like 02:30"),
    (ONE_HOST, "gateway_bind: '::1'\n",
     "environments.test.gateway_bind: '::1' is not an IPv4 address"),
    (ONE_HOST, "gateway_bind: lb.example\n",
     "environments.test.gateway_bind: 'lb.example' is not an IPv4 address; use the core host's "
     "private address"),
    (ONE_HOST.replace("[data, core]", "[data]") + "  private_address: 10.0.2.10\n"
     + ONE_HOST.replace("h1", "h2").replace("[data, core]", "[core]")
     + ONE_HOST.replace("h1", "h3").replace("[data, core]", "[core]"),
     "topology: split\ngateway_bind: 10.0.1.11\n",
     "environments.test.gateway_bind: names one address, but there are 2 core hosts; write "
     "private"),
    (ONE_HOST.replace("[data, core]", "[data]") + "  private_address: 10.0.2.10\n"
     + ONE_HOST.replace("h1", "h2").replace("[data, core]", "[core]")
     + "  private_address: 10.0.1.12\n"
     + ONE_HOST.replace("h1", "h3").replace("[data, core]", "[core]"),
     "topology: split\ngateway_bind: private\n",
     "environments.test.gateway_bind: is private, but core host h3 has no IPv4 private_address; "
     "give it one"),
    (ONE_HOST, "protected: true\n",
     "environments.test.alerting: a protected environment needs receivers that page someone "
     "(webhooks, sns_topic or email) and a watchdog URL"),
    (ONE_HOST, "protected: true\nalerting: {webhooks: ['https://o.example/a']}\n",
     "environments.test.alerting: a protected environment needs receivers"),
    (ONE_HOST, "alerting: {webhooks: https://o.example/a}\n",
     "environments.test.alerting.webhooks: must be a list of URLs"),
    (ONE_HOST, "alerting: {email: {to: [a@b.example], from: c@d.example}}\n",
     "environments.test.alerting.email: needs to, from and smarthost (host:port)"),
    (ONE_HOST, "alerting: {email: {to: nobody, from: c@d.example, smarthost: 'm:25'}}\n",
     "environments.test.alerting.email.to[0]: invalid value 'nobody'; an e-mail address"),
    (ONE_HOST, "alerting: {sns_topic: 'arn:aws:sqs:eu-west-1:123456789012:q'}\n",
     "environments.test.alerting.sns_topic: invalid value"),
    (ONE_HOST, "alerting: {group_wait: 30}\n",
     "environments.test.alerting.group_wait: must be a non-empty string"),
    (ONE_HOST, "alerting: {pager: x}\n", "environments.test.alerting.pager: unknown key"),
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


def test_log_forward_is_validated_before_anything(environments, tmp_path):
    from tests.support import throwaway_tls
    tls = throwaway_tls.make(tmp_path, "logs.internal")
    block = ("host:\n  log_forward: {target: 'logs.internal:6514', name: logs.internal, "
             f"ca: '{tls['ca']}'}}\n")
    environments(env_yaml(ONE_HOST, block))
    forward = load_environment("test").host_setup.log_forward
    assert (forward.address, forward.port, forward.name, forward.ca) == (
        "logs.internal", 6514, "logs.internal", tls["ca"])
    for bad, message in [
        (block.replace("logs.internal:6514", "logs.internal"), "log_forward.target: use host:port"),
        (block.replace(":6514", ":70000"), "log_forward.target: use host:port"),
        (block.replace("name: logs.internal, ", ""), "log_forward.name: missing"),
        (block.replace(str(tls["ca"]), str(tls["key"])), "is not a PEM certificate"),
        (block.replace(str(tls["ca"]), str(tmp_path / "none.crt")), "does not exist"),
    ]:
        environments(env_yaml(ONE_HOST, bad))
        with pytest.raises(BadInput, match=message) as exc:
            load_environment("test")
        assert "PRIVATE" not in str(exc.value) and "\n" not in str(exc.value)


def test_bad_values_are_cut_and_odd_digits_refused(environments, tmp_path):
    environments(env_yaml(ONE_HOST, f"private_cidr: '{'1' * 5000}'\n"))
    with pytest.raises(BadInput) as exc:
        load_environment("test")
    assert len(str(exc.value)) < 300 and "is not a CIDR" in str(exc.value)
    from tests.support import throwaway_tls
    tls = throwaway_tls.make(tmp_path, "logs.internal")
    environments(env_yaml(ONE_HOST, f"host:\n  log_forward: {{target: 'x:\u00b2', name: x, "
                                    f"ca: '{tls['ca']}'}}\n"))
    with pytest.raises(BadInput, match="log_forward.target: use host:port"):
        load_environment("test")


def test_a_pins_file_with_aliases_is_refused(environments, tmp_path):
    pins = tmp_path / "pins.yml"
    pins.write_text("a: &x [1, 2]\nNGINX_IMAGE: *x\n")
    environments(env_yaml(ONE_HOST, f"pins: {pins}\n"))
    with pytest.raises(BadInput, match="anchors and aliases"):
        load_environment("test")


def test_an_adhoc_target_without_registry_says_where_to_set_it(environments):
    environments("environments: {}\n")
    with pytest.raises(BadInput, match="registry: missing; an ad-hoc target takes it from "
                                       "defaults: or the adhoc: block"):
        load_environment("deploy@10.1.2.3")


@pytest.mark.parametrize("url", [
    "https://hooks.example/services/T0?token=canary-8f2d1c",
    "https://user:canary-8f2d1c@hooks.example/x",
    "https://hooks.example/x#canary-8f2d1c",
])
def test_an_alerting_url_with_credentials_is_refused_without_showing_it(environments, url):
    path = environments(env_yaml(ONE_HOST, f"alerting: {{watchdog: '{url}'}}\n"))
    with pytest.raises(BadInput) as exc:
        load_environment("test")
    assert str(exc.value) == (
        f"{path}: environments.test.alerting.watchdog: must be an http(s) URL without user, "
        "password or query (e.g. https://oncall.internal.example/alertmanager) (the value is "
        "not shown)")
    assert "canary" not in str(exc.value)
