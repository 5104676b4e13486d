"""The host helpers that feed node_exporter's textfile collector, run for real with /bin/sh:
jafar-tls-expiry (each certificate's notAfter) and the metrics jafar-audit-append leaves for
every outcome (a copy whose two paths point into a temporary folder)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from tests.conftest import ROOT
from tests.support import throwaway_tls

HARDENING = ROOT / "config" / "hardening"


def metrics(path: Path) -> dict[str, str]:
    return dict(line.rsplit(" ", 1) for line in path.read_text().splitlines()
                if not line.startswith("#"))


def test_tls_expiry_reports_each_certificates_not_after(tmp_path):
    made = throwaway_tls.make(tmp_path, "data.example")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    shutil.copy(made["cert"], secrets / "data_tls_crt")
    shutil.copy(made["ca"], secrets / "data_ca_crt")
    (secrets / "gateway_tls_crt").write_text("not a certificate\n")
    out = tmp_path / "jafar_tls.prom"
    proc = subprocess.run(["sh", str(HARDENING / "jafar-tls-expiry"), str(secrets), str(out)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    found = metrics(out)
    cert = x509.load_pem_x509_certificate(made["cert"].read_bytes())
    assert found['jafar_tls_not_after_timestamp_seconds{file="data_tls_crt"}'] == str(
        int(cert.not_valid_after_utc.timestamp()))
    assert found['jafar_tls_not_after_timestamp_seconds{file="gateway_tls_crt"}'] == "0"
    assert int(found["jafar_tls_expiry_last_check_timestamp_seconds"]) > 1_700_000_000
    assert out.stat().st_mode & 0o777 == 0o644 and not (tmp_path / "jafar_tls.prom.tmp").exists()


@pytest.fixture
def append(tmp_path):
    """jafar-audit-append with its trail and metrics file in tmp_path."""
    script = (HARDENING / "jafar-audit-append").read_text()
    for line in ("log=/var/log/jafar/audit.log",
                 "metrics=/var/lib/prometheus/node-exporter/jafar_audit.prom"):
        assert f"\n{line}\n" in script
    (tmp_path / "textfile").mkdir()
    script = script.replace("log=/var/log/jafar/audit.log", f"log={tmp_path}/audit.log")
    script = script.replace("metrics=/var/lib/prometheus/node-exporter/",
                            f"metrics={tmp_path}/textfile/")
    copy = tmp_path / "jafar-audit-append"
    copy.write_text(script)

    def run(record: str) -> tuple[int, dict[str, str]]:
        proc = subprocess.run(["sh", str(copy)], input=record, capture_output=True, text=True,
                              timeout=30)
        return proc.returncode, metrics(tmp_path / "textfile" / "jafar_audit.prom")
    return run


def test_every_append_leaves_its_exit_code(append, tmp_path):
    code, found = append('{"prev":"x"}')
    assert code == 4 and found["jafar_audit_append_last_exit_code"] == "4"  # no trail yet
    (tmp_path / "audit.log").write_text("")
    assert append("")[1]["jafar_audit_append_last_exit_code"] == "2"  # malformed
    assert append('{"prev":"nope"}')[1]["jafar_audit_append_last_exit_code"] == "3"
    code, found = append('{"prev":"' + "0" * 64 + '"}\tsig')
    assert (code, found["jafar_audit_append_last_exit_code"]) == (0, "0")
    assert int(found["jafar_audit_append_last_timestamp_seconds"]) > 1_700_000_000
    last = hashlib.sha256((tmp_path / "audit.log").read_bytes()).hexdigest()
    assert append('{"prev":"' + last + '"}\tsig')[0] == 0
    assert len((tmp_path / "audit.log").read_text().splitlines()) == 2


def test_without_a_textfile_folder_the_append_still_works(append, tmp_path):
    shutil.rmtree(tmp_path / "textfile")
    (tmp_path / "audit.log").write_text("")
    proc_code = subprocess.run(["sh", str(tmp_path / "jafar-audit-append")],
                               input='{"prev":"' + "0" * 64 + '"}\tsig', capture_output=True,
                               text=True, timeout=30).returncode
    assert proc_code == 0 and not (tmp_path / "textfile").exists()
