"""The split topology, last of the drills (it replaces the shared single-host sandbox): a data
host and two core hosts, deployed from scratch with user-namespace remapping (fresh hosts: the
daemons start on the remapped storage root), all healthy. The data ports answer only over
TLS, verified with the data CA, and only to the core hosts' addresses: from a core host a plain
connection to each port is refused by the store; from any other address of the private network
the firewall drops it. A core host holds no data-only secret."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from tests.conftest import run_inv
from tests.e2e.sandbox_helpers import sandbox_config

DATA = "jafar-sandbox-1"
CORE = ("jafar-sandbox-2", "jafar-sandbox-3")
DATA_IP = "172.30.99.11"
IPS = {DATA: DATA_IP, CORE[0]: "172.30.99.12", CORE[1]: "172.30.99.13"}
ALL_IPS = tuple(IPS.values())
PORTS = {"mongo-primary": 27017, "mongo-secondary": 27018, "mongo-arbiter": 27019,
         "redis": 6379, "postgres-ledger": 5432}

# Run by python3 on a host (or in a container): per data port, a plain attempt and a TLS one.
# Plain: Redis gets PING, MongoDB a legacy isMaster, PostgreSQL a startup message without
# SSLRequest; "refused" means no answer that serves it. TLS: PostgreSQL's SSLRequest first,
# then a handshake that verifies the certificate and the host name against the CA given.
PROBE = r"""
import json, socket, ssl, struct, sys
host, ca = sys.argv[1], sys.argv[2]
ports = json.loads(sys.argv[3])

def plain(name, port):
    try:
        s = socket.create_connection((host, port), timeout=4)
    except OSError as exc:
        return "unreachable: " + type(exc).__name__
    s.settimeout(4)
    try:
        if name == "redis":
            s.sendall(b"PING\r\n")
        elif name.startswith("mongo"):
            doc = b"\x10isMaster\x00\x01\x00\x00\x00\x00"
            doc = struct.pack("<i", len(doc) + 5) + doc + b"\x00"
            body = struct.pack("<i", 0) + b"admin.$cmd\x00" + struct.pack("<ii", 0, -1) + doc
            s.sendall(struct.pack("<iiii", 16 + len(body), 1, 0, 2004) + body)
        else:
            body = struct.pack("!i", 196608) + b"user\x00x\x00database\x00x\x00\x00"
            s.sendall(struct.pack("!i", len(body) + 4) + body)
        data = s.recv(200)
    except OSError as exc:
        return "refused: " + type(exc).__name__
    finally:
        s.close()
    if not data:
        return "refused: closed"
    if name == "redis" and data.startswith(b"+PONG"):
        return "served"
    if name == "postgres-ledger" and b"no encryption" in data:
        return "refused: hostssl only"
    return "answered: " + data[:1].hex()

def tls(name, port):
    try:
        context = ssl.create_default_context(cafile=ca)
        s = socket.create_connection((host, port), timeout=4)
        if name == "postgres-ledger":
            s.sendall(struct.pack("!ii", 8, 80877103))
            if s.recv(1) != b"S":
                return "no TLS offered"
        with context.wrap_socket(s, server_hostname=host) as t:
            return "ok " + t.version()
    except (OSError, ssl.SSLError) as exc:
        return "failed: " + type(exc).__name__

print(json.dumps({n: {"plain": plain(n, p), "tls": tls(n, p)} for n, p in ports.items()}))
"""


CONFIG: dict[str, str] = {}  # the sandbox environment with host.userns_remap: true


def inv(*args: str, timeout: int = 1500) -> subprocess.CompletedProcess[str]:
    return run_inv(*args, "--host", "sandbox", env=CONFIG, timeout=timeout)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    # JAFAR_E2E_REUSE=1 (while developing): deploy onto the split sandbox already there
    reuse = os.environ.get("JAFAR_E2E_REUSE") == "1"
    reset = run_inv("sandbox.up" if reuse else "sandbox.reset", "--hosts", "3", timeout=1800)
    assert reset.returncode == 0, reset.stdout[-3000:] + reset.stderr[-3000:]
    # the registry outlives a reset: the images built for the single-host sandbox are there
    assert "nothing to push" in reset.stdout, reset.stdout[-3000:]
    CONFIG.update(sandbox_config(tmp_path_factory.mktemp("remap"), host={"userns_remap": True}))
    first = inv("deploy")
    assert first.returncode == 0, first.stdout[-5000:] + first.stderr[-3000:]
    return first


def on(host: str, *argv: str) -> str:
    return subprocess.run(["docker", "exec", host, *argv], capture_output=True, text=True,
                          timeout=120, check=True).stdout


def test_a_split_deploy_is_healthy_on_every_host(split):
    r = inv("health", "--json")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    report = json.loads(r.stdout)
    assert report["healthy"], report
    by_host: dict[str, set[str]] = {}
    for check in report["checks"]:
        by_host.setdefault(check["host"], set()).add(check["service"])
    assert {"mongo-primary", "redis", "postgres-ledger"} <= by_host[DATA]
    assert "api-service" not in by_host[DATA]
    for host in CORE:
        assert {"gateway", "api-service", "ledger-service"} <= by_host[host], by_host


def test_each_gateway_publishes_on_its_hosts_private_address_only(split):
    """gateway_bind: private (the split sandbox's, as prod's): 443 answers on the address the
    load balancer reaches and on no other address of the host."""
    knock = ("import socket, sys\n"
             "for a in sys.argv[1:]:\n"
             "    try:\n"
             "        socket.create_connection((a, 443), timeout=4).close(); print(a, 'open')\n"
             "    except OSError as exc:\n"
             "        print(a, type(exc).__name__)\n")
    for host, address in zip(CORE, ("172.30.99.12", "172.30.99.13"), strict=True):
        found = dict(line.split(" ", 1) for line in on(
            host, "python3", "-c", knock, address, "127.0.0.1").splitlines())
        assert found == {address: "open", "127.0.0.1": "ConnectionRefusedError"}, (host, found)
        settings = on(host, "grep", "-c", f"^GATEWAY_BIND={address}$", "/opt/jafar/.env.ec2")
        assert settings.strip() == "1", host


def test_from_a_core_host_each_data_port_serves_tls_only(split):
    for host in CORE:
        found = json.loads(on(host, "python3", "-c", PROBE, DATA_IP,
                              "/opt/jafar/secrets/data_ca_crt", json.dumps(PORTS)))
        for name in PORTS:
            assert found[name]["tls"].startswith("ok TLSv1."), (host, name, found)
            assert found[name]["plain"].startswith("refused"), (host, name, found)


def test_any_other_private_address_is_dropped_by_the_firewall(split):
    """A throwaway container on the sandbox's private network: not a core host."""
    image = subprocess.run(["docker", "inspect", "--format", "{{.Config.Image}}", DATA],
                           capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    proc = subprocess.run(["docker", "run", "--rm", "--network", "jafar-sandbox",
                           "--entrypoint", "python3", image, "-c", PROBE, DATA_IP, "/dev/null",
                           json.dumps(PORTS)],
                          capture_output=True, text=True, timeout=180, check=True)
    found = json.loads(proc.stdout)
    for name in PORTS:
        assert found[name]["plain"].startswith("unreachable"), (name, found)
        assert found[name]["tls"].startswith("failed"), (name, found)


def test_each_core_hosts_prometheus_scrapes_every_hosts_node_exporter(split):
    """On its private address node_exporter answers the core hosts' Prometheus (the data
    host's disk alerts can fire), and from any other address the firewall drops it."""
    want = {core: {"host.docker.internal:9100"} | {f"{ip}:9101" for ip in ALL_IPS
                                                   if ip != IPS[core]} for core in CORE}

    def node_up() -> dict[str, set[str]]:
        answer = json.loads(inv("monitor.status", "--json", timeout=120).stdout)
        return {core: {t["instance"] for t in answer["targets"] if t["host"] == core
                       and t["job"] == "node" and t["health"] == "up"} for core in CORE}
    deadline = time.monotonic() + 90
    seen = node_up()
    while seen != want and time.monotonic() < deadline:
        time.sleep(5)
        seen = node_up()
    assert seen == want
    knock = knock_from_elsewhere(DATA_IP, 9101)
    assert knock.startswith("unreachable"), knock


def knock_from_elsewhere(address: str, port: int) -> str:
    """A TCP connection to address:port from a throwaway container on the sandbox network
    (not a core host): 'answered' or 'unreachable <error>'."""
    image = subprocess.run(["docker", "inspect", "--format", "{{.Config.Image}}", DATA],
                           capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    probe = ("import socket,sys\ntry:\n    socket.create_connection((sys.argv[1], "
             "int(sys.argv[2])), timeout=4)\n    print('answered')\nexcept OSError as e:\n"
             "    print('unreachable', type(e).__name__)\n")
    return subprocess.run(["docker", "run", "--rm", "--network", "jafar-sandbox",
                           "--entrypoint", "python3", image, "-c", probe, address, str(port)],
                          capture_output=True, text=True, timeout=120, check=True).stdout


def test_a_core_host_holds_no_data_only_secret(split):
    for host in CORE:
        names = set(on(host, "ls", "/opt/jafar/secrets").split())
        assert "data_ca_crt" in names
        assert not names & {"mongo_root_password", "postgres_password", "mongo_keyfile",
                            "data_tls_key", "data_tls_crt"}, (host, names)
    on_data = set(on(DATA, "ls", "/opt/jafar/secrets").split())
    assert {"data_tls_key", "mongo_keyfile", "mongo_root_password"} <= on_data


def test_every_host_runs_its_containers_in_a_remapped_user_namespace(split):
    r = inv("host.check", "--json", timeout=600)
    report = json.loads(r.stdout)
    remap = [c for c in report["controls"] if c["control"].startswith("docker userns-remap")]
    assert len(remap) == 3 and all(c["ok"] for c in remap), remap
    assert r.returncode == 0, [c for c in report["controls"] if not c["ok"]]
    # seen from the host, a container's uid u runs as 231072 + u: the stores' users (999)
    # and the gateway's root (0) are unprivileged there
    for host, needle, uid in ((DATA, "/usr/local/bin/mongod --replSet", 232071),
                              (DATA, "redis-server", 232071), (DATA, "postgres -c", 232071),
                              (CORE[0], "nginx: master process", 231072)):
        found = {int(line.split()[0]) for line in on(host, "ps", "-eo", "uid=,args=").splitlines()
                 if needle in line}
        assert found == {uid}, (host, needle, found)


def alertmanager(host: str, path: str, post: str = "") -> dict | list:
    """Alertmanager's API on a core host, from inside its container (no port is opened)."""
    cid = on(host, "docker", "ps", "--quiet", "--filter",
             "label=com.docker.compose.service=alertmanager").split()[0]
    extra = ["--header", "Content-Type: application/json", "--post-data", post] if post else []
    return json.loads(on(host, "docker", "exec", cid, "wget", "-q", "-O", "-", *extra,
                         f"http://127.0.0.1:9093{path}"))


def test_the_core_hosts_alertmanagers_are_one_cluster_and_share_their_silences(split):
    """Two core hosts: their Alertmanagers gossip over the private addresses (one page per
    alert, a silence holds everywhere); the gossip port is dropped from any other address."""
    want = {f"{IPS[c]}:9094" for c in CORE}
    deadline = time.monotonic() + 90
    while True:
        status = {c: alertmanager(c, "/api/v2/status")["cluster"] for c in CORE}
        peers = {c: {p["address"] for p in s.get("peers") or []} for c, s in status.items()}
        if all(s["status"] == "ready" and peers[c] == want for c, s in status.items()):
            break
        assert time.monotonic() < deadline, status
        time.sleep(3)
    now = time.time()
    silence = json.dumps({
        "matchers": [{"name": "alertname", "value": "E2EGossipProbe", "isRegex": False}],
        "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "endsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 300)),
        "createdBy": "e2e", "comment": "gossip probe"})
    made = alertmanager(CORE[0], "/api/v2/silences", post=silence)["silenceID"]
    deadline = time.monotonic() + 30
    while made not in {s["id"] for s in alertmanager(CORE[1], "/api/v2/silences")}:
        assert time.monotonic() < deadline, "the silence did not reach the other core host"
        time.sleep(1)
    knock = knock_from_elsewhere(IPS[CORE[0]], 9094)
    assert knock.startswith("unreachable"), knock
