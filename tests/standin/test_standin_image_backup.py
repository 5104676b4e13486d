"""A backup and a restore with the REAL mongodump and mongorestore (MongoDB Database Tools
100.18.0, built into the mongo sandbox image from ../shared/vendor) through the mongod stand-in
(NOT MongoDB), run as the data stack runs it: requireTLS, a 0400 keyfile, a replica set.

A source set (primary + secondary) gets known documents and secondary indexes; mongodump
--archive --gzip runs against the SECONDARY as a `backup` user whose password is in a --config
YAML file (never on a command line); mongorestore --archive --gzip --drop restores the archive
into a fresh one-member set as a `restore` user; counts, a checksum of every document and the
indexes must match. `mongodump --oplog` must fail, saying why, and write no oplog.

Skipped when no Docker Engine answers, or (with the hook's one-line reason) when the image was
built without the tools because the source tarball is not beside the checkout.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bson
import pytest
from pymongo import MongoClient, ReadPreference
from standin_support import issue_pem, make_ca
from test_standin_image import ROOT_ENV, _keyfile, _wait_listening, _wait_states, docker

from sandbox import build

LABEL = f"org.jafar.sandbox.test=standin-backup-{uuid.uuid4().hex[:8]}"
TLS_CA, TLS_PEM = "/etc/mongo/ca.pem", "/etc/mongo/member.pem"
SOURCE = {"mongo-src-a": 27017, "mongo-src-b": 27018}
TARGET = {"mongo-dst": 27017}
BACKUP_PWD, RESTORE_PWD = "image-backup-pw", "image-restore-pw"  # throwaway test credentials
DB = "bank"


@dataclass
class Sets:
    image: str
    names: dict[str, str]  # service -> container name
    ports: dict[str, int]  # service -> published loopback port
    ca: Path


def _engine_answers() -> bool:
    try:
        return docker("info", check=False, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _exec(name: str, args: list[str], env: dict[str, str] | None = None,
          stdin: bytes | None = None, timeout: float = 180) -> subprocess.CompletedProcess[bytes]:
    """docker exec as the image's user; secrets only through the environment or stdin."""
    flags = [f for key in (env or {}) for f in ("-e", key)]
    return subprocess.run(["docker", "exec", "-i", *flags, name, *args], input=stdin or b"",
                          capture_output=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def _eval(name: str, port: int, script: str, env: dict[str, str] | None = None) -> object:
    """mongosh --tls in the container, logged in as root; prints one JSON line last."""
    login = ("db.getSiblingDB('admin').auth(process.env.MONGO_INITDB_ROOT_USERNAME, "
             "process.env.MONGO_INITDB_ROOT_PASSWORD); ")
    for _ in range(3):  # mongosh gives up selecting a server after 2 s: again on a busy machine
        proc = _exec(name, ["env", "HOME=/tmp", "mongosh", "--quiet", "--norc", "--tls",
                            "--tlsCAFile", TLS_CA, "--host", "localhost", "--port", str(port),
                            "--eval", login + script], env={**ROOT_ENV, **(env or {})})
        if b"MongoServerSelectionError" not in proc.stderr:  # nothing ran: safe to repeat
            break
    lines = [ln for ln in proc.stdout.decode().splitlines() if ln.strip()]
    assert proc.returncode == 0 and lines, f"mongosh in {name}: {proc.stdout!r} {proc.stderr!r}"
    return json.loads(lines[-1])


def _start(image: str, tmp: Path, net: str, services: dict[str, int], key: Path, pem: Path,
           ca: Path) -> tuple[dict[str, str], dict[str, int]]:
    names, ports = {}, {}
    for service, port in services.items():
        names[service] = f"{service}-{uuid.uuid4().hex[:6]}"
        docker("run", "-d", f"--name={names[service]}", f"--label={LABEL}", f"--network={net}",
               f"--network-alias={service}", "-p", f"127.0.0.1::{port}",
               "-e", "MONGO_INITDB_ROOT_USERNAME", "-e", "MONGO_INITDB_ROOT_PASSWORD",
               "-v", f"{key}:/etc/mongo/keyfile:ro", "-v", f"{pem}:{TLS_PEM}:ro",
               "-v", f"{ca}:{TLS_CA}:ro", image,
               "mongod", "--replSet", "rs-" + next(iter(services)), "--port", str(port),
               "--bind_ip_all", "--keyFile", "/etc/mongo/keyfile", "--tlsMode", "requireTLS",
               "--tlsCertificateKeyFile", TLS_PEM, "--tlsCAFile", TLS_CA,
               "--tlsAllowConnectionsWithoutCertificates", env=ROOT_ENV)
    for service, port in services.items():
        _wait_listening(names[service], port)
        published = docker("port", names[service], f"{port}/tcp").stdout.split()[0]
        ports[service] = int(published.rsplit(":", 1)[1])
    first = next(iter(services))
    cfg = {"_id": "rs-" + first, "members": [
        {"_id": i, "host": f"{s}:{p}", **({"priority": 2} if i == 0 else {})}
        for i, (s, p) in enumerate(services.items())]}
    assert _eval(names[first], services[first], f"print(rs.initiate({json.dumps(cfg)}).ok)") == 1
    states = ["PRIMARY"] + ["SECONDARY"] * (len(services) - 1)
    for service, port in services.items():
        _wait_states(names[service], port, states, tls=True)
    return names, ports


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sets]:
    if not _engine_answers():
        pytest.skip("no Docker Engine answers: run `sudo sandbox/setup-engine.sh` first")
    results = build.build_images(only=["mongo"])
    image = next(r.ref for r in results if r.name == "mongo")
    absent = docker("run", "--rm", f"--label={LABEL}", "--entrypoint", "cat", image,
                    "/usr/local/share/mongo-tools/ABSENT", check=False)
    if absent.returncode == 0:
        pytest.skip(absent.stdout.strip())
    tmp = tmp_path_factory.mktemp("standin-backup")
    ca = make_ca(tmp)
    pem = issue_pem(ca, tmp / "member.pem",
                    [*SOURCE, *TARGET, "localhost", "127.0.0.1"])
    os.chown(pem, 999, 999)
    os.chmod(pem, 0o400)
    key = _keyfile(tmp, 0o400)
    try:
        names, ports = {}, {}
        for services in (SOURCE, TARGET):
            net = f"standin-backup-net-{uuid.uuid4().hex[:8]}"
            docker("network", "create", f"--label={LABEL}", net)
            n, p = _start(image, tmp, net, services, key, pem, ca[2])
            names.update(n)
            ports.update(p)
        primary, target = names["mongo-src-a"], names["mongo-dst"]
        _eval(primary, 27017, "db.getSiblingDB('admin').createUser({user: 'backupper', "
              "pwd: process.env.BP, roles: ['backup']}); print(1)", env={"BP": BACKUP_PWD})
        _eval(target, 27017, "db.getSiblingDB('admin').createUser({user: 'restorer', "
              "pwd: process.env.RP, roles: ['restore']}); print(1)", env={"RP": RESTORE_PWD})
        yield Sets(image, names, ports, ca[2])
    finally:
        ids = docker("ps", "-aq", "--filter", f"label={LABEL}", check=False).stdout.split()
        if ids:
            docker("rm", "-f", "-v", *ids, check=False)
        nets = docker("network", "ls", "-q", "--filter", f"label={LABEL}", check=False)
        for net in nets.stdout.split():
            docker("network", "rm", net, check=False)


def _client(sets: Sets, service: str) -> MongoClient:
    """pymongo over TLS to a member's loopback-published port, as root."""
    return MongoClient("127.0.0.1", sets.ports[service], directConnection=True, tls=True,
                       tlsCAFile=str(sets.ca), username=ROOT_ENV["MONGO_INITDB_ROOT_USERNAME"],
                       password=ROOT_ENV["MONGO_INITDB_ROOT_PASSWORD"],
                       read_preference=ReadPreference.SECONDARY_PREFERRED,
                       serverSelectionTimeoutMS=10000)


def _state(client: MongoClient) -> dict:
    """Per collection: count, SHA-256 of the documents (BSON, sorted), the index specs."""
    out = {}
    for name in sorted(client[DB].list_collection_names()):
        docs = sorted(bson.encode(d) for d in client[DB][name].find())
        out[name] = {"count": client[DB][name].count_documents({}),
                     "sha256": hashlib.sha256(b"".join(docs)).hexdigest(),
                     # by name: mongorestore creates them in an order of its own
                     "indexes": sorted((dict(i) for i in client[DB][name].list_indexes()),
                                       key=lambda i: i["name"])}
    return out


def _config_file(name: str, path: str, password: str) -> None:
    """The tool's --config YAML with the password, written through stdin (mode 0600)."""
    proc = _exec(name, ["sh", "-c", f"umask 077 && cat > {path}"],
                 stdin=f"password: {json.dumps(password)}\n".encode())
    assert proc.returncode == 0, proc.stderr


def _tool(name: str, tool: str, uri: str, config: str, args: list[str],
          stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return _exec(name, [tool, f"--uri={uri}", f"--config={config}", *args], stdin=stdin)


def _uri(user: str, host: str, port: int, extra: str = "") -> str:
    return (f"mongodb://{user}@{host}:{port}/?authSource=admin&tls=true&tlsCAFile={TLS_CA}"
            f"&directConnection=true{extra}")


def test_standin_image_real_mongodump_mongorestore_round_trip(sets: Sets) -> None:
    primary, secondary = sets.names["mongo-src-a"], sets.names["mongo-src-b"]
    target = sets.names["mongo-dst"]
    for name in (primary, secondary, target):
        version = _exec(name, ["mongodump", "--version"]).stdout.decode()
        assert "mongodump version: 100.18.0" in version
    script = f"""
        const b = db.getSiblingDB('{DB}');
        const docs = [];
        for (let i = 0; i < 1200; i++) docs.push({{_id: i, iban: 'DE' + (1000 + i),
            owner: 'o' + (i % 17), balance: NumberLong(i * 100), opened: new Date(86400000 * i),
            tags: ['t' + (i % 3)], amount: NumberDecimal('1.' + i)}});
        b.accounts.insertMany(docs);
        b.accounts.createIndex({{iban: 1}}, {{unique: true}});
        b.accounts.createIndex({{owner: 1, opened: -1}}, {{name: 'owner_opened'}});
        b.ledger.insertOne({{_id: UUID(), entry: 'opening', nested: {{a: [1, {{b: 2}}]}}}});
        b.createCollection('audit');
        print(JSON.stringify(b.accounts.countDocuments({{}})))
    """
    assert _eval(primary, 27017, script) == 1200
    with _client(sets, "mongo-src-b") as client:  # the secondary has it all
        before = _state(client)
    assert before["accounts"]["count"] == 1200 and before["audit"]["count"] == 0
    assert [i["name"] for i in before["accounts"]["indexes"]] == ["_id_", "iban_1",
                                                                   "owner_opened"]
    assert before["accounts"]["indexes"][1]["unique"] is True
    _config_file(secondary, "/tmp/dump.yaml", BACKUP_PWD)
    dump = _tool(secondary, "mongodump", _uri("backupper", "mongo-src-b", 27018,
                                              "&readPreference=secondary"),
                 "/tmp/dump.yaml", ["-d", DB, "--archive", "--gzip"])
    assert dump.returncode == 0, dump.stderr.decode()[-2000:]
    archive = dump.stdout
    assert archive[:2] == b"\x1f\x8b" and BACKUP_PWD.encode() not in archive
    # the password was never on a command line: not in any process's argv
    cmdlines = _exec(secondary, ["sh", "-c", "cat /proc/[0-9]*/cmdline"]).stdout
    assert BACKUP_PWD.encode() not in cmdlines
    # restore into the fresh set, twice: --drop makes the second one replace, not add
    _config_file(target, "/tmp/restore.yaml", RESTORE_PWD)
    for _ in range(2):
        restore = _tool(target, "mongorestore", _uri("restorer", "mongo-dst", 27017),
                        "/tmp/restore.yaml", ["--archive", "--gzip", "--drop"], stdin=archive)
        err = restore.stderr.decode()
        assert restore.returncode == 0, err[-2000:]
        assert "1201 document(s) restored successfully. 0 document(s) failed" in err
    with _client(sets, "mongo-dst") as client:
        assert _state(client) == before
        # the unique index came back as one: it is enforced
        with pytest.raises(Exception, match="E11000"):
            client[DB].accounts.insert_one({"iban": "DE1000"})


def test_standin_image_mongodump_oplog_fails_clearly(sets: Sets) -> None:
    secondary = sets.names["mongo-src-b"]
    _config_file(secondary, "/tmp/dump.yaml", BACKUP_PWD)
    dump = _tool(secondary, "mongodump", _uri("backupper", "mongo-src-b", 27018,
                                              "&readPreference=secondary"),
                 "/tmp/dump.yaml", ["--oplog", "--archive"])
    err = dump.stderr.decode()
    assert dump.returncode != 0, err
    assert "does not implement an oplog" in err and "mongodump --oplog" in err
    assert b"oplog" not in dump.stdout  # no archive claims an oplog
