"""The rotation's PostgreSQL statements (fabfile/commands/credentials.py) against a REAL
PostgreSQL 15 with the ledger role of config/postgres/initdb/01-ledger-role.sh: the twin login
role acts as the owner, each login is refused once disabled, only SCRAM verifiers are sent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_static_postgres_init import PASSWORD, Cluster

from fabfile.commands import credentials as cmd

NEW = "rotatedPASSWORD0123456789abcdef01"
BACK = "rotatedAGAIN9876543210fedcba9876"


def login(cluster: Cluster, user: str, password: str, sql: str = "SELECT current_user, "
          "session_user, current_schema()") -> tuple[int, str]:
    proc = cluster.cmd(str(cluster.bin / "psql"), "-h", "127.0.0.1", "-U", user, "-d", "ledger",
                       "-v", "ON_ERROR_STOP=1", "-Atc", sql, env={"PGPASSWORD": password},
                       check=False)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def apply(cluster: Cluster, sql: str) -> None:
    proc = cluster.cmd(str(cluster.bin / "psql"), "--no-psqlrc", "--quiet", "--set",
                       "ON_ERROR_STOP=1", "-U", "jafar_pg_admin", "-d", "ledger",
                       stdin=sql, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    pg = Cluster()
    pg.start()
    assert pg.script().returncode == 0
    code, out = login(pg, "jafar_ledger", PASSWORD, "CREATE TABLE entries (id bigint); "
                                                    "INSERT INTO entries VALUES (1)")
    assert code == 0, out
    yield pg
    pg.stop()


def test_the_verifier_is_what_postgresql_accepts(cluster: Cluster):
    verifier = cmd.scram_verifier(NEW, salt=b"0123456789abcdef")
    assert verifier.startswith("SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$")
    assert cmd.scram_verifier(NEW, salt=b"0123456789abcdef") == verifier  # deterministic


def test_alternating_login_roles_round_trip(cluster: Cluster):
    # 1. the twin gets the new password while the owner keeps working
    apply(cluster, cmd.login_role_sql("jafar_ledger_clone", "jafar_ledger", "ledger",
                                      cmd.scram_verifier(NEW)))
    assert login(cluster, "jafar_ledger", PASSWORD)[0] == 0
    code, out = login(cluster, "jafar_ledger_clone", NEW)
    assert code == 0 and out == "jafar_ledger|jafar_ledger_clone|jafar_ledger", out
    code, out = login(cluster, "jafar_ledger_clone", NEW, "INSERT INTO entries VALUES (2); "
                                                          "SELECT count(*) FROM entries")
    assert code == 0 and out.splitlines()[-1] == "2", out
    # 2. the owner's login revoked: the old password is refused, the twin still works
    apply(cluster, cmd.disable_login_sql("jafar_ledger"))
    code, out = login(cluster, "jafar_ledger", PASSWORD)
    assert code != 0 and "password authentication failed" in out
    assert login(cluster, "jafar_ledger_clone", NEW)[0] == 0
    # 3. the next rotation goes back to the owner, then revokes the twin
    apply(cluster, cmd.login_role_sql("jafar_ledger", "jafar_ledger", "ledger",
                                      cmd.scram_verifier(BACK)))
    code, out = login(cluster, "jafar_ledger", BACK)
    assert code == 0 and out == "jafar_ledger|jafar_ledger|jafar_ledger", out
    apply(cluster, cmd.disable_login_sql("jafar_ledger_clone"))
    assert login(cluster, "jafar_ledger_clone", NEW)[0] != 0
    # the twin's role is no more than the owner's: no privilege of its own
    flags = cluster.as_superuser("SELECT rolsuper, rolcreatedb, rolcreaterole, rolbypassrls "
                                 "FROM pg_roles WHERE rolname = 'jafar_ledger_clone'")
    assert flags == "f|f|f|f"


def test_disabling_a_role_that_does_not_exist_changes_nothing(cluster: Cluster):
    apply(cluster, cmd.disable_login_sql("nobody_here"))


def test_the_superusers_password_changes_by_verifier(cluster: Cluster):
    apply(cluster, cmd.password_sql("jafar_pg_admin", cmd.scram_verifier(NEW)))
    code, out = login(cluster, "jafar_pg_admin", NEW, "SELECT 1")
    assert (code, out) == (0, "1"), out


def test_no_password_reaches_the_server_log(cluster: Cluster):
    log = cluster.server_log()
    assert NEW not in log and BACK not in log
