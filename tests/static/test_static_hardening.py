"""The host hardening files with the real tools: rsyslogd checks the forwarding drop-in the
suite writes (`rsyslogd -N1`), and refuses a broken one."""

from __future__ import annotations

import subprocess
from pathlib import Path

from static_helpers import require_tool

from fabfile.config import LogForward
from fabfile.hosts import logforward
from tests.support import throwaway_tls


def rsyslog_check(tmp_path: Path, dropin: str) -> subprocess.CompletedProcess[str]:
    """`rsyslogd -N1` on a main file that loads what Debian's does and includes the drop-in
    (the CA path pointed at a real file here)."""
    ca = throwaway_tls.make(tmp_path, "logs.internal")["ca"]
    (tmp_path / "60-jafar-forward.conf").write_text(dropin.replace(logforward.CA, str(ca)))
    main = tmp_path / "rsyslog.conf"
    main.write_text('module(load="imuxsock")\n'
                    f'$WorkDirectory {tmp_path}\n'
                    f'include(file="{tmp_path}/60-jafar-forward.conf")\n')
    return subprocess.run([require_tool("rsyslogd"), "-N1", "-f", str(main)],
                          capture_output=True, text=True, timeout=60)


def test_the_forwarding_dropin_is_valid_rsyslog(tmp_path: Path):
    forward = LogForward("10.0.3.20", 6514, "logs.internal", tmp_path / "ca.crt")
    dropin = logforward.rsyslog_conf(forward)
    assert 'StreamDriverPermittedPeers="logs.internal"' in dropin
    assert 'target="10.0.3.20" port="6514" protocol="tcp"' in dropin
    proc = rsyslog_check(tmp_path, dropin)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_broken_dropin_is_refused(tmp_path: Path):
    forward = LogForward("10.0.3.20", 6514, "logs.internal", tmp_path / "ca.crt")
    broken = logforward.rsyslog_conf(forward).replace('protocol="tcp"', 'protocol="tcp"(')
    assert rsyslog_check(tmp_path, broken).returncode != 0
