"""The CIS baseline of host.harden: what it installs where, the shell it runs (executed here
against temporary files with shims), and host.check's reading of its facts."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from fabfile.commands import host as cmd
from fabfile.hosts import baseline
from tests.conftest import shipped


def sh(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", "set -eu\n" + script], capture_output=True, text=True,
                          timeout=30, env={**os.environ, **env})


def test_kernel_controls_only_where_the_kernel_is_the_hosts_own():
    sandbox, prod = shipped("sandbox"), shipped("prod")
    assert sandbox.host_setup.shared_kernel and not prod.host_setup.shared_kernel
    blacklist = "/etc/modprobe.d/jafar-blacklist.conf"
    assert blacklist not in baseline.script(sandbox) and blacklist in baseline.script(prod)
    assert "acct" not in baseline.packages(sandbox) and "acct" in baseline.packages(prod)
    assert "acct" in baseline.services(prod) and "acct" not in baseline.services(sandbox)
    conf = (baseline.HARDENING / "modprobe-blacklist.conf").read_text()
    for module in baseline.MODULES:
        assert f"install {module} /bin/false\n" in conf and f"blacklist {module}\n" in conf


def test_login_defs_settings_replace_every_active_line_and_leave_comments(tmp_path: Path):
    defs = tmp_path / "login.defs"
    defs.write_text("#UMASK\t\t022\nUMASK\t\t022\nPASS_MAX_DAYS\t99999\nUMASK 077  \n")
    script = "\n".join(cmd.ensure_setting(str(defs), k, v)
                       for k, v in baseline.LOGIN_SETTINGS.items())
    first = sh(script)
    assert first.returncode == 0, first.stderr
    assert f"CHANGED {defs}: UMASK 027" in first.stdout
    text = defs.read_text()
    assert text.startswith("#UMASK\t\t022\nUMASK 027\nPASS_MAX_DAYS 365\nUMASK 027\n")
    assert "SHA_CRYPT_MIN_ROUNDS 65536\n" in text and "HOME_MODE 0750\n" in text
    again = sh(script)
    assert (again.returncode, again.stdout) == (0, "") and defs.read_text() == text


def test_key_value_files_keep_their_separator(tmp_path: Path):
    sysstat = tmp_path / "sysstat"
    sysstat.write_text('# comment\nENABLED="false"\n')
    snippet = cmd.ensure_setting(str(sysstat), "ENABLED", '"true"', "=")
    assert sh(snippet).stdout == f'CHANGED {sysstat}: ENABLED="true"\n'
    assert sysstat.read_text() == '# comment\nENABLED="true"\n'
    assert sh(snippet).stdout == ""


def shimmed(tmp_path: Path, script: str) -> tuple[str, Path]:
    """The script reading temporary copies of /etc/shadow and /etc/passwd, with a `chage` that
    only records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "chage.log"
    (bin_dir / "chage").write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    (bin_dir / "chage").chmod(0o755)
    script = script.replace("/etc/shadow", str(tmp_path / "shadow"))
    return script, log


def test_ageing_only_for_accounts_with_a_password_never_the_suites_own(tmp_path: Path):
    env = shipped("prod")  # deploy user `deploy`, admin user `ubuntu`
    (tmp_path / "shadow").write_text("\n".join([
        "root:*:19000:0:99999:7:::",                       # no password: left alone
        "ubuntu:$6$salt$hash:19000:0:99999:7:::",           # the admin user: never
        "deploy:!:19000:0:99999:7:::",                      # key only
        "alice:$y$j9T$salt$hash:19000:0:99999:7:::",         # a password: aged
        "bob:$6$salt$hash:19000:1:365:14:::",                # already aged
    ]) + "\n")
    script, log = shimmed(tmp_path, baseline.ageing_script(env))
    run = sh(script, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    assert run.returncode == 0, run.stderr
    assert run.stdout == "CHANGED password ageing for alice\n"
    assert log.read_text() == "--mindays 1 --maxdays 365 --warndays 14 alice\n"


def test_the_aide_baseline_is_taken_once_unless_forced():
    assert baseline.aide_baseline(force=False).startswith(f"if [ ! -s {baseline.AIDE_DB} ]; then")
    assert baseline.aide_baseline(force=True).startswith("if true; then")
    assert f"mv -f {baseline.AIDE_DB}.new {baseline.AIDE_DB}" in baseline.aide_baseline(True)


def facts(env, **override: str) -> str:
    """What `probe` prints on a host where every control holds."""
    lines = []
    for f in baseline.files(env) + baseline.BANNER:
        digest = hashlib.sha256(f.content().encode()).hexdigest()
        lines.append(f"file {f.path} {digest} {int(f.mode, 8):o}")
    lines += [f"set {k} {v}" for k, v in baseline.LOGIN_SETTINGS.items()]
    lines += [f"pkg {p} install_ok_installed" for p in baseline.packages(env)]
    lines += [f"svc {s} active" for s in baseline.services(env)]
    lines += [f"pam {m} 1" for m in baseline.PAM_MODULES]
    lines += ["aged alice 1 365 14", "home /home/deploy 750", "home /home/admin 700", "aide 1"]
    text = "\n".join(lines) + "\n"
    for old, new in override.items():
        assert old in text
        text = text.replace(old, new, 1)
    return text


def evaluated(env, output: str) -> dict[str, tuple[str, bool]]:
    found: dict[str, tuple[str, bool]] = {}
    baseline.evaluate(env, output, lambda c, _e, a, ok: found.__setitem__(c, (a, ok)))
    return found


def test_every_control_passes_on_a_compliant_host():
    env = shipped("sandbox")
    found = evaluated(env, facts(env))
    assert all(ok for _, ok in found.values()), [c for c, (_, ok) in found.items() if not ok]
    assert {"login.defs UMASK", "package aide", "service jafar-aide-check.timer",
            "file /etc/issue.net", "password ageing alice", "home /home/deploy",
            "AIDE: files as baselined (last daily check)"} <= set(found)


@pytest.mark.parametrize("old, new, control, actual", [
    ("set UMASK 027", "set UMASK 022", "login.defs UMASK", "022"),
    ("pkg aide install_ok_installed", "pkg aide missing", "package aide", "missing"),
    ("svc sysstat active", "svc sysstat inactive", "service sysstat", "inactive"),
    ("aged alice 1 365 14", "aged alice 0 99999 7", "password ageing alice",
     "min 0, max 99999, warn 7"),
    ("home /home/deploy 750", "home /home/deploy 755", "home /home/deploy", "755"),
    ("aide 1", "aide 0", "AIDE: files as baselined (last daily check)", "0"),
    ("pam pam_umask 1", "pam pam_umask 0", "PAM pam_umask in use", "no"),
    (" 644\n", " 664\n", "file /usr/share/pam-configs/jafar-umask",
     "differs (mode 664)"),
])
def test_each_broken_control_is_named(old: str, new: str, control: str, actual: str):
    env = shipped("sandbox")
    found = evaluated(env, facts(env, **{old: new}))
    assert found[control] == (actual, False)
    assert [c for c, (_, ok) in found.items() if not ok] == [control]


def test_a_missing_file_and_no_aide_result_fail():
    env = shipped("sandbox")
    path = "/etc/security/limits.d/10-jafar-coredump.conf"
    text = "\n".join(line for line in facts(env).splitlines()
                     if not line.startswith((f"file {path}", "aide")))
    text += f"\nfile {path} none none\naide\n"
    found = evaluated(env, text)
    assert found[f"file {path}"] == ("missing", False)
    assert found["AIDE: files as baselined (last daily check)"] == ("no result", False)


def test_log_forwarding_only_when_configured(tmp_path: Path):
    from dataclasses import replace

    from fabfile.config import LogForward
    from fabfile.hosts import logforward
    from tests.support import throwaway_tls

    sandbox, prod = shipped("sandbox"), shipped("prod")
    assert "rsyslog" not in baseline.packages(sandbox)
    off = baseline.script(sandbox)
    assert f"if [ -e {logforward.CONF} ]; then rm -f {logforward.CONF}" in off
    ca = throwaway_tls.make(tmp_path, "logs.internal")["ca"]
    forward = LogForward("logs.internal", 6514, "logs.internal", ca)

    def forwarding(env):
        return replace(env, host_setup=replace(env.host_setup, log_forward=forward))

    on = forwarding(sandbox)
    paths = {f.path: f for f in baseline.files(on)}
    assert paths[logforward.CA].content() == ca.read_text()
    assert paths[logforward.CONF].content() == logforward.rsyslog_conf(forward)
    assert logforward.AUDIT_PLUGIN not in paths  # no auditd where the kernel is shared
    assert {"rsyslog", "rsyslog-gnutls"} <= set(baseline.packages(on))
    assert "rsyslog" in baseline.services(on)
    assert f"rm -f {logforward.CONF}" not in baseline.script(on)
    ec2 = forwarding(prod)
    assert logforward.AUDIT_PLUGIN in {f.path for f in baseline.files(ec2)}
    assert "audispd-plugins" in baseline.packages(ec2)
