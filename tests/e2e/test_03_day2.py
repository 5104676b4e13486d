"""Day-2 drills on the shared deployed sandbox: scale under load with zero failed requests and
every acknowledged write stored, counts kept across a redeploy, the deploy lock (concurrent
runs, kill -9, Ctrl-C), ps and logs, the signed audit trail and its tampering, no canary
anywhere. Every test leaves the sandbox as it found it (api and ledger at 1, no lock).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time

from fabfile import envfile
from tests.conftest import ROOT, clean_environment, command, run_inv
from tests.e2e.sandbox_helpers import HOST, inner, on_host, wait_for_process
from tests.support.load import Load

GATEWAY = "https://127.0.0.1:8443"
CA = ROOT / ".sandbox" / "tls" / "tls.crt"
LOCK = "/opt/jafar/state/locks/deploy"
TRAIL = "/var/log/jafar/audit.log"
UPSTREAMS = "/opt/jafar/state/gateway/gateway.conf"


def inv(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return run_inv(*args, "--host", "sandbox", timeout=timeout)


def running(service: str) -> list[str]:
    return inner("ps", "--quiet", "--filter", "label=com.docker.compose.project=jafar-core",
                 "--filter", f"label=com.docker.compose.service={service}").split()


def routed(upstream: str) -> int:
    conf = on_host("cat", UPSTREAMS).stdout
    block = re.search(r"upstream " + upstream + r" \{(.*?)\}", conf, re.S)
    assert block, conf
    return len(re.findall(r"server \d+\.\d+\.\d+\.\d+:3000 ", block.group(1)))


def trail_lines() -> list[str]:
    return [line for line in on_host("cat", TRAIL).stdout.splitlines() if line]


def secrets() -> list[str]:
    values = envfile.parse(ROOT / ".sandbox" / ".env.ec2")
    return [v for k, v in values.items() if envfile.CREDENTIAL_KEY.search(k)]


def assert_no_secret(text: str) -> None:
    for value in secrets():
        assert value not in text


def test_scale_up_and_down_under_load_drops_nothing(deployed):
    with Load(GATEWAY, str(CA), prefixes=("/api/", "/ledger/"), rate=8, max_requests=1200,
              max_seconds=150) as load:
        time.sleep(2)
        up = inv("scale", "api=3,ledger=3")
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr
        assert len(running("api-service")) == 3 and len(running("ledger-service")) == 3
        assert routed("jafar_api") == 3 and routed("jafar_ledger") == 3
        time.sleep(3)
        down = inv("scale", "api=1,ledger=1")
        assert down.returncode == 0, down.stdout[-3000:] + down.stderr
        time.sleep(2)
    report = load.report()
    print(report.summary())
    assert report.failed == 0, [f.describe() for f in report.failures]
    assert len(running("api-service")) == 1 and len(running("ledger-service")) == 1
    assert routed("jafar_api") == 1 and routed("jafar_ledger") == 1
    assert "drained and stopped" in down.stdout and "healthy, routed" in up.stdout
    for prefix in ("/api/", "/ledger/"):
        assert len(report.acknowledged[prefix]) > 20, prefix
        assert load.missing(prefix) == [], prefix
    assert_no_secret(up.stdout + up.stderr + down.stdout + down.stderr)


def test_same_scale_twice_is_one_round_trip_and_no_record(deployed):
    first = inv("scale", "wallet=2")
    assert first.returncode == 0, first.stdout + first.stderr
    records = len(trail_lines())
    again = inv("scale", "wallet=2")
    assert again.returncode == 0, again.stderr
    assert "nothing to do: wallet-service: 2 per host already" in again.stdout
    assert "1 SSH round trips on 1 connection(s)" in again.stderr
    assert len(trail_lines()) == records
    assert on_host("test", "!", "-d", LOCK, check=False).returncode == 0


def test_scaled_count_is_kept_by_a_redeploy_until_default(deployed):
    before = set(running("wallet-service"))
    assert len(before) == 2
    redeploy = inv("deploy", "--only", "core.up", timeout=900)
    assert redeploy.returncode == 0, redeploy.stdout[-3000:] + redeploy.stderr
    assert "wallet-service: 2 per host (scaled with inv scale; default 1)" in redeploy.stdout
    assert "nothing to do" in redeploy.stdout
    assert set(running("wallet-service")) == before
    back = inv("scale", "wallet=default")
    assert back.returncode == 0, back.stdout + back.stderr
    assert len(running("wallet-service")) == 1
    assert json.loads(on_host("cat", "/opt/jafar/state/scale.json").stdout) == {
        "api-service": 1, "ledger-service": 1}


def test_scale_beyond_the_ledger_connections_is_refused(deployed):
    before = running("ledger-service")
    r = inv("scale", "ledger=10")
    assert r.returncode == 1
    assert ("postgres connections: (ledger 10) replicas x 1 core host(s) x pool 10 = 100, plus "
            "10 reserved, exceeds data_limits.postgres = 100") in r.stderr
    assert running("ledger-service") == before
    record = json.loads(trail_lines()[-1].split("\t")[0])
    assert record["task"] == "scale" and record["result"] == "failed"


def start(*args: str) -> subprocess.Popen[str]:
    """The task in the background, with SIGINT at its default: a CI job started in the
    background (`cmd &` in a script) passes SIGINT on as ignored, and a Ctrl-C drill would
    then test nothing."""
    return subprocess.Popen([*command(), *args, "--host", "sandbox"],
                            cwd=ROOT, env=clean_environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_lock(timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if on_host("test", "-d", LOCK, check=False).returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError("the lock was never taken")


def test_two_deploys_at_once_one_is_refused_naming_the_holder(deployed):
    runs = [start("deploy", "--only", "data.up,core.up") for _ in range(2)]
    results = [p.communicate(timeout=600) + (p.returncode,) for p in runs]
    codes = sorted(code for _, _, code in results)
    assert codes == [0, 1], results
    out, err, _ = next(r for r in results if r[2] == 1)
    assert "refused: the deploy lock is held by sandbox-operator (user" in err
    assert "`inv deploy --only data.up,core.up --host sandbox`" in err
    assert "data.up:" not in out  # the refused run did nothing
    assert on_host("test", "!", "-d", LOCK, check=False).returncode == 0


def test_kill_9_leaves_a_stale_lock_that_is_named_and_cleared(deployed):
    victim = start("deploy", "--only", "data.up,core.up")
    wait_for_lock()
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    refused = inv("core.up")
    assert refused.returncode == 1
    assert "the deploy lock is STALE" in refused.stderr
    assert f"pid {victim.pid} no longer runs on {socket.gethostname()}" in refused.stderr
    assert "clear it with: inv lock.release --host sandbox" in refused.stderr
    status = json.loads(inv("lock.status", "--json").stdout)
    assert status[0]["held"] and "no longer runs" in status[0]["stale"]
    cleared = inv("lock.release", "--yes")
    assert cleared.returncode == 0 and "deploy lock cleared" in cleared.stdout
    record = json.loads(trail_lines()[-1].split("\t")[0])
    assert record["task"] == "lock.release" and record["who"]["person"] == "sandbox-operator"
    assert inv("core.up").returncode == 0
    again = inv("lock.release", "--yes")
    assert "nothing to do: no deploy lock is held" in again.stdout


def test_ctrl_c_stops_the_remote_command_then_releases(deployed):
    # a removed Redis container makes data.up's `up --wait` create one and wait for its first
    # health check (10 s; a restarted container may keep its old "healthy" on this engine):
    # the Ctrl-C lands while that remote command is seen running
    inner("rm", "--force", "jafar-data-redis-1")
    run = start("data.up")
    wait_for_process("jafar-data", "up", "--wait")
    time.sleep(1)
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 130, out + err
    assert "interrupted" in err
    assert on_host("test", "!", "-d", LOCK, check=False).returncode == 0
    left = on_host("sh", "-c", "pgrep -u deploy -af 'docker compose' || true").stdout
    assert left.strip() == "", left
    record = json.loads(trail_lines()[-1].split("\t")[0])
    assert record["result"] == "interrupted"
    again = inv("data.up")  # safe to run again: it finishes the job
    assert again.returncode == 0, again.stdout + again.stderr
    assert inv("health").returncode == 0


def test_ps_shows_every_replica_against_the_wanted_count(deployed):
    r = inv("ps", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] is True
    services = {c["service"]: c for c in report["counts"]}
    assert services["api-service"]["running"] == services["api-service"]["wanted"] == 1
    assert {"mongo-primary", "redis", "gateway"} <= set(services)
    replica = next(x for x in report["replicas"] if x["service"] == "gateway")
    assert replica["state"] == "running" and replica["uptime"] != "-"
    table = inv("ps")
    assert "RUNNING/WANTED" in table.stdout and "MISMATCH" not in table.stdout


def test_logs_of_one_service_are_prefixed_and_masked(deployed):
    r = inv("logs", "api-service", "--tail", "20")
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith(f"[{HOST}] ")]
    assert lines and all("api-service" in line for line in lines[:5])
    assert_no_secret(r.stdout + r.stderr)


def test_audit_trail_verifies_then_names_each_kind_of_tampering(deployed):
    ok = inv("audit.verify")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "signatures, chain and tail intact" in ok.stdout
    shown = json.loads(inv("audit.show", "--json", "--since", "1d").stdout)
    assert {r["task"] for r in shown} >= {"deploy", "scale", "lock.release"}
    assert all(r["who"]["person"] == "sandbox-operator" for r in shown)
    original = on_host("cat", TRAIL).stdout
    lines = original.splitlines()
    assert len(lines) >= 5
    edited = list(lines)
    edited[1] = edited[1].replace('"result":"', '"result":"x', 1)
    cases = {
        "edit": ("\n".join(edited), "record 2 (seq 2): signature does not verify"),
        "delete": ("\n".join(lines[:2] + lines[3:]), "record 3 has seq 4, expected 3"),
        "reorder": ("\n".join([lines[0], lines[2], lines[1], *lines[3:]]),
                    "record 2 has seq 3, expected 2"),
        "truncate": ("\n".join(lines[:-2]), f"the trail has {len(lines) - 2} records, but this "
                                            f"machine appended record {len(lines)}"),
    }
    try:
        for name, (text, message) in cases.items():
            write_trail(text + "\n")
            bad = inv("audit.verify")
            assert bad.returncode == 1, name
            assert message in bad.stdout + bad.stderr, (name, bad.stdout, bad.stderr)
    finally:
        write_trail(original)
    assert inv("audit.verify").returncode == 0


def write_trail(text: str) -> None:
    """As root on the host (what an attacker with root would do): lift the append-only flag,
    rewrite, put the flag back."""
    subprocess.run(["docker", "exec", "-i", HOST, "sh", "-c",
                    f"chattr -a {TRAIL} 2>/dev/null; cat > {TRAIL}; chattr +a {TRAIL} "
                    "2>/dev/null; true"], input=text, text=True, check=True, timeout=30)


def test_no_secret_reaches_the_trail(deployed):
    host_trail = on_host("cat", TRAIL).stdout
    local = (ROOT / ".audit" / "sandbox.log").read_text()
    assert any('"result":"failed"' in line for line in host_trail.splitlines())
    for text in (host_trail, local):
        assert_no_secret(text)
    assert os.stat(ROOT / ".audit").st_mode & 0o077 == 0


def test_the_trail_is_root_owned_and_the_deploy_user_cannot_rewrite_it(deployed):
    assert on_host("stat", "-c", "%U:%G %a", TRAIL).stdout.strip() == "root:deploy 640"
    denied = on_host("su", "-s", "/bin/sh", "deploy", "-c", f"echo x >> {TRAIL}", check=False)
    assert denied.returncode != 0
    helper = on_host("su", "-s", "/bin/sh", "deploy", "-c",
                     "echo '{\"prev\":\"nope\"}' | sudo -n /usr/local/sbin/jafar-audit-append",
                     check=False)
    assert helper.returncode == 3 and "does not chain" in helper.stderr
    # the refusal is left for node_exporter (AuditTrailWriteFailed); a real record sets it
    # back to 0, and so does this test, leaving the sandbox as it found it
    textfile = "/var/lib/prometheus/node-exporter/jafar_audit.prom"
    prom = on_host("cat", textfile).stdout
    assert "\njafar_audit_append_last_exit_code 3\n" in prom, prom
    on_host("sed", "-i", "s/^\\(jafar_audit_append_last_exit_code\\) 3$/\\1 0/", textfile)
    other = on_host("su", "-s", "/bin/sh", "deploy", "-c", "sudo -n cat /etc/shadow",
                    check=False)
    assert other.returncode != 0  # the sudoers rule allows the helper and nothing else
