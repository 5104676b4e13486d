"""Day-2 commands refuse bad input before contacting anything (exit 2, one line), and the
default environment can come from Invoke's configuration instead of --host."""

from __future__ import annotations

import pytest

from tests.cli.conftest import assert_bad_input
from tests.conftest import PROTECTED, clean_environment, run_inv


@pytest.mark.parametrize("spec, message", [
    ("api=abc", "the count must be a whole number from 1 to 10, or default"),
    ("api=-1", "the count must be a whole number from 1 to 10, or default"),
    ("api=1000000", "api=1000000 is out of range; counts are 1 to 10"),
    ("mongo-primary=2", "mongo-primary does not scale"),
    ("gateway=2", "gateway does not scale"),
    ("nosuch=2", "unknown service 'nosuch'; services: api, auth, wallet"),
    ("api=3,api=4", "api is given twice"),
    ("api = 3", "'api = 3' is not SERVICE=COUNT"),
    ("", "nothing to scale"),
    ("api=0", "api-service = 0 takes it out of the gateway (its route answers 503); add "
              "--allow-zero"),
])
def test_scale_bad_input(setup, listener, spec, message):
    r = run_inv("scale", spec, "--host", "test", env=setup())
    assert_bad_input(r, listener, message)


def test_scale_above_the_environments_maximum(setup, listener):
    r = run_inv("scale", "api=5", "--host", "test", env=setup(extra="max_replicas: 4\n"))
    assert_bad_input(r, listener, "api=5 is out of range; counts are 1 to 4 (max_replicas)")


@pytest.mark.parametrize("args, message", [
    (["logs", "api; cat /etc/shadow"], "logs: unknown service 'api; cat /etc/shadow'"),
    (["logs", "api-service", "--since", "yesterday"], "--since 'yesterday' is not a duration"),
    (["logs", "api-service", "--tail", "-5"], "--tail '-5' must be a number of lines"),
    (["lock.status", "--name", "other"], "--name must be one of deploy, backup"),
    (["audit.show", "--since", "1 week"], "--since '1 week' is not a duration like 30m"),
    (["release", "--tag", "v1;reboot"], "release: --tag 'v1;reboot' is not a Docker tag"),
    (["release"], "release: --tag is required"),
    (["release", "--tag", "v2", "--services", "api,gateway"],
     "--services: unknown service 'gateway'"),
    (["rollback", "--to", "../v1"], "rollback: --to '../v1' is not a Docker tag"),
    (["monitor.status", "--timeout", "0"], "--timeout must be from 1 to 3600 seconds, got 0"),
    (["backup.list", "--timeout", "0"], "--timeout must be from 1 to 3600 seconds, got 0"),
    (["restore"], "--from is required: the backup id to restore"),
    (["restore", "--from", "../etc"], "--from '../etc' is not a backup id"),
    (["backup.verify", "--from", "x;reboot"], "--from 'x;reboot' is not a backup id"),
    (["restore", "--from", "20261203T101500Z", "--only", "ledger,postgres"],
     "--only names postgres: choose from ledger, redis, mongo"),
])
def test_read_only_tasks_bad_input(setup, listener, args, message):
    r = run_inv(*args, "--host", "test", env=setup())
    assert_bad_input(r, listener, message)


def test_missing_host_names_both_ways_to_set_it(setup, listener):
    r = run_inv("ps", env=setup())
    assert_bad_input(r, listener, "--host is required", "jafar.host in invoke.yaml",
                     "INVOKE_JAFAR_HOST", "FABRIC_JAFAR_HOST")


def test_the_environment_comes_from_invoke_configuration(setup, listener, tmp_path):
    env = setup()
    by_var = run_inv("health", env={**env, "INVOKE_JAFAR_HOST": "prdo"})
    assert_bad_input(by_var, listener, "unknown environment 'prdo'")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".invoke.yaml").write_text("jafar:\n  host: from-home\n")
    by_file = run_inv("health", env={**env, "HOME": str(home)})
    assert_bad_input(by_file, listener, "unknown environment 'from-home'")
    both = run_inv("health", env={**env, "HOME": str(home), "INVOKE_JAFAR_HOST": "from-var"})
    assert_bad_input(both, listener, "unknown environment 'from-var'")
    flag = run_inv("health", "--host", "from-flag", env={**env, "INVOKE_JAFAR_HOST": "x"})
    assert_bad_input(flag, listener, "unknown environment 'from-flag'")


def test_fab_reads_its_own_configuration(setup, listener):
    r = run_inv("health", env={**setup(), "FABRIC_JAFAR_HOST": "fab-env"}, program="fab")
    assert_bad_input(r, listener, "unknown environment 'fab-env'")


def test_a_protected_environment_from_configuration_still_asks(setup, listener):
    env = setup(extra=PROTECTED)
    r = run_inv("data.up", env={**env, "INVOKE_JAFAR_HOST": "test"})
    assert_bad_input(r, listener, "test is protected", "pass --yes")


def test_the_operators_configuration_does_not_leak_into_tests(monkeypatch):
    monkeypatch.setenv("INVOKE_JAFAR_HOST", "prod")
    env = clean_environment()
    assert "INVOKE_JAFAR_HOST" not in env and env["HOME"].startswith("/")


def test_tls_data_needs_a_tls_dir(setup, listener):
    r = run_inv("tls.data", "--host", "test", env=setup())
    assert_bad_input(r, listener, "environment test has no tls_dir")


def test_a_rotation_on_a_protected_environment_needs_a_confirmation(setup, listener, tmp_path):
    tls = tmp_path / "tls"
    r = run_inv("tls.data", "--rotate", "--host", "test",
                env=setup(extra=f"tls_dir: {tls}\n{PROTECTED}"))
    assert_bad_input(r, listener, "test is protected and there is no terminal to confirm "
                     "rotate the data plane's CA and certificate; pass --yes")
    assert not tls.exists(), "nothing was made"


def test_a_protected_environment_without_pins_is_refused(setup, listener, tmp_path):
    (tmp_path / "pins.yml").write_text("")
    r = run_inv("core.up", "--yes", "--host", "test", env=setup(extra=PROTECTED))
    assert_bad_input(r, listener, "pins.yml are not current: ALERTMANAGER_IMAGE "
                     "(prom/alertmanager:v0.27.0) has no pin (and 5 more)",
                     "run inv images.pin --host test")


def test_a_pin_for_another_tag_is_refused(setup, listener, tmp_path):
    pins = tmp_path / "pins.yml"
    pins.write_text(f"NGINX_IMAGE: nginx:1.25.0@sha256:{'a' * 64}\n")
    r = run_inv("core.up", "--host", "test", env=setup())
    assert_bad_input(r, listener, "NGINX_IMAGE is pinned to nginx:1.25.0 but the environment "
                     "runs nginx:1.27.3")


@pytest.mark.parametrize("text, message", [
    ("NGINX_IMAGE: nginx:1.27.3\n", "pins.yml: NGINX_IMAGE: invalid value"),
    ("SHELL_IMAGE: x@sha256:" + "0" * 64 + "\n", "pins.SHELL_IMAGE: unknown key"),
    ("[1, 2]\n", "pins: must be a mapping"),
])
def test_a_malformed_pins_file_is_refused_by_key(setup, listener, tmp_path, text, message):
    (tmp_path / "pins.yml").write_text(text)
    r = run_inv("health", "--host", "test", env=setup())
    assert_bad_input(r, listener, message)


@pytest.mark.parametrize(("extra", "message"), [
    ("protected: true\n", "test.alerting: a protected environment needs receivers that page "
     "someone"),
    ("alerting: {watchdog: 'https://deadman.example/p?token=canary-51ab'}\n",
     "test.alerting.watchdog: must be an http(s) URL without user, password or query"),
    ("backup_snapshots: true\n", "test.backup_snapshots: needs an aws: block"),
])
def test_alerting_and_snapshot_settings_are_bad_input_before_any_connection(
        setup, listener, extra, message):
    r = run_inv("monitor.status", "--host", "test", env=setup(extra=extra))
    assert_bad_input(r, listener, message)
    assert "canary" not in r.stdout + r.stderr


RECIPIENT = "age1a67kuxhlm3yayee258tprq7svxr63jqylew2spzh5m6z5063aduswel5c6"
S3_BLOCK = ("backup_s3: {bucket: jafar-test-backups, prefix: test, kms_key: alias/jafar-backups, "
            f"age_recipient: {RECIPIENT}, age_identity: jafar/test/backup-age}}\n")


@pytest.mark.parametrize(("extra", "message"), [
    (S3_BLOCK, "test.backup_s3: needs an aws: block"),
    ("aws: {region: eu-west-1}\nbackup_s3: {bucket: jafar-test-backups, prefix: test}\n",
     "test.backup_s3: needs age_identity, age_recipient, kms_key"),
    ("aws: {region: eu-west-1}\n" + S3_BLOCK.replace(RECIPIENT, "AGE-SECRET-KEY-1CANARY"),
     "test.backup_s3.age_recipient: is an age identity (a private key): put its public key "
     "here"),
    ("aws: {region: eu-west-1}\n" + S3_BLOCK.replace(RECIPIENT, "age1canary"),
     "test.backup_s3.age_recipient: is not an age public key"),
    ("aws: {region: eu-west-1}\n" + S3_BLOCK.replace("jafar-test-backups", "Bad_Bucket"),
     "test.backup_s3.bucket: invalid value 'Bad_Bucket'; an S3 bucket name"),
    ("aws: {region: eu-west-1}\n" + S3_BLOCK.replace("prefix: test", "prefix: /test/"),
     "test.backup_s3.prefix: invalid value '/test/'; a key prefix like prod"),
    ("aws: {region: eu-west-1}\n" + S3_BLOCK.replace("alias/jafar-backups", "jafar-backups"),
     "test.backup_s3.kms_key: invalid value 'jafar-backups'; a KMS key"),
])
def test_backup_s3_settings_are_bad_input_before_any_connection(
        setup, listener, extra, message):
    r = run_inv("backup.list", "--host", "test", env=setup(extra=extra))
    assert_bad_input(r, listener, message)
    assert "canary" not in (r.stdout + r.stderr).lower()


@pytest.mark.parametrize("args", [("backup.upload",),
                                  ("backup.fetch", "--from", "20261201T000000Z")])
def test_offsite_tasks_need_a_backup_s3_block(setup, listener, args):
    r = run_inv(*args, "--host", "test", env=setup())
    assert_bad_input(r, listener, "environment test has no backup_s3: block, so there is no copy "
                     "in S3")


def test_a_fetch_needs_an_id(setup, listener):
    r = run_inv("backup.fetch", "--host", "test", env=setup())
    assert_bad_input(r, listener, "--from is required: the backup id to fetch")
