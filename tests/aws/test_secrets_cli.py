"""inv secrets.push / pull / age as an operator runs them, against moto (the AWS stand-in):
keys named, values never shown, files private, bad input refused before AWS is asked."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta

import pytest

from fabfile import envsource
from fabfile.config import load_environment
from fabfile.ops import secrets as ops
from tests.conftest import ROOT, complete_env, env_yaml, run_inv
from tests.support import moto_server
from tests.unit.test_config import ONE_HOST

CANARY = "canary-51e0b7c3a9d24f18"


@pytest.fixture
def setup(environments, aws, tmp_path):
    """An environment whose values live in Secrets Manager (not created yet), and an env file."""
    config = environments(env_yaml(ONE_HOST, f"aws: {{region: eu-west-1, endpoint_url: "
                                             f"'{aws}'}}\nsecrets: {{manager: jafar/test}}\n"))
    source = tmp_path / "values.env"
    source.write_text(complete_env(CANARY))
    source.chmod(0o600)
    extra = {**moto_server.CREDENTIALS, "JAFAR_ENVIRONMENTS": str(config),
             "JAFAR_AUDIT_DIR": str(tmp_path / "audit")}
    return source, extra


def inv(extra, *args):
    result = run_inv(*args, "--host", "test", env=extra)
    assert CANARY not in result.stdout + result.stderr
    return result


def test_push_creates_then_changes_by_key_and_pull_writes_a_private_copy(setup, aws, tmp_path):
    source, extra = setup
    first = inv(extra, "secrets.push", "--from", str(source), "--yes")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Secrets Manager secret jafar/test (new): added: AUTH_JWT_SECRET" in first.stdout
    assert "written as arn:aws:" in first.stdout
    stored = moto_server.client(aws, "secretsmanager").get_secret_value(SecretId="jafar/test")
    assert json.loads(stored["SecretString"])["REDIS_PASSWORD"].startswith(CANARY)
    again = inv(extra, "secrets.push", "--from", str(source), "--yes")
    assert again.returncode == 0 and "nothing to do: Secrets Manager secret jafar/test " \
        "already holds these" in again.stdout
    source.write_text(complete_env(CANARY).replace(f"REDIS_PASSWORD={CANARY}",
                                                   f"REDIS_PASSWORD=x{CANARY}"))
    changed = inv(extra, "secrets.push", "--from", str(source), "--yes")
    assert changed.returncode == 0 and ": changed: REDIS_PASSWORD\n" in changed.stdout

    out = tmp_path / "pulled.env"
    pulled = inv(extra, "secrets.pull", "--out", str(out))
    assert pulled.returncode == 0, pulled.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_text() == source.read_text()
    refused = inv(extra, "secrets.pull", "--out", str(out))
    assert refused.returncode == 2 and "exists; pass --force" in refused.stderr
    assert inv(extra, "secrets.pull", "--out", str(out), "--force").returncode == 0


def test_push_asks_without_yes_and_writes_nothing(setup, aws):
    source, extra = setup
    result = inv(extra, "secrets.push", "--from", str(source))
    assert result.returncode == 2 and "no terminal to confirm" in result.stderr
    sm = moto_server.client(aws, "secretsmanager")
    assert sm.list_secrets()["SecretList"] == []


def test_pull_refuses_a_path_git_would_track(setup):
    _, extra = setup
    inside = ROOT / "pulled-by-a-test.env"
    result = inv(extra, "secrets.pull", "--out", str(inside))
    assert result.returncode == 2 and "not git-ignored" in result.stderr
    assert not inside.exists()


@pytest.mark.parametrize("args, message", [
    (("secrets.pull",), "--out is required"),
    (("secrets.push",), "--from is required"),
    (("secrets.push", "--from", "/nonexistent/values.env"), "does not exist"),
])
def test_bad_input_is_one_line_exit_2(setup, args, message):
    _, extra = setup
    result = inv(extra, *args)
    assert result.returncode == 2 and message in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_an_invalid_file_is_refused_by_key_before_aws_is_asked(setup, aws):
    source, extra = setup
    source.write_text(complete_env(CANARY).replace("REDIS_PASSWORD=", "REDIS_PASSWORD=a b "))
    result = inv(extra, "secrets.push", "--from", str(source), "--yes")
    assert result.returncode == 2 and "REDIS_PASSWORD" in result.stderr


def test_an_environment_without_a_store_says_so(environments, aws, tmp_path):
    config = environments(env_yaml(ONE_HOST))
    result = run_inv("secrets.age", "--host", "test", env={"JAFAR_ENVIRONMENTS": str(config)})
    assert result.returncode == 2
    assert "keeps its values in the local env file" in result.stderr


def test_age_reports_each_credential_and_flags_the_overdue(setup, aws, environments):
    source, extra = setup
    assert inv(extra, "secrets.push", "--from", str(source), "--yes").returncode == 0
    fresh = inv(extra, "secrets.age", "--json")
    assert fresh.returncode == 0, fresh.stderr
    report = json.loads(fresh.stdout)
    keys = {r["key"] for r in report["secrets"]}
    assert "REDIS_PASSWORD" in keys and "REDIS_HOST" not in keys and "MONGO_APP_USER" not in keys
    assert report["policy_days"] == 90 and not any(r["overdue"] for r in report["secrets"])
    envsource.forget()
    env = load_environment("test")
    later = ops.ages(env, now=datetime.now(UTC) + timedelta(days=91))
    assert all(a.overdue and a.days >= 90 for a in later)
