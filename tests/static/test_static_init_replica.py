"""scripts/init-replica.sh + scripts/init-mongo.js, run as an operator runs them (from a deploy
path, `./scripts/init-replica.sh`), with the REAL mongosh executing the REAL JavaScript.

Stand-ins, named as such: `docker` is a fake CLI on PATH (it answers `compose ps` and runs
`compose exec ... mongosh` locally with the container's environment), and the MongoDB server is
tests/static/fake_mongo.js (an in-memory replica set member; there is no MongoDB server here).
Both mongosh lines are exercised: `mongosh` on PATH (2.x) and 1.10.x, the sandbox's
(MONGOSH_1_10, default: the copy sandbox/images/mongo/fetch-vendor.sh fetches)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from static_helpers import ROOT, require_tool

HERE = Path(__file__).resolve().parent
VENDOR_MONGOSH = ROOT / "sandbox" / "images" / "mongo" / "vendor" / "node_modules" / "mongosh"
# the host's secret files (env.sync writes them under the deploy path's secrets/); the script
# hands them to mongo-primary at each run
SECRETS = {"mongo_root_password": "rootSECRETpassword0001",
           "mongo_app_password": "appSECRETpassword0002",
           "mongo_ledger_password": "ledgerSECRETpassword03",
           "mongo_backup_password": "backupSECRETpassword04"}
CONTAINER_ENV = {"MONGO_ROOT_USERNAME": "jafar_root", "MONGO_APP_DB": "jafar", "HOME": "/tmp"}
USERS = ("MONGO_APP_USER=jafar_app\nMONGO_LEDGER_USER=jafar_ledger\n"
         "MONGO_BACKUP_USER=jafar_backup\n")
MEMBERS = ["mongo-primary:27017", "mongo-secondary:27018", "mongo-arbiter:27019"]

FAKE_DOCKER = textwrap.dedent("""\
    #!{python}
    # Stand-in for the docker CLI (test only): records argv, answers `compose ... ps`, runs
    # `compose ... exec [-T] [-e K=V]... SERVICE sh -c SCRIPT` locally with the container's
    # environment, its /tmp a folder of the test, and `mongosh` the shim below.
    import json, os, subprocess, sys
    args = sys.argv[1:]
    with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
        log.write(json.dumps(args) + "\\n")
    if "ps" in args:
        if os.environ.get("FAKE_COMPOSE_ERROR"):
            print("some warning", file=sys.stderr)
            print(os.environ["FAKE_COMPOSE_ERROR"], file=sys.stderr)
            sys.exit(15)
        if os.environ.get("FAKE_MONGO_STOPPED") != "1":
            print("0123456789ab")
        sys.exit(0)
    i = args.index("exec") + 1
    env = dict(json.load(open(os.environ["FAKE_CONTAINER_ENV"])))
    for key in ("FAKE_MONGO_STATE", "FAKE_MONGO_JS", "FAKE_MONGOSH"):
        env[key] = os.environ[key]
    env["PATH"] = os.environ["FAKE_CONTAINER_PATH"]
    env["TMPDIR"] = os.environ["FAKE_CONTAINER_TMP"]
    while args[i].startswith("-"):
        if args[i] == "-e":
            key, _, value = args[i + 1].partition("=")
            env[key] = value
            i += 2
        else:
            i += 1
    service, command = args[i], args[i + 1:]
    assert service == "mongo-primary", service
    assert command[:2] == ["sh", "-c"], command
    sys.exit(subprocess.run(command, env=env).returncode)
    """)

# the container's mongosh: the stand-in server's JavaScript first, then the script on stdin
MONGOSH_SHIM = textwrap.dedent("""\
    #!{python}
    import os, subprocess, sys
    script = open(os.environ["FAKE_MONGO_JS"]).read() + sys.stdin.read()
    argv = os.environ["FAKE_MONGOSH"].split() + sys.argv[1:]
    sys.exit(subprocess.run(argv, input=script, text=True).returncode)
    """)


def mongosh_commands() -> list[tuple[str, str]]:
    return [("mongosh-path", "mongosh"), ("mongosh-1.10", "mongosh-1.10")]


@pytest.fixture(params=mongosh_commands(), ids=lambda p: p[0])
def mongosh(request: pytest.FixtureRequest) -> str:
    if request.param[1] == "mongosh":
        return require_tool("mongosh")
    require_tool("node")
    script = Path(os.environ.get("MONGOSH_1_10", VENDOR_MONGOSH)) / "bin" / "mongosh.js"
    if not script.is_file():
        pytest.fail(f"mongosh 1.10.x not found at {script}: run "
                    "sandbox/images/mongo/fetch-vendor.sh (npm package mongosh@1.10.6) or set "
                    "MONGOSH_1_10 to a mongosh 1.10 package directory", pytrace=False)
    version = json.loads((script.parent.parent / "package.json").read_text())["version"]
    assert version.startswith("1.10."), version
    return f"node {script}"


class Host:
    """A deploy path with the scripts, a .env.ec2, and the stand-ins wired in."""

    def __init__(self, root: Path, mongosh: str) -> None:
        require_tool("bash")
        require_tool("timeout")
        self.root = root
        deploy = root / "deploy"
        (deploy / "scripts").mkdir(parents=True)
        (deploy / "compose").mkdir()
        for name in ("init-replica.sh", "init-mongo.js", "mongosh-handoff.sh"):
            shutil.copy2(ROOT / "scripts" / name, deploy / "scripts" / name)
        shutil.copy2(ROOT / "compose" / "docker-compose.data.yml", deploy / "compose")
        self.deploy = deploy
        self.write_env_file(f"MONGO_HOSTS={','.join(MEMBERS)}\n" + USERS)
        bindir = root / "bin"
        bindir.mkdir()
        docker = bindir / "docker"
        docker.write_text(FAKE_DOCKER.format(python=sys.executable))
        docker.chmod(0o755)
        container_bin = root / "container-bin"
        container_bin.mkdir()
        (container_bin / "mongosh").write_text(MONGOSH_SHIM.format(python=sys.executable))
        (container_bin / "mongosh").chmod(0o755)
        self.container_tmp = root / "container-tmp"
        self.container_tmp.mkdir()
        self.secrets = deploy / "secrets"
        self.secrets.mkdir()
        for name, value in SECRETS.items():
            self.write_secret(name, value)
        self.write_secret("data_ca_crt", "-----BEGIN CERTIFICATE----- (a stand-in)")
        self.container_env = dict(CONTAINER_ENV)
        self.state_path = root / "mongo-state.json"
        self.state = {"root": None,  # a fresh data volume: the script creates the root user
                      "rs": None, "users": {}, "log": [], "writes": [], "down": [],
                      "localAddress": "127.0.0.1:27017", "localIndex": 0, "primaryIndex": 0,
                      "electAfter": 2}
        self.env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}",
                    "FAKE_DOCKER_LOG": str(root / "docker-argv.log"),
                    "FAKE_CONTAINER_ENV": str(root / "container-env.json"),
                    "FAKE_MONGO_STATE": str(self.state_path),
                    "FAKE_MONGO_JS": str(HERE / "fake_mongo.js"), "FAKE_MONGOSH": mongosh,
                    "FAKE_CONTAINER_PATH": f"{container_bin}:{os.environ['PATH']}",
                    "FAKE_CONTAINER_TMP": str(self.container_tmp)}
        self.env.pop("MONGO_RS_MEMBERS", None)

    def write_secret(self, name: str, value: str) -> None:
        (self.secrets / name).write_text(value + "\n")

    def write_env_file(self, text: str) -> None:
        path = self.deploy / ".env.ec2"
        path.write_text(text)
        path.chmod(0o600)

    def save(self) -> None:
        self.state_path.write_text(json.dumps(self.state))
        (self.root / "container-env.json").write_text(json.dumps(self.container_env))

    def load(self) -> dict:
        self.state = json.loads(self.state_path.read_text())
        return self.state

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        self.save()
        proc = subprocess.run(["./scripts/init-replica.sh", *args], cwd=self.deploy,
                              capture_output=True, text=True, timeout=300,
                              env={**self.env, **env})
        self.load()
        return proc

    def docker_argv(self) -> str:
        return (self.root / "docker-argv.log").read_text()


@pytest.fixture
def host(tmp_path: Path, mongosh: str) -> Host:
    return Host(tmp_path, mongosh)


def lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stdout.splitlines() if line.strip()]


def assert_no_secret(host: Host, *procs: subprocess.CompletedProcess[str]) -> None:
    seen = host.docker_argv() + "".join(p.stdout + p.stderr for p in procs)
    for value in SECRETS.values():
        encoded = base64.b64encode((value + "\n").encode()).decode()
        assert value not in seen and encoded not in seen, "a secret reached argv or the output"
    assert list(host.container_tmp.iterdir()) == [], "the handed files are removed"


def test_first_run_initiates_then_second_run_changes_nothing(host: Host):
    first = host.run("--timeout", "30")
    assert first.returncode == 0, first.stdout + first.stderr
    assert lines(first)[-1] == "replica set rs0 initiated"
    assert "user jafar_root created" in lines(first)  # through the localhost exception
    assert host.state["root"] == {"user": "jafar_root", "pwd": SECRETS["mongo_root_password"]}
    assert "user jafar_app created" in lines(first)
    assert "user jafar_ledger created" in lines(first)
    assert host.state["rs"] == {"_id": "rs0", "members": [
        {"_id": 0, "host": MEMBERS[0], "priority": 2},
        {"_id": 1, "host": MEMBERS[1], "priority": 1},
        {"_id": 2, "host": MEMBERS[2], "arbiterOnly": True}]}
    users = host.state["users"]
    assert users["jafar.jafar_app"]["roles"] == [{"role": "readWrite", "db": "jafar"}]
    assert users["jafar.jafar_ledger"]["roles"] == [{"role": "read", "db": "jafar"}]
    assert users["jafar.jafar_backup"]["roles"] == [{"role": "backup", "db": "admin"}]
    assert users["jafar.jafar_app"]["pwd"] == SECRETS["mongo_app_password"]

    second = host.run("--timeout", "30")
    assert second.returncode == 0, second.stdout + second.stderr
    assert lines(second)[-1] == "replica set rs0 already initiated"
    assert "user jafar_app unchanged" in lines(second)
    assert "user jafar_ledger unchanged" in lines(second)
    assert "user jafar_backup unchanged" in lines(second)
    assert len(host.state["writes"]) == 4, "the second run wrote nothing"

    connects = [e for e in host.state["log"] if e.startswith("connect ")]
    assert connects and all(e.endswith(" tls") for e in connects), \
        "every connection verifies the data CA over TLS"
    argv = host.docker_argv()
    assert '"-p", "jafar-data"' in argv and '"compose/docker-compose.data.yml"' in argv
    assert '"exec", "-T"' in argv
    assert_no_secret(host, first, second)


def test_changed_password_or_roles_are_updated(host: Host):
    assert host.run().returncode == 0
    host.write_secret("mongo_app_password", "appSECRETrotated0009")
    host.state["users"]["jafar.jafar_ledger"]["roles"] = [{"role": "readWrite", "db": "jafar"}]
    proc = host.run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "user jafar_app updated" in lines(proc)
    assert "user jafar_ledger updated" in lines(proc)
    assert host.state["users"]["jafar.jafar_app"]["pwd"] == "appSECRETrotated0009"
    assert host.state["users"]["jafar.jafar_ledger"]["roles"] == [{"role": "read", "db": "jafar"}]
    assert lines(proc)[-1] == "replica set rs0 already initiated"
    assert "appSECRETrotated0009" not in proc.stdout + host.docker_argv()


def test_users_are_written_on_the_primary_after_a_failover(host: Host):
    host.state.update(rs={"_id": "rs0", "members": [{"_id": i, "host": h}
                                                    for i, h in enumerate(MEMBERS)]},
                      primaryIndex=1, electAfter=0,
                      root={"user": "jafar_root", "pwd": SECRETS["mongo_root_password"]})
    proc = host.run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert lines(proc)[-1] == "replica set rs0 already initiated"
    assert host.state["writes"] == ["createUser jafar.jafar_app on mongo-secondary:27018",
                                    "createUser jafar.jafar_ledger on mongo-secondary:27018",
                                    "createUser jafar.jafar_backup on mongo-secondary:27018"]


def test_members_come_from_the_environment_or_env_file(host: Host):
    split = ["10.0.2.10:27017", "10.0.2.10:27018", "10.0.2.10:27019"]
    host.write_env_file(f"MONGO_HOSTS='{','.join(split)}'\n" + USERS)
    proc = host.run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [m["host"] for m in host.state["rs"]["members"]] == split
    override = host.run(MONGO_RS_MEMBERS="a:1,b:2,c:3")
    assert override.returncode == 0  # already initiated: the override does not reconfigure


def test_default_members_without_mongo_hosts(host: Host):
    host.write_env_file("OTHER=1\n" + USERS)
    proc = host.run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [m["host"] for m in host.state["rs"]["members"]] == MEMBERS


def test_no_primary_within_timeout_fails_with_one_line(host: Host):
    host.state["primaryIndex"] = None
    proc = host.run("--timeout", "3")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "init-replica: error: no PRIMARY in replica set rs0 within 3s (no PRIMARY elected yet)"]
    assert "replica set rs0 initiated" not in proc.stdout


def test_unreachable_mongod_fails_with_one_line(host: Host):
    host.state["down"] = ["127.0.0.1:27017"]
    proc = host.run("--timeout", "2")
    assert proc.returncode == 1
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 1
    assert errors[0].startswith("init-replica: error: cannot reach mongod at 127.0.0.1:27017")
    assert "error" not in proc.stdout


def test_wrong_root_password_fails_without_printing_it(host: Host):
    host.state["root"] = {"user": "jafar_root", "pwd": SECRETS["mongo_root_password"]}
    host.write_secret("mongo_root_password", "wrongSECRETpassword77")
    proc = host.run("--timeout", "5")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "init-replica: error: authentication as the root user failed on 127.0.0.1:27017"]
    assert "wrongSECRETpassword77" not in proc.stdout + proc.stderr + host.docker_argv()


def test_stopped_container_fails_with_one_line(host: Host):
    proc = host.run(FAKE_MONGO_STOPPED="1")
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("init-replica: error: mongo-primary is not running in "
                                   "compose project jafar-data (run data.up first)")


@pytest.mark.parametrize("args", [["--timeout", "0"], ["--timeout", "abc"], ["--project"],
                                  ["--project", "Bad Name"], ["--bogus"]])
def test_bad_arguments_exit_2_before_touching_docker(host: Host, args: list[str]):
    proc = host.run(*args)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (host.root / "docker-argv.log").exists()


def test_bad_members_fail(host: Host):
    proc = host.run(MONGO_RS_MEMBERS="only-one:27017")
    assert proc.returncode == 1
    assert "three host:port entries" in proc.stderr


def test_project_flag(host: Host):
    proc = host.run("--project", "other-data")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert '"-p", "other-data"' in host.docker_argv()


def test_missing_secret_file_fails_with_one_line(host: Host):
    (host.secrets / "mongo_app_password").unlink()
    proc = host.run()
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"init-replica: error: secrets/mongo_app_password cannot be read in {host.deploy} "
        "(run env.sync)"]
    assert not (host.root / "docker-argv.log").exists()


def test_missing_user_variable_fails_with_one_line(host: Host):
    host.write_env_file(f"MONGO_HOSTS={','.join(MEMBERS)}\nMONGO_LEDGER_USER=jafar_ledger\n")
    proc = host.run()
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "init-replica: error: MONGO_APP_USER, MONGO_LEDGER_USER and MONGO_BACKUP_USER must be "
        "set in .env.ec2 (run env.sync)"]


def test_a_rotated_user_is_created_from_the_hosts_files(host: Host):
    """After a rotation the container's own /run/secrets is stale: the script uses the host's
    .env.ec2 and secrets/, so the new user appears with the new password and the old one is
    left as it is (the rotation revokes it once the services moved)."""
    assert host.run().returncode == 0
    host.write_env_file(f"MONGO_HOSTS={','.join(MEMBERS)}\nMONGO_APP_USER=jafar_app_clone\n"
                        "MONGO_LEDGER_USER=jafar_ledger\nMONGO_BACKUP_USER=jafar_backup\n")
    host.write_secret("mongo_app_password", "appSECRETclone000010")
    proc = host.run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "user jafar_app_clone created" in lines(proc)
    users = host.state["users"]
    assert users["jafar.jafar_app_clone"]["pwd"] == "appSECRETclone000010"
    assert users["jafar.jafar_app"]["pwd"] == SECRETS["mongo_app_password"]
    assert "appSECRETclone000010" not in proc.stdout + proc.stderr + host.docker_argv()


def test_compose_error_is_reported_in_one_line(host: Host):
    proc = host.run(FAKE_MONGO_STOPPED="1", FAKE_COMPOSE_ERROR="required variable X is missing")
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("init-replica: error: docker compose cannot read project "
                                   "jafar-data: required variable X is missing")
