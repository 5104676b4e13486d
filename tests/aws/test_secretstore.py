"""The env file's values in Secrets Manager and SSM, against moto (the AWS stand-in) with real
boto3 calls: read, validated by key, staged, committed, restored; errors name, never show."""

from __future__ import annotations

import json
import time

import pytest

from fabfile import envfile, envsource
from fabfile.aws import secretstore
from fabfile.config import load_environment
from fabfile.errors import BadInput, StepFailed
from tests.conftest import complete_env, env_yaml
from tests.support import moto_server
from tests.unit.test_config import ONE_HOST

CANARY = "canary-7d1f3b9a52c84e06"


def values() -> dict[str, str]:
    return dict(line.split("=", 1) for line in complete_env(CANARY).splitlines())


def environment(environments, endpoint: str, secrets: str):
    environments(env_yaml(ONE_HOST, f"aws: {{region: eu-west-1, endpoint_url: '{endpoint}'}}\n"
                                    f"secrets: {secrets}\n"))
    return load_environment("test")


def test_secrets_manager_values_are_read_and_checked_by_key(environments, aws):
    sm = moto_server.client(aws, "secretsmanager")
    sm.create_secret(Name="jafar/test", SecretString=json.dumps(values()))
    env = environment(environments, aws, "{manager: jafar/test}")
    assert envsource.load(env) == values()
    incomplete = {k: v for k, v in values().items() if k != "REDIS_PASSWORD"}
    sm.put_secret_value(SecretId="jafar/test", SecretString=json.dumps(incomplete))
    envsource.forget()
    with pytest.raises(BadInput) as exc:
        envsource.load(env)
    assert "Secrets Manager secret jafar/test: missing keys: REDIS_PASSWORD" in str(exc.value)
    assert CANARY not in str(exc.value)


@pytest.mark.parametrize("stored, message", [
    ("{not json " + CANARY, "is not valid JSON"),
    (json.dumps([CANARY]), "is not a JSON object of KEY: \"value\" pairs"),
    (json.dumps({"REDIS_PASSWORD": 12345678901234567}), "REDIS_PASSWORD is not a string"),
    (json.dumps({"bad key": CANARY}), "a key is not an env file key"),
])
def test_a_malformed_secret_is_bad_input_without_its_content(environments, aws, stored, message):
    moto_server.client(aws, "secretsmanager").create_secret(Name="jafar/test",
                                                            SecretString=stored)
    env = environment(environments, aws, "{manager: jafar/test}")
    with pytest.raises(BadInput) as exc:
        envsource.load(env)
    assert message in str(exc.value) and CANARY not in str(exc.value)
    assert "\n" not in str(exc.value)


def test_a_secret_that_does_not_exist_is_bad_input(environments, aws):
    env = environment(environments, aws, "{manager: jafar/none}")
    with pytest.raises(BadInput, match="reading Secrets Manager secret jafar/none: AWS says it "
                                       "does not exist"):
        envsource.load(env)


def test_no_credentials_is_bad_input_and_nothing_is_asked_of_the_network(
        environments, aws, monkeypatch, tmp_path):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role here
    env = environment(environments, aws, "{manager: jafar/test}")
    with pytest.raises(BadInput, match="no AWS credentials found"):
        envsource.load(env)


def test_an_endpoint_that_does_not_answer_fails_fast(environments, aws, listener):
    listener.close()  # a port nothing listens on any more
    env = environment(environments, f"http://127.0.0.1:{listener.port}", "{manager: x/y}")
    with pytest.raises(StepFailed, match="the AWS endpoint of test does not answer"):
        envsource.load(env)


def test_staged_values_are_current_only_once_committed_and_can_be_restored(environments, aws):
    sm = moto_server.client(aws, "secretsmanager")
    sm.create_secret(Name="jafar/test", SecretString=json.dumps(values()))
    env = environment(environments, aws, "{manager: jafar/test}")
    store = secretstore.store(env)
    new = {**values(), "REDIS_PASSWORD": "new-" + CANARY}
    staged = store.stage(new)
    assert staged.changed() == ["REDIS_PASSWORD"]
    assert store.read() == values() and store.pending()
    store.commit(staged)
    assert store.read() == new and not store.pending()
    assert store.previous() == values()   # AWSPREVIOUS: what was current before
    store.restore(staged)
    assert store.read() == values()
    other = store.stage(new)
    store.discard(other)
    assert not store.pending() and store.read() == values()


def test_parameter_store_values_history_and_restore(environments, aws):
    ssm = moto_server.client(aws, "ssm")
    for key, value in values().items():
        ssm.put_parameter(Name=f"/jafar/test/{key}", Value=value, Type="SecureString")
    env = environment(environments, aws, "{ssm: /jafar/test/}")
    assert envsource.load(env) == values()
    store = secretstore.store(env)
    new = {**values(), "LEDGER_DB_PASSWORD": "new-" + CANARY}
    staged = store.stage(new)
    assert store.read() == values()       # SSM: nothing written before the commit
    store.commit(staged)
    assert store.read() == new
    assert store.previous()["LEDGER_DB_PASSWORD"] == values()["LEDGER_DB_PASSWORD"]
    changed = secretstore.last_changed(store.history())
    assert changed["LEDGER_DB_PASSWORD"][0] >= changed["REDIS_PASSWORD"][0]
    store.restore(staged)
    assert store.read() == values()


def test_a_plain_string_parameter_is_refused(environments, aws):
    ssm = moto_server.client(aws, "ssm")
    ssm.put_parameter(Name="/jafar/test/REDIS_PASSWORD", Value=CANARY, Type="String")
    env = environment(environments, aws, "{ssm: /jafar/test/}")
    with pytest.raises(BadInput, match="REDIS_PASSWORD is a String, not a SecureString") as exc:
        envsource.load(env)
    assert CANARY not in str(exc.value)


def test_an_empty_parameter_path_is_bad_input(environments, aws):
    env = environment(environments, aws, "{ssm: /jafar/none/}")
    with pytest.raises(BadInput, match="SSM parameters under /jafar/none/: there is no "
                                       "parameter"):
        envsource.load(env)


def test_last_changed_dates_each_key_by_its_versions(environments, aws):
    sm = moto_server.client(aws, "secretsmanager")
    sm.create_secret(Name="jafar/test", SecretString=json.dumps(values()))
    env = environment(environments, aws, "{manager: jafar/test}")
    store = secretstore.store(env)
    time.sleep(1.1)  # the stand-in dates versions to the second
    staged = store.stage({**values(), "REDIS_PASSWORD": "new-" + CANARY})
    store.commit(staged)
    changed = secretstore.last_changed(store.history())
    assert changed["REDIS_PASSWORD"][0] > changed["LEDGER_DB_PASSWORD"][0]
    assert all(exact for _, exact in changed.values())
    assert set(changed) == set(envfile.example_keys())
