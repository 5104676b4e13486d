"""Connections and the executor: strict host keys, timeouts, one connection per host, masking.

Fabric's Connection trusts any host key by default (AutoAddPolicy, no known_hosts). Here every
connection loads the environment's known_hosts and refuses unknown or changed keys before the
first byte of authentication. Every command has a timeout; every line printed goes through the
Masker so no value of the env file reaches the terminal.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import shlex
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TextIO

import paramiko
from fabric import Config, Connection

from fabfile.config import Endpoint, Environment, Host
from fabfile.errors import BadInput, StepFailed

MASK = "********"
KEEPALIVE = 10   # seconds of silence before the host is asked whether it is still there
DEAD_AFTER = 20  # seconds without an answer to that question: the host stopped answering

# paramiko's transport thread logs connection errors with tracebacks to stderr; the suite
# reports them itself, in one line
logging.getLogger("paramiko").addHandler(logging.NullHandler())


class Masker:
    """Replaces every secret value with a fixed mask, longest first (one may contain another),
    and also the forms a secret takes on its way through other programs: escaped in JSON,
    percent-encoded in a URL, base64 (HTTP basic auth, Kubernetes-style files). Mask first,
    cut afterwards: a cut secret is no longer recognised."""

    def __init__(self, secrets: list[str] | tuple[str, ...] = ()) -> None:
        self.secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: list[str] | tuple[str, ...]) -> None:
        """Mask these too (a rotation's new values, before anything can print them)."""
        forms = set(self.secrets) | {form for s in secrets if s for form in encoded_forms(s)}
        self.secrets = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text

    def value(self, data: object) -> object:
        """Mask every string inside a structure (before it is serialised)."""
        if isinstance(data, str):
            return self(data)
        if isinstance(data, dict):
            return {self(str(k)): self.value(v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [self.value(v) for v in data]
        return data


def encoded_forms(secret: str) -> set[str]:
    """The secret, and how JSON, URLs and base64 write it (those forms at least 6 characters
    long, so that a short encoding never masks ordinary text)."""
    raw = secret.encode()
    forms = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
             urllib.parse.quote(secret, safe=""),
             urllib.parse.quote_plus(secret), base64.b64encode(raw).decode().rstrip("="),
             base64.urlsafe_b64encode(raw).decode().rstrip("=")}
    return {secret} | {f for f in forms if len(f) >= 6}


SEND_SLICE = 256 * 1024  # bytes handed to paramiko at a time (see Remote._exec)


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
    started = time.monotonic()
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
        waited = time.monotonic() - started
        if waited >= env.connect_timeout - 1 or "banner" in str(exc) or "session" in str(exc):
            raise StepFailed(f"{host.name}: {where} accepted the connection but its SSH server "
                             f"did not answer within {env.connect_timeout}s (timed out after "
                             f"{waited:.0f}s): the host may be frozen or overloaded") from None
        raise StepFailed(f"{host.name}: SSH to {where} failed: {exc}") from None
    except (TimeoutError, OSError) as exc:
        raise StepFailed(f"{host.name}: cannot reach {where}: {exc}") from None
    conn.client.get_transport().set_keepalive(KEEPALIVE)  # type: ignore[union-attr]
    return conn


class Remote:
    """One host's connection, reused by every step of a run, with sudo, timeouts and masking.

    Commands run on their own SSH channel (not Fabric's runner): stdin is sent in one piece,
    output can be streamed line by line, and the command in flight can be stopped with an SSH
    `signal` request on Ctrl-C (closing the client alone leaves it running on the host).
    """

    def __init__(self, env: Environment, host: Host, printer: Printer,
                 conn: Connection | None = None) -> None:
        self.env = env
        self.host = host
        self.printer = printer
        self._conn = conn
        self._active: paramiko.Channel | None = None
        self.round_trips = 0
        self.prologue = ""  # prepended once to the next command (the lock's renewal)

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

    def run(self, command: str, *, timeout: int | None = None, check: bool = True,
            on_line: Callable[[str], None] | None = None) -> Result:
        """Run one command; non-zero exit raises StepFailed unless check=False. `on_line`
        receives each stdout line as it arrives (streaming)."""
        return self._exec(command, None, timeout or self.env.command_timeout, check, on_line)

    def run_with_input(self, command: str, data: bytes, *, timeout: int | None = None,
                       check: bool = True) -> Result:
        """Run a command fed `data` on stdin: how secret files travel (never on argv)."""
        return self._exec(command, data, timeout or self.env.command_timeout, check, None)

    def stream_out(self, command: str, sink: Callable[[bytes], None], *,
                   timeout: int | None = None) -> Result:
        """Run a command whose stdout goes to `sink` a chunk at a time, never held whole (a
        backup file on its way to S3). A sink that raises stops the command."""
        return self._exec(command, None, timeout or self.env.command_timeout, True, None, sink)

    def stream_in(self, command: str, chunks: Iterable[bytes], *,
                  timeout: int | None = None) -> Result:
        """Run a command fed `chunks` on stdin as they come (a file arriving from S3)."""
        return self._exec(command, chunks, timeout or self.env.command_timeout, True, None)

    def _exec(self, command: str, data: bytes | Iterable[bytes] | None, limit: int,
              check: bool, on_line: Callable[[str], None] | None,
              on_bytes: Callable[[bytes], None] | None = None) -> Result:
        sent = self.prologue + command
        self.prologue = ""
        wire = self.wrap(sent)
        self.round_trips += 1
        transport = self.conn.client.get_transport()
        if transport is None or not transport.is_active():
            raise StepFailed(f"{self.host.name}: SSH transport is closed")
        try:
            chan = transport.open_session(timeout=self.env.connect_timeout)
        except (paramiko.SSHException, OSError):
            raise StepFailed(f"{self.host.name}: the host stopped answering (no new channel "
                             f"within {self.env.connect_timeout}s): "
                             f"{self.printer.mask(short(command))}") from None
        self._active = chan
        out, err = bytearray(), bytearray()
        pending = bytearray()
        try:
            chan.settimeout(limit)
            self._start(chan, wire, command)
            # in slices: paramiko's sendall copies what is left after every packet, which is
            # quadratic in the size (a 76 MB upload took 114 s whole, seconds in slices)
            for piece in slices(data):
                chan.sendall(piece)
            chan.shutdown_write()
            deadline = time.monotonic() + limit
            idle = 0.002  # poll fast for quick commands, back off to 50 ms for long ones
            heard = time.monotonic()
            probe: tuple[threading.Event, float] | None = None
            while True:
                if probe is not None and probe[0].is_set():
                    probe, heard = None, time.monotonic()
                if chan.recv_ready():
                    chunk = chan.recv(65536)
                    if on_bytes is not None:
                        try:
                            on_bytes(chunk)
                        except Exception:  # the sink gave up: so does the command
                            stop(chan)
                            raise
                    else:
                        out += chunk
                    if on_line is not None:
                        pending += chunk
                        *lines, rest = pending.split(b"\n")
                        pending = bytearray(rest)
                        for line in lines:
                            on_line(line.decode(errors="replace"))
                elif chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                elif chan.exit_status_ready():
                    # output that arrived between the checks above is buffered by now
                    if not (chan.recv_ready() or chan.recv_stderr_ready()):
                        break
                    continue
                elif time.monotonic() > deadline:
                    raise TimeoutError
                else:
                    quiet = time.monotonic() - heard
                    if probe is None and quiet > KEEPALIVE:
                        probe = (ask_alive(transport), time.monotonic())
                    elif probe is not None and time.monotonic() - probe[1] > DEAD_AFTER:
                        raise StepFailed(f"{self.host.name}: the host stopped answering (no "
                                         f"reply for {quiet:.0f}s, even to a keepalive); the "
                                         "command may still be running there: "
                                         f"{self.printer.mask(short(command))}")
                    time.sleep(idle)
                    idle = min(idle * 1.5, 0.05)
                    continue
                idle, heard = 0.002, time.monotonic()
            code = chan.recv_exit_status()
        except KeyboardInterrupt:
            stop(chan)
            raise
        except TimeoutError:
            raise StepFailed(f"{self.host.name}: command timed out after {limit}s: "
                             f"{self.printer.mask(short(command))}") from None
        finally:
            self._active = None
            chan.close()
        if on_line is not None and pending:
            on_line(pending.decode(errors="replace"))
        result = Result(command, out.decode(errors="replace"), err.decode(errors="replace"), code)
        if check and not result.ok:
            raise StepFailed(self.failure(result))
        return result

    def _start(self, chan: paramiko.Channel, wire: str, command: str) -> None:
        """exec_command, bounded: paramiko waits for the host's reply to it without a limit,
        so a host that froze between opening the channel and answering the request would hang
        the run for ever (the keepalives only watch a command already running). A channel
        whose command is not accepted within connect_timeout is closed: StepFailed."""
        fired = threading.Event()

        def give_up() -> None:
            fired.set()
            chan.close()

        watchdog = threading.Timer(self.env.connect_timeout, give_up)
        watchdog.daemon = True
        watchdog.start()
        try:
            chan.exec_command(wire)
            started = True
        except paramiko.SSHException:  # "Channel closed.": the watchdog's, or the host's
            started = False
        finally:
            watchdog.cancel()
        # (a quick command may already have ended and its channel closed by the host: only
        # the watchdog's own close means it was not started)
        if not started or fired.is_set():
            raise StepFailed(f"{self.host.name}: the host stopped answering (it did not start "
                             f"the command within {self.env.connect_timeout}s): "
                             f"{self.printer.mask(short(command))}")

    def interrupt(self) -> bool:
        """Stop the command in flight from another thread. True when one was running."""
        chan = self._active
        if chan is None or chan.closed:
            return False
        stop(chan)
        return True

    def failure(self, result: Result) -> str:
        """First line: the cause (the command's last error line), then the command in short;
        then the last lines of its output. Masked."""
        mask = self.printer.mask  # before anything is cut: a cut secret would not be masked
        detail = [line for line in mask(result.stderr.strip() or result.stdout.strip())
                  .splitlines() if line.strip()][-5:]
        cause = detail[-1].strip()[:200] if detail else "no output"
        command = mask(short(result.command))
        command = command if len(command) <= 80 else command[:77] + "..."
        return (f"{self.host.name}: {cause} (exit {result.exited}: {command})"
                + ("\n  " + "\n  ".join(detail) if len(detail) > 1 else ""))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def slices(data: bytes | Iterable[bytes] | None) -> Iterator[bytes]:
    """stdin in pieces of at most SEND_SLICE bytes (see Remote._exec)."""
    for chunk in [data] if isinstance(data, bytes) else data or ():
        for start in range(0, len(chunk), SEND_SLICE):
            yield chunk[start:start + SEND_SLICE]


def short(command: str) -> str:
    """A command as error messages show it: its first line, or its size when it is a script."""
    lines = command.splitlines()
    return lines[0] if len(lines) == 1 else f"(a script of {len(lines)} lines)"


def stop(chan: paramiko.Channel, wait: float = 5.0) -> None:
    """Ctrl-C: SIGTERM to the command's process group on the host (sshd delivers it), then
    wait (bounded) for it to end. Closing the client alone would leave it running."""
    send_signal(chan, "TERM")
    deadline = time.monotonic() + wait
    while not chan.exit_status_ready() and time.monotonic() < deadline:
        time.sleep(0.05)


def ask_alive(transport: paramiko.Transport) -> threading.Event:
    """Send an SSH keepalive that wants a reply (OpenSSH answers any global request); the
    event is set when the reply arrives. paramiko's own keepalive wants none, so it cannot
    tell a frozen host, and its global_request() would wait forever."""
    event = threading.Event()
    transport.completion_event = event
    msg = paramiko.Message()
    msg.add_byte(paramiko.common.cMSG_GLOBAL_REQUEST)
    msg.add_string("keepalive@openssh.com")
    msg.add_boolean(True)
    transport._send_user_message(msg)  # noqa: SLF001 - no public API for this request
    return event


def send_signal(chan: paramiko.Channel, name: str) -> None:
    """RFC 4254 "signal" channel request: sshd (OpenSSH 7.8+) sends it to the session's
    process group. paramiko has no public call for it."""
    msg = paramiko.Message()
    msg.add_byte(paramiko.common.cMSG_CHANNEL_REQUEST)
    msg.add_int(chan.remote_chanid)
    msg.add_string("signal")
    msg.add_boolean(False)
    msg.add_string(name)
    transport = chan.get_transport()
    if transport is not None and transport.is_active():
        transport._send_user_message(msg)  # noqa: SLF001 - no public API for this request


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
