"""Connections and the executor: strict host keys, timeouts, one connection per host, masking.

Fabric's Connection trusts any host key by default (AutoAddPolicy, no known_hosts). Here every
connection loads the environment's known_hosts and refuses unknown or changed keys before the
first byte of authentication. Every command has a timeout; every line printed goes through the
Masker so no value of the env file reaches the terminal.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import shlex
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import TextIO

import paramiko
from fabric import Config, Connection
from invoke.exceptions import CommandTimedOut

from fabfile.config import Endpoint, Environment, Host
from fabfile.errors import BadInput, StepFailed

MASK = "********"

# paramiko's transport thread logs connection errors with tracebacks to stderr; the suite
# reports them itself, in one line
logging.getLogger("paramiko").addHandler(logging.NullHandler())


class Masker:
    """Replaces every secret value with a fixed mask, longest first (one may contain another)."""

    def __init__(self, secrets: list[str] | tuple[str, ...] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text


class Printer:
    """Per-host prefixed, masked, thread-safe output for people."""

    def __init__(self, masker: Masker, stream: TextIO | None = None) -> None:
        self.mask = masker
        self.stream = stream
        self._lock = threading.Lock()

    def line(self, prefix: str, text: str) -> None:
        stream = self.stream or sys.stdout
        with self._lock:
            for part in (self.mask(text).splitlines() or [""]):
                stream.write(f"[{prefix}] {part}\n" if prefix else f"{part}\n")
            stream.flush()


@dataclass(frozen=True)
class Result:
    command: str
    stdout: str
    stderr: str
    exited: int

    @property
    def ok(self) -> bool:
        return self.exited == 0


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint, as `ssh-keygen -lf` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_name(endpoint: Endpoint) -> str:
    """The name OpenSSH files a host under: `addr` on port 22, `[addr]:port` elsewhere."""
    if endpoint.port == 22:
        return endpoint.address
    return f"[{endpoint.address}]:{endpoint.port}"


def preflight(env: Environment) -> None:
    """Checks that need the local disk but no network: key files and known_hosts exist."""
    endpoints = [h.ssh for h in env.hosts] + ([env.bastion] if env.bastion else [])
    for ep in endpoints:
        if not ep.key.is_file():
            raise BadInput(f"SSH key {ep.key} for {ep.user}@{ep.address} does not exist; "
                           f"set 'key:' for this host in the environment {env.name}")
    if not env.known_hosts.is_file():
        raise BadInput(f"known_hosts file {env.known_hosts} does not exist; "
                       f"record the hosts' keys with: inv host.trust --host {env.name}")


def _connection(env: Environment, ep: Endpoint, gateway: Connection | None) -> Connection:
    config = Config(overrides={"load_ssh_configs": False, "run": {"in_stream": False}})
    conn = Connection(
        ep.address,
        user=ep.user,
        port=ep.port,
        config=config,
        gateway=gateway,
        connect_timeout=env.connect_timeout,
        connect_kwargs={
            "key_filename": [str(ep.key)],
            "look_for_keys": False,
            "allow_agent": False,
            "banner_timeout": env.connect_timeout,
            "auth_timeout": env.connect_timeout,
        },
    )
    # Strict host key checking: known_hosts only, unknown or changed keys are refused.
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    conn.client.load_host_keys(str(env.known_hosts))
    return conn


def open_connection(env: Environment, host: Host) -> Connection:
    """Connect now (not lazily), so host-key and auth problems surface before any step runs."""
    gateway = _connection(env, env.bastion, None) if env.bastion else None
    conn = _connection(env, host.ssh, gateway)
    where = f"{host.ssh.user}@{known_hosts_name(host.ssh)}"
    try:
        conn.open()
    except paramiko.BadHostKeyException as exc:
        raise StepFailed(f"{host.name}: host key of {where} has CHANGED (now "
                         f"{fingerprint(exc.key)}); refusing to connect. If the host was "
                         f"rebuilt, remove its line from {env.known_hosts} and run "
                         f"inv host.trust --host {env.name}") from None
    except paramiko.SSHException as exc:
        if "not found in known_hosts" in str(exc):
            raise StepFailed(f"{host.name}: host key of {where} is not known; refusing to "
                             f"connect. Check and record it: inv host.trust --host "
                             f"{env.name}") from None
        raise StepFailed(f"{host.name}: SSH to {where} failed: {exc}") from None
    except (TimeoutError, OSError) as exc:
        raise StepFailed(f"{host.name}: cannot reach {where}: {exc}") from None
    return conn


class Remote:
    """One host's connection, reused by every step of a run, with sudo, timeouts and masking."""

    def __init__(self, env: Environment, host: Host, printer: Printer,
                 conn: Connection | None = None) -> None:
        self.env = env
        self.host = host
        self.printer = printer
        self._conn = conn
        self.round_trips = 0

    @property
    def conn(self) -> Connection:
        if self._conn is None:
            self._conn = open_connection(self.env, self.host)
        return self._conn

    def wrap(self, command: str) -> str:
        """The command as it is sent: under `sudo -n` when the host says `become: true`."""
        return become(command) if self.host.become else command

    def say(self, text: str) -> None:
        self.printer.line(self.host.name, text)

    def run(self, command: str, *, timeout: int | None = None, check: bool = True) -> Result:
        """Run one command; non-zero exit raises StepFailed unless check=False."""
        wire = self.wrap(command)
        limit = timeout or self.env.command_timeout
        self.round_trips += 1
        try:
            r = self.conn.run(wire, hide=True, warn=True, timeout=limit, in_stream=False)
        except CommandTimedOut:
            raise StepFailed(f"{self.host.name}: command timed out after {limit}s: "
                             f"{self.printer.mask(command)}") from None
        result = Result(command, r.stdout, r.stderr, r.exited)
        if check and not result.ok:
            raise StepFailed(self.failure(result))
        return result

    def failure(self, result: Result) -> str:
        detail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-5:]
        lines = result.command.splitlines()
        shown = lines[0] if len(lines) == 1 else f"(a script of {len(lines)} lines)"
        return self.printer.mask(
            f"{self.host.name}: exit {result.exited}: {shown}"
            + ("\n  " + "\n  ".join(detail) if detail else ""))

    def run_with_input(self, command: str, data: bytes, *, timeout: int | None = None) -> Result:
        """Run a command fed `data` on stdin: how secret files travel (never on argv).

        Invoke's stdin pump sends one byte per 10 ms, so this uses the SSH channel directly.
        """
        wire = self.wrap(command)
        limit = timeout or self.env.command_timeout
        self.round_trips += 1
        transport = self.conn.client.get_transport()
        if transport is None:
            raise StepFailed(f"{self.host.name}: SSH transport is closed")
        chan = transport.open_session(timeout=self.env.connect_timeout)
        try:
            chan.settimeout(limit)
            chan.exec_command(wire)
            chan.sendall(data)
            chan.shutdown_write()
            deadline = time.monotonic() + limit
            out, err = bytearray(), bytearray()
            while not (chan.exit_status_ready() and not chan.recv_ready()
                       and not chan.recv_stderr_ready()):
                if time.monotonic() > deadline:
                    raise StepFailed(f"{self.host.name}: command timed out after {limit}s: "
                                     f"{self.printer.mask(command)}")
                if chan.recv_ready():
                    out += chan.recv(65536)
                elif chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                else:
                    time.sleep(0.01)
            code = chan.recv_exit_status()
        except TimeoutError:
            raise StepFailed(f"{self.host.name}: command timed out after {limit}s: "
                             f"{self.printer.mask(command)}") from None
        finally:
            chan.close()
        result = Result(command, out.decode(errors="replace"), err.decode(errors="replace"), code)
        if not result.ok:
            raise StepFailed(self.failure(result))
        return result

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def become(command: str) -> str:
    """`sudo -n`: never prompt (a prompt would hang); the deploy user needs NOPASSWD sudo."""
    return shlex.join(["sudo", "-n", "sh", "-c", command])


def read_host_key(env: Environment, ep: Endpoint) -> paramiko.PKey:
    """Fetch a host's public key without authenticating (for `host.trust`)."""
    sock: socket.socket | paramiko.Channel
    gateway = None
    if env.bastion is not None and ep != env.bastion:
        gateway = _connection(env, env.bastion, None)
        try:
            gateway.open()
        except paramiko.SSHException as exc:
            raise StepFailed(f"bastion {env.bastion.address}: {exc}; trust the bastion "
                             "first (it is listed first by host.trust)") from None
        transport = gateway.client.get_transport()
        assert transport is not None
        sock = transport.open_channel("direct-tcpip", (ep.address, ep.port), ("127.0.0.1", 0),
                                      timeout=env.connect_timeout)
    else:
        try:
            sock = socket.create_connection((ep.address, ep.port), timeout=env.connect_timeout)
        except OSError as exc:
            raise StepFailed(f"cannot reach {ep.address}:{ep.port}: {exc}") from None
    t = paramiko.Transport(sock)
    try:
        t.start_client(timeout=env.connect_timeout)
        return t.get_remote_server_key()
    except paramiko.SSHException as exc:
        raise StepFailed(f"{ep.address}:{ep.port} did not complete the SSH handshake: {exc}")\
            from None
    finally:
        t.close()
        if gateway is not None:
            gateway.close()
