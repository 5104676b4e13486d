"""One stand-in member: its replica set view, peers, heartbeats and replication of users/data.

Replication here is a stand-in's: after each write the primary pushes a full snapshot of the
replicated part (users and documents) to every reachable secondary; a heartbeat thread pushes
the config and the snapshot to members that are behind (after a restart, say). There are no
elections and no failover.
"""

from __future__ import annotations

import copy
import datetime
import itertools
import ssl
import threading
import time
from typing import TYPE_CHECKING

from bson import Int64, ObjectId

from . import log, replset, scram, wire
from .cursors import CursorRegistry
from .errors import CommandError

if TYPE_CHECKING:
    from .options import Options
    from .store import Store

HEARTBEAT_TIMEOUT = 2.0


class PeerError(Exception):
    pass


class Peer:
    """A cached, authenticated (keyfile) connection to another member."""

    def __init__(self, member: Member, host: str) -> None:
        self.member = member
        self.host = host
        self.lock = threading.Lock()
        self.client = None

    def command(self, doc: dict, timeout: float = HEARTBEAT_TIMEOUT) -> dict:
        with self.lock:
            try:
                if self.client is None:
                    name, port = replset.split_host(self.host)
                    client = wire.WireClient(name, port, timeout, self.member.opts.client_tls)
                    try:
                        if self.member.opts.key:
                            scram.client_authenticate(
                                client.command, "__system", "local", self.member.opts.key
                            )
                    except BaseException:
                        client.close()
                        raise
                    self.client = client
                self.client.sock.settimeout(timeout)
                return self.client.command("admin", doc)
            except (
                OSError,
                EOFError,
                ValueError,
                KeyError,
                wire.ProtocolError,
                scram.ScramError,
            ) as exc:
                if self.client is not None:
                    self.client.close()
                    self.client = None
                if isinstance(exc, ssl.SSLCertVerificationError):
                    exc = f"TLS peer certificate validation failed: {exc.verify_message}"
                raise PeerError(f"{self.host}: {exc or type(exc).__name__}") from None

    def close(self) -> None:
        with self.lock:
            if self.client is not None:
                self.client.close()
                self.client = None


class Member:
    def __init__(self, opts: Options, store: Store) -> None:
        self.opts = opts
        self.store = store
        self.process_id = ObjectId()
        self.started = time.time()
        self.connection_ids = itertools.count(1)
        self.topology_counter = 0
        self.topology_cond = threading.Condition()
        self.system_creds = {}
        if opts.key:
            # Member-to-member authentication: user __system@local, the key as its password.
            self.system_creds = {
                m: scram.make_credentials(m, "__system", opts.key) for m in scram.MECHANISMS
            }
        self.peers = {}
        self.peers_lock = threading.Lock()
        self.health = {}  # host -> {"health": 0|1, "state": str, "last": datetime, "error": str}
        self.hb_wake = threading.Event()
        self.stopping = threading.Event()
        self.initiate_lock = threading.Lock()
        self.cursors = CursorRegistry()  # open cursors (getMore), this member's own

    # ---- replica set view -------------------------------------------------------------
    @property
    def config(self) -> dict | None:
        return self.store.state["replset"]["config"]

    @property
    def me(self) -> str | None:
        return self.store.state["replset"]["me"]

    def state(self) -> str:
        """PRIMARY/SECONDARY/ARBITER; STARTUP before a config; STANDALONE without --replSet."""
        if not self.opts.replset:
            return "STANDALONE"
        config = self.config
        if config is None:
            return "STARTUP"
        return replset.member_state(config, self.me) or "REMOVED"

    def has_users(self) -> bool:
        """Whether users exist here. An arbiter holds no user data (as in MongoDB, where the
        only way to log on to an arbiter with authorization on is the localhost exception)."""
        return self.state() != "ARBITER" and self.store.has_users()

    def is_writable_primary(self) -> bool:
        state = self.state()
        return state in ("STANDALONE", "PRIMARY")

    def primary_host(self) -> str | None:
        """The primary's host, unless heartbeats say it is unreachable."""
        config = self.config
        if config is None:
            return None
        primary = replset.primary_member(config)
        if primary is None:
            return None
        if primary["host"] != self.me and self.health.get(primary["host"], {}).get("health") == 0:
            return None
        return primary["host"]

    def bump_topology(self) -> None:
        with self.topology_cond:
            self.topology_counter += 1
            self.topology_cond.notify_all()

    def topology_version(self) -> dict:
        return {"processId": self.process_id, "counter": Int64(self.topology_counter)}

    def wait_topology_change(self, topology_version: object, max_wait: float) -> None:
        """Awaitable hello: wait until the topology changes or max_wait seconds pass."""
        if (
            not isinstance(topology_version, dict)
            or topology_version.get("processId") != self.process_id
        ):
            return
        deadline = time.monotonic() + max(0.0, min(max_wait, 60.0))
        with self.topology_cond:
            while (
                self.topology_counter == topology_version.get("counter")
                and not self.stopping.is_set()
            ):
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self.topology_cond.wait(min(left, 1.0))

    def peer(self, host: str) -> Peer:
        with self.peers_lock:
            if host not in self.peers:
                self.peers[host] = Peer(self, host)
            return self.peers[host]

    # ---- applying a config --------------------------------------------------------------
    def apply_config(self, config: dict, me: str, reason: str) -> None:
        with self.store.lock:
            self.store.state["replset"]["config"] = config
            self.store.state["replset"]["me"] = me
            self.store.save()
        log.info(
            "REPL",
            "Applied replica set config",
            reason=reason,
            version=config["version"],
            me=me,
            state=self.state(),
        )
        self.bump_topology()
        self.hb_wake.set()

    def heartbeat_reply(self) -> dict:
        config = self.config
        return {
            "setName": self.opts.replset,
            "processId": self.process_id,
            "state": self.state(),
            "configVersion": config["version"] if config else -1,
            "config": config,
            "repl": self.store.repl_version(),
            "ok": 1.0,
        }

    def initiate(self, config: dict) -> dict:
        """replSetInitiate: validate, check that every member answers, apply, tell the others."""
        if not self.initiate_lock.acquire(blocking=False):
            raise CommandError(23, "already initializing")
        try:
            if self.config is not None:
                raise CommandError(23, "already initialized")
            config = replset.normalize(config, self.opts.replset)
            me = None
            failures = []
            for member in config["members"]:
                try:
                    reply = self.peer(member["host"]).command(
                        {"standinHeartbeat": 1, "setName": self.opts.replset}
                    )
                except PeerError as exc:
                    failures.append(f"{member['host']} failed with {exc}")
                    continue
                if not reply.get("ok"):
                    failures.append(f"{member['host']} failed with {reply.get('errmsg')}")
                elif reply.get("processId") == self.process_id:
                    if me is not None:
                        raise replset._invalid("two members of the configuration map to this node")
                    me = member["host"]
                elif reply.get("setName") != self.opts.replset:
                    failures.append(
                        f"{member['host']}: Our set name did not match that of {member['host']}"
                    )
                elif reply.get("configVersion", -1) != -1:
                    failures.append(
                        f"{member['host']} already has a replica set config "
                        "(has data already, cannot initiate set)"
                    )
            if me is None:
                raise replset._invalid(
                    "No host described in new configuration with "
                    f"{{version: {config['version']}, term: 0}} "
                    f"for replica set {self.opts.replset} maps to this node"
                )
            if failures:
                raise CommandError(
                    74,
                    "replSetInitiate quorum check failed because not all proposed set "
                    "members responded affirmatively: " + ", ".join(failures),
                )
            self.apply_config(config, me, "replSetInitiate")
        finally:
            self.initiate_lock.release()
        for member in config["members"]:
            if member["host"] != me:
                self.push_config(member["host"])
        if self.state() == "PRIMARY":
            self.replicate()
        return config

    def push_config(self, host: str) -> bool:
        try:
            reply = self.peer(host).command({"standinApplyConfig": self.config, "yourHost": host})
        except PeerError as exc:
            log.warning("REPL", "Could not push the config to a member", host=host, error=str(exc))
            return False
        if not reply.get("ok"):
            log.warning("REPL", "A member refused the config", host=host, error=reply.get("errmsg"))
            return False
        return True

    def receive_config(self, config: dict, your_host: str) -> bool:
        if not isinstance(config, dict) or config.get("_id") != self.opts.replset:
            raise CommandError(
                93,
                f"config is for set {config.get('_id') if isinstance(config, dict) else None}, "
                f"this node runs --replSet {self.opts.replset}",
            )
        if replset.find_member(config, your_host) is None:
            raise CommandError(93, f"{your_host} is not a member of the config")
        current = self.config
        if current is not None and current["version"] >= config["version"] and self.me == your_host:
            return False
        self.apply_config(config, your_host, "pushed by a member")
        return True

    # ---- replication of users and data ----------------------------------------------------
    def snapshot_command(self) -> dict:
        with self.store.lock:
            return {
                "standinSync": 1,
                "users": copy.deepcopy(self.store.state["users"]),
                "data": copy.deepcopy(self.store.state["data"]),
                "catalog": copy.deepcopy(self.store.state.get("catalog", {})),
                "sessions": copy.deepcopy(self.store.state.get("sessions", {})),
                "repl": self.store.repl_version(),
            }

    def secondaries(self) -> list[str]:
        config = self.config
        if config is None:
            return []
        return [
            m["host"]
            for m in config["members"]
            if m["host"] != self.me and replset.member_state(config, m["host"]) == "SECONDARY"
        ]

    def replicate(self) -> int:
        """Push the replicated state to the reachable secondaries; returns how many took it."""
        if self.state() != "PRIMARY":
            return 0
        snapshot = self.snapshot_command()
        acks = 0
        for host in self.secondaries():
            if self.health.get(host, {}).get("health") == 0:
                continue  # known down: the heartbeat catches it up when it is back
            try:
                reply = self.peer(host).command(snapshot)
            except PeerError as exc:
                self._mark(host, None, str(exc))
                continue
            if reply.get("ok"):
                acks += 1
        return acks

    def receive_snapshot(
        self,
        users: list,
        data: dict,
        version: list,
        sessions: dict | None = None,
        catalog: dict | None = None,
    ) -> list:
        if self.state() != "SECONDARY":
            raise CommandError(
                10107, f"this member is {self.state()}, it only takes snapshots as a SECONDARY"
            )
        with self.store.lock:
            mine = self.store.repl_version()
            if mine[0] == version[0] and mine[1] >= version[1]:
                return mine
            self.store.state["users"] = users
            self.store.state["data"] = data
            if sessions is not None:  # the retryable writes' table goes with the documents
                self.store.state["sessions"] = sessions
            if catalog is not None:  # the collections' options, UUIDs and indexes too
                self.store.state["catalog"] = catalog
            self.store.state["repl"] = {"epoch": version[0], "seq": int(version[1])}
            self.store.save()
            return self.store.repl_version()

    # ---- heartbeats -----------------------------------------------------------------------
    def _mark(self, host: str, reply: dict | None, error: str | None = None) -> None:
        before = self.primary_host()
        entry = self.health.setdefault(host, {})
        entry["last"] = datetime.datetime.now(datetime.UTC)
        if reply is None:
            if entry.get("health") != 0:
                log.info("REPL", "Member is now unreachable", host=host, error=error)
            entry.update(health=0, state="(not reachable/healthy)", error=error or "")
        else:
            if entry.get("health") == 0:
                log.info("REPL", "Member is reachable again", host=host)
            entry.update(health=1, state=reply.get("state"), error="")
        if self.primary_host() != before:
            self.bump_topology()

    def ping(self, host: str) -> dict | None:
        """One heartbeat to host: records its health; returns the reply or None."""
        try:
            reply = self.peer(host).command({"standinHeartbeat": 1, "setName": self.opts.replset})
        except PeerError as exc:
            self._mark(host, None, str(exc))
            return None
        if not reply.get("ok"):
            self._mark(host, None, reply.get("errmsg"))
            return None
        self._mark(host, reply)
        return reply

    def heartbeat_round(self) -> None:
        config = self.config
        if config is None:
            return
        for member in config["members"]:
            host = member["host"]
            if host == self.me or self.stopping.is_set():
                continue
            reply = self.ping(host)
            if reply is None:
                continue
            theirs = reply.get("configVersion", -1)
            if theirs < config["version"]:
                self.push_config(host)
            elif theirs > config["version"] and isinstance(reply.get("config"), dict):
                if replset.find_member(reply["config"], self.me):
                    self.apply_config(reply["config"], self.me, f"newer config from {host}")
                    return
            if (
                self.state() == "PRIMARY"
                and replset.member_state(config, host) == "SECONDARY"
                and reply.get("repl") != self.store.repl_version()
            ):
                try:
                    self.peer(host).command(self.snapshot_command())
                except PeerError as exc:
                    self._mark(host, None, str(exc))

    def heartbeat_loop(self) -> None:
        while not self.stopping.is_set():
            config = self.config
            interval = 2.0
            if config is not None:
                interval = max(
                    0.1, config["settings"].get("heartbeatIntervalMillis", 2000) / 1000.0
                )
            self.hb_wake.wait(interval)
            self.hb_wake.clear()
            if self.stopping.is_set():
                break
            try:
                self.heartbeat_round()
            except Exception as exc:  # keep the thread alive; say what went wrong
                log.error("REPL", "Heartbeat round failed", error=repr(exc))

    def stop(self) -> None:
        self.stopping.set()
        self.hb_wake.set()
        with self.topology_cond:
            self.topology_cond.notify_all()
        with self.peers_lock:
            for peer in self.peers.values():
                peer.close()
