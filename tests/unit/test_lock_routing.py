"""The lock's and the gateway routing's exact commands, and how a held lock is described."""

from __future__ import annotations

import json
import os

from fabfile.commands import audit as audit_cmd
from fabfile.commands import lock, routing
from fabfile.ops import lock as lock_ops
from fabfile.ops import routing as routing_ops
from tests.conftest import shipped
from tests.unit.test_scale import container


def test_acquire_fills_a_new_lock_then_renames_it_into_place():
    new = "/opt/jafar/state/locks/.deploy.tok"
    assert lock.acquire("/opt/jafar", "deploy", "tok") == "\n".join([
        "set -eu",
        "now=$(date +%s)",
        "mkdir -p /opt/jafar/state/locks",
        "chown --reference=/opt/jafar /opt/jafar/state /opt/jafar/state/locks 2>/dev/null || true",
        f"mkdir {new}",
        f"printf '%s\\n' \"$now\" > {new}/renewed",
        f"printf '%s\\n' tok > {new}/token",
        f"cat > {new}/holder.json",
        f"chmod 0777 {new} && chmod 0666 {new}/holder.json {new}/token {new}/renewed",
        f"if mv -T {new} /opt/jafar/state/locks/deploy 2>/dev/null; then",
        '  echo "ACQUIRED $now"',
        "else",
        f"  rm -rf {new}",
        '  echo "HELD $now $(cat /opt/jafar/state/locks/deploy/renewed 2>/dev/null || echo 0)"',
        "  cat /opt/jafar/state/locks/deploy/holder.json 2>/dev/null || true",
        "  echo",
        "fi",
        "if [ -s /var/log/jafar/audit.log ]; then echo \"AUDIT $(tail -n 1 /var/log/jafar/audit.log"
        " | sha256sum | cut -d' ' -f1) $(wc -l < /var/log/jafar/audit.log)\"; else echo 'AUDIT - "
        "0'; fi",
    ])


def test_renew_release_and_force_release():
    assert lock.renew("/opt/jafar", "deploy", "tok") == (
        '{ [ "$(cat /opt/jafar/state/locks/deploy/token 2>/dev/null)" = tok ] && date +%s > '
        "/opt/jafar/state/locks/deploy/renewed; } 2>/dev/null || true; ")
    assert lock.release("/opt/jafar", "backup", "tok") == (
        'if [ "$(cat /opt/jafar/state/locks/backup/token 2>/dev/null)" = tok ]; then rm -rf '
        "/opt/jafar/state/locks/backup && echo RELEASED; else echo NOT-OURS; fi")
    assert lock.force_release("/opt/jafar", "deploy") == (
        "if [ -d /opt/jafar/state/locks/deploy ]; then rm -rf /opt/jafar/state/locks/deploy && "
        "echo RELEASED; else echo FREE; fi")


def test_audit_append_runs_the_release_whatever_happens():
    assert audit_cmd.append_then("release") == (
        "sudo -n /usr/local/sbin/jafar-audit-append; rc=$?; release; exit $rc")
    assert audit_cmd.sudoers("deploy") == (
        "deploy ALL=(root) NOPASSWD: /usr/local/sbin/jafar-audit-append\n")


def holder(machine="laptop", pid=1234):
    return json.dumps({"person": "alice", "user": "al", "machine": machine, "pid": pid,
                       "command": "inv deploy --host prod", "started": "2026-11-29T10:00:00Z"})


def test_a_held_lock_names_its_holder():
    held = lock_ops.parse_status("core-1", f"HELD 1000 940\n{holder()}\nAUDIT - 0\n")
    env = shipped("prod")
    message = lock_ops.refusal(env, held, "other-machine")
    assert message == ("core-1: refused: the deploy lock is held by alice (user al on laptop, "
                       "pid 1234, `inv deploy --host prod`) since 2026-11-29T10:00:00Z, last "
                       "renewed 60 s ago; wait for it to finish (inv lock.status --host prod)")


def test_a_dead_pid_on_this_machine_is_stale():
    dead = 2**22 + 12345  # above pid_max on these machines: no such process
    held = lock_ops.parse_status("core-1", f"HELD 1000 990\n{holder('me', dead)}\n")
    message = lock_ops.refusal(shipped("prod"), held, "me")
    assert message.startswith("core-1: the deploy lock is STALE: held by alice")
    assert f"pid {dead} no longer runs on me" in message
    assert message.endswith("If that run is really gone, clear it with: "
                            "inv lock.release --host prod")
    alive = lock_ops.parse_status("core-1", f"HELD 1000 990\n{holder('me', os.getpid())}\n")
    assert alive.stale_reason(600, "me") is None


def test_a_lock_not_renewed_within_the_ttl_is_stale():
    held = lock_ops.parse_status("core-1", f"HELD 5000 1000\n{holder()}\n")
    assert held.stale_reason(600, "elsewhere") == "not renewed for 66 min (lock_ttl 10 min)"
    assert held.stale_reason(7200, "elsewhere") is None


def test_free_and_acquired_are_not_held():
    assert lock_ops.parse_status("h", "FREE 100\nAUDIT - 0\n") is None
    assert lock_ops.parse_status("h", "ACQUIRED 100\nAUDIT abc 3\n") is None
    assert lock_ops.parse_tail("ACQUIRED 100\nAUDIT abc 3\n") == lock_ops.Tail("abc", 3)
    assert lock_ops.parse_tail("ACQUIRED 100\nAUDIT - 0\n") == lock_ops.Tail("0" * 64, 0)


def test_upstreams_list_healthy_replicas_only():
    env = shipped("sandbox")
    cs = [container("api-service", 1, ip="172.20.0.10"),
          container("api-service", 2, ip="172.20.0.9"),
          container("api-service", 3, health="starting", ip="172.20.0.11"),
          container("wallet-service", 1, ip="172.20.0.12"),
          container("ledger-service", 1, state_="exited", ip="172.20.0.13")]
    routes = routing_ops.routes(env, cs, excluded=frozenset({"id-wallet-service-1"}))
    assert routes["api-service"] == ["172.20.0.10", "172.20.0.9"]
    assert routes["wallet-service"] == [] and routes["ledger-service"] == []
    conf = routing.gateway_conf(routes, ("api.bank.example", "10.0.1.5"), ("10.0.0.0/24",))
    assert conf.splitlines()[:13] == [
        "# written by the jafar deploy suite (inv core.up / scale / release): routable replicas "
        "only; do not edit",
        "map $host $jafar_known_host {",
        "    default 0;",
        "    api.bank.example 1;",
        "    10.0.1.5 1;",
        "}",
        "set_real_ip_from 10.0.0.0/24;",
        "upstream jafar_api {",
        "    server 172.20.0.9:3000 max_fails=1 fail_timeout=5s;",
        "    server 172.20.0.10:3000 max_fails=1 fail_timeout=5s;",
        "}",
        "upstream jafar_auth {",
        "    server 127.0.0.1:9 down;",
    ]
    assert conf.count("upstream ") == 7
    assert "upstream jafar_wallet {\n    server 127.0.0.1:9 down;\n}" in conf


def test_routing_apply_checks_before_reload_and_waits_for_the_old_workers():
    script = routing.apply("/opt/jafar", "jafar-core", 45)
    lines = script.splitlines()
    assert lines[:6] == [
        "set -eu",
        "mkdir -p /opt/jafar/state/gateway && chmod 0755 /opt/jafar/state/gateway",
        "cat > /opt/jafar/state/gateway/gateway.conf.new",
        "if cmp -s /opt/jafar/state/gateway/gateway.conf.new /opt/jafar/state/gateway/"
        "gateway.conf; then rm -f /opt/jafar/state/gateway/gateway.conf.new; echo "
        '"UNCHANGED $(date +%s)"; exit 0; fi',
        "if [ -f /opt/jafar/state/gateway/gateway.conf ]; then cp -p /opt/jafar/state/gateway/"
        "gateway.conf /opt/jafar/state/gateway/gateway.conf.prev; else rm -f "
        "/opt/jafar/state/gateway/gateway.conf.prev; fi",
        "chmod 0644 /opt/jafar/state/gateway/gateway.conf.new && mv -f /opt/jafar/state/"
        "gateway/gateway.conf.new /opt/jafar/state/gateway/gateway.conf",
    ]
    assert lines[6] == ("gw=$(docker ps --quiet --filter label=com.docker.compose.project="
                        "jafar-core --filter label=com.docker.compose.service=gateway --filter "
                        "status=running | head -n 1)")
    order = [next(i for i, line in enumerate(lines) if needle in line) for needle in
             ('nginx -t', 'nginx -s reload', 'for p in $old', 'echo "RELOADED')]
    assert order == sorted(order)
    assert "-ge 45 ]" in script
