"""Helpers for the mongod stand-in tests: stand-in processes on loopback, the real mongosh.

The stand-in is NOT MongoDB (no MongoDB server can be installed on these machines); these tests
drive it with the real MongoDB Shell (mongosh, from npm) and pymongo.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import bson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT = Path(__file__).resolve().parent.parent.parent
IMAGE_DIR = ROOT / "sandbox" / "images" / "mongo"
MONGOD = IMAGE_DIR / "mongod"
# mongosh 1.10.6 (the one the image ships): the copy fetch-vendor.sh fetches, or MONGOSH_1_10 set
# to a mongosh 1.10 package directory (as tests/static does).
VENDORED_MONGOSH = Path(os.environ.get("MONGOSH_1_10", IMAGE_DIR / "vendor" / "node_modules" /
                                       "mongosh")) / "bin" / "mongosh.js"
START_TIMEOUT = 60.0  # generous: bin/test runs these niced beside the drills
MONGOSH_TIMEOUT = 60


def free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Standin:
    """One stand-in mongod process on 127.0.0.1."""

    def __init__(self, port: int, dbpath: Path, args: list[str], log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        self.port = port
        self.dbpath = dbpath
        self.args = args
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Standin:
        self.dbpath.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [sys.executable, str(MONGOD), "--port", str(self.port), "--bind_ip", "127.0.0.1",
             "--dbpath", str(self.dbpath), *self.args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(self.env or {})})
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"stand-in on {self.port} exited with {self.proc.returncode}: "
                                     f"{self.log_path.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError(f"stand-in on {self.port} did not listen within {START_TIMEOUT}s")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


def run_mongod(args: list[str], timeout: float = 10) -> subprocess.CompletedProcess[str]:
    """Run the stand-in expecting it to refuse to start."""
    return subprocess.run([sys.executable, str(MONGOD), *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def find_mongosh() -> str:
    found = os.environ.get("MONGOSH") or shutil.which("mongosh")
    if not found:
        pytest.fail("mongosh (the real MongoDB Shell) is not installed: these stand-in tests need "
                    "it on PATH (or MONGOSH=/path). Install it with: npm install -g mongosh@2.12.0",
                    pytrace=False)
    return found


def run_mongosh(shell: list[str], port: int, script: str, env: dict[str, str] | None = None,
                check: bool = True, tls_ca: Path | None = None,
                selection_timeout_ms: int | None = None) -> object:
    """Run `script` in mongosh against 127.0.0.1:port; the script prints one EJSON line last.

    Credentials are passed in the environment (never on the command line); a script logs in
    with db.auth(process.env.U, process.env.P) when it needs to. With tls_ca, mongosh connects
    with --tls and that CA file; selection_timeout_ms shortens a connection that must fail.
    """
    home = os.environ.get("STANDIN_MONGOSH_HOME", "/tmp/standin-mongosh-home")
    os.makedirs(home, exist_ok=True)
    full_env = {**os.environ, "HOME": home, **(env or {})}
    uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    if selection_timeout_ms is not None:
        uri += f"&serverSelectionTimeoutMS={selection_timeout_ms}"
    tls_args = ["--tls", "--tlsCAFile", str(tls_ca)] if tls_ca else []
    proc = subprocess.run(
        [*shell, "--quiet", "--norc", *tls_args, uri, "--eval", script],
        capture_output=True, text=True, timeout=MONGOSH_TIMEOUT, env=full_env,
        stdin=subprocess.DEVNULL)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if check and (proc.returncode != 0 or not lines):
        raise AssertionError(f"mongosh failed ({proc.returncode}):\nstdout: {proc.stdout}\n"
                             f"stderr: {proc.stderr}")
    if not lines:
        return {"_rc": proc.returncode, "_stderr": proc.stderr}
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"_rc": proc.returncode, "_stdout": proc.stdout, "_stderr": proc.stderr}


# ---- TLS: a throwaway CA and certificates, made for the test session ---------------------------
@dataclass
class TLSFiles:
    """PEM files for the TLS tests: `ca` is what clients and members trust; `pem` (certificate and
    key in one file, as mongod wants) names localhost and 127.0.0.1; `wrong_name` is signed by the
    same CA but names another host only; `not_a_cert` is text, not a certificate."""

    ca: Path
    pem: Path
    wrong_name: Path
    not_a_cert: Path


NOT_A_CERT_TEXT = "this-is-not-a-certificate: secret-looking-content-4711"


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


CA = tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path]


def make_ca(directory: Path) -> CA:
    """A throwaway CA (EC P-256, one day): (key, certificate, path of its PEM certificate)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jafar stand-in test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    path = directory / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def issue_pem(ca: CA, path: Path, names: Sequence[str]) -> Path:
    """A server certificate signed by `ca` with these SANs (host names or IP addresses), written
    with its key into one PEM file (mode 0600). Both server and client use (EKU), as member
    certificates need: members present theirs when they connect to each other."""
    ca_key, ca_cert, _ = ca
    key = ec.generate_private_key(ec.SECP256R1())
    sans = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + _key_pem(key))
    os.chmod(path, 0o600)
    return path


def make_tls_files(directory: Path) -> TLSFiles:
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca(directory)
    not_a_cert = directory / "not-a-cert.pem"
    not_a_cert.write_text(NOT_A_CERT_TEXT + "\n")
    return TLSFiles(
        ca=ca[2],
        pem=issue_pem(ca, directory / "server.pem", ["localhost", "127.0.0.1"]),
        wrong_name=issue_pem(ca, directory / "wrong-name.pem", ["wrong.example"]),
        not_a_cert=not_a_cert)


# ---- raw OP_MSG, and a proxy that loses a reply -------------------------------------------------
OP_MSG = 2013
MORE_TO_COME = 2
PROXY_TIMEOUT = 20.0


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return data


def _read_message(sock: socket.socket) -> bytes:
    header = _recv_exactly(sock, 16)
    (length,) = struct.unpack_from("<i", header)
    return header + _recv_exactly(sock, length - 16)


def op_msg_command(port: int, doc: dict, timeout: float = 10) -> dict:
    """Send one command as a raw OP_MSG on a new connection (no driver to add or change lsid,
    txnNumber or anything else) and return the decoded reply."""
    payload = struct.pack("<I", 0) + b"\x00" + bson.encode(doc)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(struct.pack("<iiii", 16 + len(payload), 11, 0, OP_MSG) + payload)
        reply = _read_message(sock)
    _, _, response_to, op_code = struct.unpack_from("<iiii", reply)
    assert (op_code, response_to) == (OP_MSG, 11)
    assert reply[20] == 0  # one body section
    return bson.decode(reply[21:])


class ReplyLosingProxy:
    """A TCP proxy to a stand-in on 127.0.0.1 that relays one message at a time. Armed with
    lose_next_reply(), the next `command` request goes to the stand-in, which runs it and
    answers, but the answer is dropped and the client's connection closed: a network error
    after the write was applied, what makes a driver retry a retryable write. `seen` holds the
    body of every `command` request relayed."""

    def __init__(self, upstream_port: int, command: str = "insert") -> None:
        self.upstream_port = upstream_port
        self.command = command
        self.seen: list[dict] = []
        self._armed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def lose_next_reply(self) -> None:
        self._armed.set()

    def close(self) -> None:
        self._listener.close()
        for sock in list(self._sockets):
            try:
                sock.close()
            except OSError:
                pass

    def __enter__(self) -> ReplyLosingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        upstream = None
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port),
                                                timeout=PROXY_TIMEOUT)
            self._sockets += [client, upstream]
            client.settimeout(PROXY_TIMEOUT)
            while True:
                request = _read_message(client)
                body, flags = None, 0
                if struct.unpack_from("<i", request, 12)[0] == OP_MSG:
                    (flags,) = struct.unpack_from("<I", request, 16)
                    if request[20] == 0:  # the body section comes first (pymongo, mongosh)
                        (size,) = struct.unpack_from("<i", request, 21)
                        body = bson.decode(request[21:21 + size])
                upstream.sendall(request)
                if flags & MORE_TO_COME:
                    continue  # no reply to this one
                reply = _read_message(upstream)
                if body is not None and next(iter(body), None) == self.command:
                    self.seen.append(body)
                    if self._armed.is_set():
                        self._armed.clear()
                        return  # the reply is lost; the connection closes
                client.sendall(reply)
        except (OSError, EOFError):
            pass
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    try:
                        sock.close()
                    except OSError:
                        pass
