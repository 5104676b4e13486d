"""secrets.rotate's pure parts: which keys, the new values, the services rolled, the exact
commands and what travels on their stdin (never a password on a command line)."""

from __future__ import annotations

import base64
import re

import pytest

from fabfile import alternating, envfile, keyset
from fabfile.commands import credentials as cmd
from fabfile.errors import BadInput
from fabfile.ops import rotation
from fabfile.stacks import wait_timeout
from tests.conftest import ROOT, complete_env, shipped

ENV = shipped("sandbox")
BEFORE = dict(line.split("=", 1) for line in complete_env("canary-0d9c2f1e4b7a6358").splitlines())
PREFIX = ("cd /opt/jafar && env JAFAR_REGISTRY=registry:5000/jafar JAFAR_TAG=sandbox "
          "COMPOSE_PROFILES= JAFAR_HEALTH_INTERVAL=1s JAFAR_DB_POOL_SIZE=10 "
          "MONGO_MAX_CONNECTIONS=1000 REDIS_MAXCLIENTS=1000 POSTGRES_MAX_CONNECTIONS=100 "
          "MONGO_PIDS_LIMIT=1256 POSTGRES_PIDS_LIMIT=228 docker compose -p jafar-data "
          "--env-file .env.ec2 -f compose/docker-compose.data.yml ")


def test_keys_are_named_or_all():
    assert rotation.parse_keys("REDIS_PASSWORD, MONGO_APP_PASSWORD", False) == (
        ["REDIS_PASSWORD", "MONGO_APP_PASSWORD"], [])
    keys, notes = rotation.parse_keys(None, True)
    assert keys == list(rotation.KINDS)  # the JWT key too: its key set logs nobody out
    assert notes == [rotation.JWT_NOTE]
    assert rotation.parse_keys("AUTH_JWT_SECRET", False) == (["AUTH_JWT_SECRET"],
                                                              [rotation.JWT_NOTE])


def test_a_jwt_rotation_puts_the_new_key_first_and_keeps_the_one_that_signed():
    first = rotation.new_values({**BEFORE, "AUTH_JWT_SECRET": "k" * 40}, ["AUTH_JWT_SECRET"])
    new, previous = first["AUTH_JWT_SECRET"].split(",")
    assert re.fullmatch(r"[A-Za-z0-9]{40}", new) and previous == "k" * 40
    second = rotation.new_values(first, ["AUTH_JWT_SECRET"])
    newer, kept = second["AUTH_JWT_SECRET"].split(",")
    assert kept == new and newer not in (new, previous)
    assert keyset.dropped(first["AUTH_JWT_SECRET"], second["AUTH_JWT_SECRET"]) == [previous]
    assert keyset.dropped("k" * 40, first["AUTH_JWT_SECRET"]) == []
    # the set is one credential value in the env file, and each key is masked on its own
    assert envfile.value_problems({**BEFORE, **second}) == []
    assert {newer, kept} <= set(envfile.secrets(second))


@pytest.mark.parametrize("text, every, message", [
    (None, False, "name the keys to rotate"),
    ("REDIS_PASSWORD,", False, "name the keys to rotate"),
    ("NOSUCH_KEY", False, "'NOSUCH_KEY' cannot be rotated: choose from REDIS_PASSWORD"),
    ("REDIS_HOST", False, "cannot be rotated"),
    ("REDIS_PASSWORD,REDIS_PASSWORD", False, "a key is named twice"),
    ("REDIS_PASSWORD", True, "give keys or --all, not both"),
])
def test_bad_keys(text, every, message):
    with pytest.raises(BadInput, match=message):
        rotation.parse_keys(text, every)


def test_new_values_are_strong_and_alternate_the_users():
    after = rotation.new_values(BEFORE, ["REDIS_PASSWORD", "LEDGER_DB_PASSWORD"])
    assert re.fullmatch(r"[A-Za-z0-9]{40}", after["REDIS_PASSWORD"])
    assert after["REDIS_PASSWORD"] != rotation.new_values(BEFORE, ["REDIS_PASSWORD"])[
        "REDIS_PASSWORD"]
    assert after["LEDGER_DB_USER"] == BEFORE["LEDGER_DB_USER"] + "_clone"
    assert after["MONGO_APP_USER"] == BEFORE["MONGO_APP_USER"]
    back = rotation.new_values(after, ["LEDGER_DB_PASSWORD"])
    assert back["LEDGER_DB_USER"] == BEFORE["LEDGER_DB_USER"]
    assert alternating.derived(after) == {"LEDGER_DB_ROLE": BEFORE["LEDGER_DB_USER"]}
    long_name = {**BEFORE, "LEDGER_DB_USER": "u" * 60}
    with pytest.raises(BadInput, match="too long to alternate"):
        rotation.new_values(long_name, ["LEDGER_DB_PASSWORD"])


def test_the_services_rolled_are_those_that_mount_the_secret():
    def rolled(*keys: str) -> list[str]:
        return rotation.Rotation(ENV, list(keys), BEFORE, BEFORE).services()

    assert rolled("LEDGER_DB_PASSWORD") == ["ledger-service"]
    assert rolled("REDIS_PASSWORD") == ["api-service", "auth-service", "transaction-service",
                                        "notification-service", "risk-service"]
    assert rolled("AUTH_JWT_SECRET") == ["api-service", "auth-service"]
    assert rolled("MONGO_ROOT_PASSWORD", "POSTGRES_PASSWORD") == []


def test_redis_commands_send_hashes_on_stdin():
    assert cmd.redis(ENV) == PREFIX + (
        "exec -T redis sh -c 'IFS= read -r REDISCLI_AUTH; export REDISCLI_AUTH; exec redis-cli "
        "--no-auth-warning --tls --cacert /run/secrets/data_ca_crt -h 127.0.0.1 -p 6379' "
        "redis-rotate")
    digest = cmd.sha256("new-password")
    assert cmd.redis_add_input("old-password", "new-password") == (
        f"old-password\nACL SETUSER default #{digest}\n").encode()
    assert cmd.redis_keep_only_input("new-password") == (
        f"new-password\nACL SETUSER default resetpass #{digest}\n").encode()
    assert "new-password" not in cmd.redis(ENV)


def test_postgres_commands_and_sql():
    assert cmd.psql(ENV) == PREFIX + (
        "exec -T postgres-ledger sh -c 'exec psql --no-psqlrc --no-password --quiet "
        "--tuples-only --set ON_ERROR_STOP=1 --username \"$POSTGRES_USER\" --dbname "
        "\"$POSTGRES_DB\"' pg-rotate")
    sql = cmd.login_role_sql("jafar_ledger_clone", "jafar_ledger", "ledger", "SCRAM-SHA-256$v")
    assert sql == (
        cmd.QUIET
        + "SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'jafar_ledger_clone') AS "
          "missing \\gset\n"
        + "\\if :missing\nCREATE ROLE \"jafar_ledger_clone\";\n\\endif\n"
        + "ALTER ROLE \"jafar_ledger_clone\" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
          "NOINHERIT NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 100 PASSWORD "
          "'SCRAM-SHA-256$v';\n"
        + "GRANT CONNECT ON DATABASE \"ledger\" TO \"jafar_ledger_clone\";\n"
        + "GRANT \"jafar_ledger\" TO \"jafar_ledger_clone\";\n"
        + "ALTER ROLE \"jafar_ledger_clone\" IN DATABASE \"ledger\" SET role = 'jafar_ledger';\n"
        + "ALTER ROLE \"jafar_ledger_clone\" IN DATABASE \"ledger\" SET search_path = "
          "\"jafar_ledger\";\n")
    owner = cmd.login_role_sql("jafar_ledger", "jafar_ledger", "ledger", "SCRAM-SHA-256$v")
    assert "GRANT \"jafar_ledger\"" not in owner and "SET role" not in owner
    assert cmd.disable_login_sql("jafar_ledger") == (
        cmd.QUIET + "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'jafar_ledger') AS "
        "present \\gset\n\\if :present\nALTER ROLE \"jafar_ledger\" PASSWORD NULL;\n"
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = "
        "'jafar_ledger';\n\\endif\n")
    assert cmd.ident('a"b') == '"a""b"' and cmd.literal("it's") == "'it''s'"


def test_mongo_user_command_and_its_handoff():
    assert cmd.mongo_user(ENV, "ensure", "jafar_app_clone", "jafar",
                          [{"role": "readWrite", "db": "jafar"}]) == PREFIX + (
        "exec -T -e JAFAR_OP=ensure -e JAFAR_USER=jafar_app_clone -e JAFAR_DB=jafar "
        "-e 'JAFAR_ROLES=[{\"role\":\"readWrite\",\"db\":\"jafar\"}]' -e HOME=/tmp "
        "mongo-primary sh -c \"$(cat scripts/mongosh-handoff.sh)\" mongosh")
    data = cmd.mongo_user_input({"password": b"pw1", "mongo_root_password": b"root"}, "JS();")
    assert data == (f"mongo_root_password {base64.b64encode(b'root').decode()}\n"
                    f"password {base64.b64encode(b'pw1').decode()}\n--\nJS();").encode()


def test_the_roles_match_init_mongo():
    js = (ROOT / "scripts" / "init-mongo.js").read_text()
    for user_key, (role, db) in rotation.MONGO_ROLES.items():
        on = "appDbName" if db is None else f"'{db}'"
        assert re.search(rf"required\('{user_key}'\),\s*pwd: secret\('[a-z_]+'\),\s*roles: "
                         rf"\[\{{ role: '{role}', db: {on} \}}\]", js), user_key


def test_every_rotatable_key_is_a_credential_of_the_example():
    from fabfile import envfile

    keys = envfile.example_keys()
    assert set(rotation.KINDS) == {
        k for k in keys if envfile.CREDENTIAL_KEY.search(k)}


class Members:
    """A data host whose replica set answers the key file roll's questions."""

    def __init__(self, primary: str) -> None:
        self.primary = primary
        self.sent: list[str] = []
        self.said: list[str] = []
        self.say = self.said.append

    def run(self, command: str, **_: object) -> object:
        self.sent.append(command)
        return None

    def run_with_input(self, command: str, data: bytes, **_: object) -> object:
        self.sent.append(f"{command} <<< {data.decode()}")
        return None

    def script(self, command: str, script: str) -> str:
        op = re.search(r"JAFAR_OP=(\w+)", command).group(1)
        self.sent.append(f"{script} {op}")
        return {"primary": f"primary {self.primary}", "stepdown": "primary mongo-secondary:27018",
                "healthy": "healthy 3 members"}[op]


def test_the_key_file_rolls_member_by_member_the_primary_last():
    from fabfile.ops import keyfile

    data = Members("mongo-primary:27017")
    keyfile.roll(ENV, data, ("OLDKEY", "NEWKEY"), "root-pw", data.script, data.said.append)
    compose = PREFIX.removeprefix("cd /opt/jafar && ")
    up = f"up --detach --no-recreate --no-deps --wait --wait-timeout {wait_timeout(ENV)}"
    assert [c.removeprefix("cd /opt/jafar && ").replace(compose, "compose ") for c in data.sent] \
        == [
        "umask 077 && mkdir -p /opt/jafar/secrets && cat > "
        "/opt/jafar/secrets/mongo_keyfile.jafar-tmp && chmod 400 "
        "/opt/jafar/secrets/mongo_keyfile.jafar-tmp && setfacl -m u:999:r "
        "/opt/jafar/secrets/mongo_keyfile.jafar-tmp && mv -f /opt/jafar/secrets/mongo_keyfile."
        "jafar-tmp /opt/jafar/secrets/mongo_keyfile <<< - OLDKEY\n- NEWKEY\n",
        "mongo-member.js primary",
        *[line for service in ("mongo-arbiter", "mongo-secondary") for line in (
            f"compose restart {service}", f"compose {up} {service}",
            "mongo-member.js healthy")],
        "mongo-member.js stepdown",
        "compose restart mongo-primary", f"compose {up} mongo-primary",
        "mongo-member.js healthy"]
    assert data.said[0] == "mongo-arbiter restarted with 2 key(s); healthy 3 members"
    assert "mongo-primary:27017 stepped down; mongo-secondary:27018 is PRIMARY" in data.said


def test_after_a_failover_the_new_primary_restarts_last():
    from fabfile.ops import keyfile

    data = Members("10.0.2.10:27018")
    keyfile.roll(ENV, data, ("NEWKEY",), "root-pw", data.script, data.said.append)
    restarts = [c.rsplit(" ", 1)[-1] for c in data.sent if " restart " in c]
    assert restarts == ["mongo-arbiter", "mongo-primary", "mongo-secondary"]
    assert "<<< NEWKEY" in data.sent[0] and "- NEWKEY" not in data.sent[0]


def test_the_key_file_rotation_moves_through_both_keys(monkeypatch):
    from fabfile.ops import keyfile

    rolled: list[tuple[str, ...]] = []
    monkeypatch.setattr(keyfile, "roll", lambda env, remote, keys, *_: rolled.append(keys))
    after = rotation.new_values(BEFORE, ["MONGO_KEYFILE"])
    assert re.fullmatch(r"[A-Za-z0-9+/=]{1008}", after["MONGO_KEYFILE"])
    change = rotation.Rotation(ENV, ["MONGO_KEYFILE"], BEFORE, after)
    old, new = BEFORE["MONGO_KEYFILE"], after["MONGO_KEYFILE"]
    rotation.add(change, Members("x"), "MONGO_KEYFILE")
    assert rolled == [(old, new), (new, old)]
    rotation.revoke(change, Members("x"), "MONGO_KEYFILE")
    assert rolled[-1] == (new,)
    rolled.clear()
    rotation.undo(change, Members("x"), "MONGO_KEYFILE")
    assert rolled == [(old, new), (old,)]


def test_a_second_jwt_rotation_waits_a_token_lifetime():
    """It would drop the previous key, which may have signed tokens that are still live."""
    from datetime import UTC, datetime, timedelta

    from fabfile.aws.secretstore import Version

    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    pair, single = "n" * 40 + "," + "p" * 40, "p" * 40

    class Store:
        def __init__(self, minutes_ago: int, value: str) -> None:
            self.versions = [Version(now - timedelta(minutes=minutes_ago), {keyset.KEY: value}),
                             Version(now - timedelta(days=30), {keyset.KEY: "o" * 40})]

        def history(self) -> list[Version]:
            return self.versions

    with pytest.raises(BadInput) as exc:
        rotation.refuse_early_jwt(Store(5, pair), pair, now)
    assert str(exc.value) == ("AUTH_JWT_SECRET was rotated less than 15 minutes ago: its "
                              "previous key may still have signed live tokens; rotate it after "
                              "12:10 UTC")
    rotation.refuse_early_jwt(Store(15, pair), pair, now)      # a token lifetime ago
    rotation.refuse_early_jwt(Store(1, single), single, now)   # no previous key to drop
    assert keyset.too_early(pair, None, now) is None
