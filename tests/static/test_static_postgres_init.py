"""config/postgres/initdb/01-ledger-role.sh against a REAL PostgreSQL 15 (a throwaway cluster on
a loopback port, started with log_statement=all): the role it creates, what that role can and
cannot do, and that the password reaches neither the server log nor the output."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from static_helpers import ROOT

SCRIPT = ROOT / "config" / "postgres" / "initdb" / "01-ledger-role.sh"
PASSWORD = "ledger$SECRET'\"pw-0123456789"   # shell and SQL quoting both exercised
SUPERUSER = "jafar_pg_admin"


def bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/1[5-9]/bin/initdb"))
    if os.environ.get("PG_BINDIR"):
        candidates = [os.path.join(os.environ["PG_BINDIR"], "initdb")]
    if not candidates or not os.access(candidates[-1], os.X_OK):
        pytest.fail("PostgreSQL >= 15 server binaries not found: install the Debian package "
                    "postgresql-15 (or set PG_BINDIR)", pytrace=False)
    return Path(candidates[-1]).parent


class Cluster:
    def __init__(self) -> None:
        self.bin = bindir()
        self.run_as: list[str] = []
        if os.geteuid() == 0:   # initdb refuses root: run the server as an ordinary user
            user = "postgres" if _user_exists("postgres") else "nobody"
            if shutil.which("runuser") is None:
                pytest.fail("runuser not found: install the Debian package util-linux",
                            pytrace=False)
            self.run_as = ["runuser", "-u", user, "--"]
            self.owner = pwd.getpwnam(user)
        self.dir = Path(tempfile.mkdtemp(prefix="jafar-pg-"))
        if self.run_as:
            os.chown(self.dir, self.owner.pw_uid, self.owner.pw_gid)
        self.port = _free_port()
        self.env = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}",
                    "PGHOST": str(self.dir), "PGPORT": str(self.port)}
        self.env.pop("PGPASSWORD", None)

    def cmd(self, *argv: str, env: dict[str, str] | None = None, check: bool = True,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*self.run_as, *argv], capture_output=True, text=True,
                              timeout=120, env={**self.env, **(env or {})}, input=stdin)
        if check:
            assert proc.returncode == 0, f"{argv[0]}: {proc.stdout}{proc.stderr}"
        return proc

    def start(self) -> None:
        data = self.dir / "data"
        self.cmd(str(self.bin / "initdb"), "-D", str(data), "-U", SUPERUSER,
                 "--auth-local=trust", "--auth-host=scram-sha-256")
        options = (f"-k {self.dir} -p {self.port} -c listen_addresses=127.0.0.1 "
                   "-c log_statement=all -c log_min_error_statement=error")
        self.cmd(str(self.bin / "pg_ctl"), "-D", str(data), "-o", options, "-l",
                 str(self.dir / "server.log"), "-w", "start")
        self.cmd(str(self.bin / "psql"), "-U", SUPERUSER, "-d", "postgres", "-c",
                 "CREATE DATABASE ledger")

    def stop(self) -> None:
        self.cmd(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "stop",
                 check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def script(self, **env: str) -> subprocess.CompletedProcess[str]:
        values = {"POSTGRES_USER": SUPERUSER, "LEDGER_DB_NAME": "ledger",
                  "LEDGER_DB_USER": "jafar_ledger", "LEDGER_DB_PASSWORD": PASSWORD, **env}
        return self.cmd("bash", str(SCRIPT), env=values, check=False)

    def as_ledger(self, database: str, sql: str,
                  user: str = "jafar_ledger") -> subprocess.CompletedProcess[str]:
        """Over TCP (SCRAM), as the ledger role (or its rotation twin)."""
        return self.cmd(str(self.bin / "psql"), "-h", "127.0.0.1", "-U", user, "-d",
                        database, "-v", "ON_ERROR_STOP=1", "-Atc", sql,
                        env={"PGPASSWORD": PASSWORD}, check=False)

    def as_superuser(self, sql: str) -> str:
        return self.cmd(str(self.bin / "psql"), "-U", SUPERUSER, "-d", "ledger", "-Atc",
                        sql).stdout.strip()

    def server_log(self) -> str:
        return (self.dir / "server.log").read_text(errors="replace")


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    pg = Cluster()
    pg.start()
    first = pg.script()
    assert first.returncode == 0, first.stdout + first.stderr
    assert "role jafar_ledger created" in first.stdout
    pg.first_output = first.stdout + first.stderr
    yield pg
    pg.stop()


def test_rerun_updates_the_role(cluster: Cluster):
    again = cluster.script()
    assert again.returncode == 0, again.stdout + again.stderr
    assert "role jafar_ledger updated" in again.stdout


def test_ledger_role_logs_in_and_owns_its_schema(cluster: Cluster):
    proc = cluster.as_ledger("ledger", "CREATE TABLE entries (id bigint); "
                                       "SELECT current_schema();")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "jafar_ledger"


def test_the_rotation_twin_logs_in_and_acts_as_the_owner(cluster: Cluster):
    """A data host rebuilt after a rotation: the services log in as jafar_ledger_clone."""
    assert "role jafar_ledger_clone (the rotation twin) acts as jafar_ledger" in \
        cluster.first_output
    proc = cluster.as_ledger("ledger", "CREATE TABLE twin_entries (id bigint); "
                             "SELECT current_user, current_schema();", user="jafar_ledger_clone")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "jafar_ledger|jafar_ledger"
    owner = cluster.as_superuser("SELECT tableowner FROM pg_tables WHERE tablename = "
                                 "'twin_entries'")
    assert owner == "jafar_ledger"
    flags = cluster.as_superuser(
        "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls "
        "FROM pg_roles WHERE rolname = 'jafar_ledger_clone'")
    assert flags == "f|f|f|f|f"
    assert cluster.as_ledger("postgres", "SELECT 1", user="jafar_ledger_clone").returncode != 0


def test_ledger_role_has_no_privilege_beyond_its_database(cluster: Cluster):
    flags = cluster.as_superuser(
        "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls "
        "FROM pg_roles WHERE rolname = 'jafar_ledger'")
    assert flags == "f|f|f|f|f"
    assert cluster.as_ledger("postgres", "SELECT 1").returncode != 0
    public = cluster.as_ledger("ledger", "CREATE TABLE public.nope (id int)")
    assert public.returncode != 0 and "permission denied" in public.stderr
    assert cluster.as_ledger("ledger", "CREATE DATABASE other").returncode != 0


def test_password_is_scram_and_never_logged(cluster: Cluster):
    stored = cluster.as_superuser(
        "SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname = 'jafar_ledger'")
    assert stored == "SCRAM-SHA-256$"
    assert "SECRET" not in cluster.server_log(), "the password reached the server log"
    assert "SECRET" not in cluster.first_output


def test_missing_value_fails(cluster: Cluster):
    proc = cluster.script(LEDGER_DB_PASSWORD="")
    assert proc.returncode != 0 and "LEDGER_DB_PASSWORD" in proc.stderr
    proc = cluster.script(LEDGER_DB_USER=SUPERUSER)
    assert proc.returncode != 0 and "superuser" in proc.stderr


def test_sourcing_does_not_leak_strict_mode(cluster: Cluster):
    """The image's entrypoint sources non-executable *.sh files: `set -u` must not leak."""
    values = {"POSTGRES_USER": SUPERUSER, "LEDGER_DB_NAME": "ledger",
              "LEDGER_DB_USER": "jafar_ledger", "LEDGER_DB_PASSWORD": PASSWORD}
    proc = cluster.cmd("bash", "-c", f'source {SCRIPT}; echo "after:${{UNSET_VARIABLE}}:ok"',
                       env=values, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("after::ok")
