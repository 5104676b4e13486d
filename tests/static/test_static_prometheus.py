"""Prometheus configuration and alert rules: `promtool check config`, `promtool check rules`,
and `promtool test rules` proving each alert fires on the metrics it documents."""

from __future__ import annotations

import re
import subprocess
import textwrap
from pathlib import Path

import yaml
from static_helpers import JAFAR_SERVICES, ROOT, require_tool

PROM = ROOT / "config" / "prometheus"


def promtool(*args: str, cwd: Path = PROM) -> subprocess.CompletedProcess[str]:
    require_tool("promtool")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def test_check_config():
    proc = promtool("check", "config", "prometheus.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 rule files found" in proc.stdout + proc.stderr


def test_check_rules():
    proc = promtool("check", "rules", "alerts.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_rules_can_fail(tmp_path: Path):
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: up ==\n")
    assert promtool("check", "rules", str(bad), cwd=tmp_path).returncode != 0


def test_every_service_is_discovered_by_dns():
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert "prometheus" in jobs
    sd = jobs["jafar"]["dns_sd_configs"]
    assert [(c["type"], c["port"]) for c in sd] == [("A", 3000)]
    assert sorted(sd[0]["names"]) == sorted(JAFAR_SERVICES)
    assert config["rule_files"] == ["alerts.yml"]
    assert jobs["alertmanager"]["static_configs"] == [{"targets": ["alertmanager:9093"]}]
    assert config["alerting"]["alertmanagers"] == [
        {"static_configs": [{"targets": ["alertmanager:9093"]}]}]


def test_rules_exist():
    rules = yaml.safe_load((PROM / "alerts.yml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {"ServiceDown", "High5xxRate", "ReplicaSetNoPrimary", "DiskSpaceLow", "DiskFillingUp",
            "FileIntegrityChanged", "FileIntegrityCheckStale", "DataStoreDown", "Watchdog",
            "AlertmanagerNotificationsFailing", "CertificateExpiring", "CertificateCheckStale",
            "AuditTrailWriteFailed"} <= names


RULE_TESTS = textwrap.dedent("""\
    rule_files:
      - {rules}
    evaluation_interval: 1m
    tests:
      - interval: 1m
        input_series:
          - series: 'up{{job="jafar",service="api-service",instance="172.18.0.5:3000"}}'
            values: '0x10'
          - series: 'http_requests_total{{job="jafar",service="wallet-service",status="200"}}'
            values: '0+100x10'
          - series: 'http_requests_total{{job="jafar",service="wallet-service",status="503"}}'
            values: '0+20x10'
          - series: 'jafar_mongo_primary_up{{job="jafar",service="api-service",instance="a"}}'
            values: '0x10'
          - series: 'jafar_mongo_primary_up{{job="jafar",service="risk-service",instance="b"}}'
            values: '0x10'
          - series: 'jafar_dependency_up{{job="jafar",service="auth-service",dependency="redis"}}'
            values: '0x10'
          # one service still reaches redis: not DataStoreDown; none reaches postgres: it is
          - series: 'jafar_dependency_up{{job="jafar",service="api-service",dependency="redis"}}'
            values: '1x10'
          - series: 'jafar_dependency_up{{job="jafar",service="ledger-service",
                                         dependency="postgres"}}'
            values: '1 0x10'
          - series: 'alertmanager_notifications_failed_total{{job="alertmanager",
                                                             integration="webhook"}}'
            values: '0 0 0+1x20'
          - series: 'node_filesystem_avail_bytes{{{node}}}'
            values: '10x20'
          - series: 'node_filesystem_size_bytes{{{node}}}'
            values: '100x20'
          # /data shrinks 1 per minute from 35% free: full within 24 h; /big shrinks as fast
          # with 90% free; /stable sits at 35% free: only /data is DiskFillingUp
          - series: 'node_filesystem_avail_bytes{{{fill}, mountpoint="/data"}}'
            values: '350-1x80'
          - series: 'node_filesystem_size_bytes{{{fill}, mountpoint="/data"}}'
            values: '1000x80'
          - series: 'node_filesystem_avail_bytes{{{fill}, mountpoint="/big"}}'
            values: '900-1x80'
          - series: 'node_filesystem_size_bytes{{{fill}, mountpoint="/big"}}'
            values: '1000x80'
          - series: 'node_filesystem_avail_bytes{{{fill}, mountpoint="/stable"}}'
            values: '350x80'
          - series: 'node_filesystem_size_bytes{{{fill}, mountpoint="/stable"}}'
            values: '1000x80'
          # certificates with 13 d 23 h 58 min (a warning), 2 d (critical too) and a year left;
          # the last expiry check 2 h 55 min before the start: stale (3 h) from minute 6
          - series: 'jafar_tls_not_after_timestamp_seconds{{job="node",instance="h:9100",
                                                          file="gateway_tls_crt"}}'
            values: '1209480x10'
          - series: 'jafar_tls_not_after_timestamp_seconds{{job="node",instance="h:9100",
                                                          file="data_tls_crt"}}'
            values: '172800x10'
          - series: 'jafar_tls_not_after_timestamp_seconds{{job="node",instance="h:9100",
                                                          file="data_ca_crt"}}'
            values: '31536000x10'
          - series: 'jafar_tls_expiry_last_check_timestamp_seconds{{job="node",instance="h:9100"}}'
            values: '-10500x10'
          - series: 'jafar_audit_append_last_exit_code{{job="node",instance="h:9100"}}'
            values: '0 0 3x8'
          - series: 'jafar_aide_check_ok{{job="node",instance="h:9100"}}'
            values: '1 1 0x10'
          - series: 'jafar_aide_last_check_timestamp_seconds{{job="node",instance="h:9100"}}'
            values: '-172400x10'
          # the last backup 25 h 55 min before the start: older than 26 h from minute 6
          - series: 'jafar_backup_last_success_timestamp_seconds{{job="node",instance="h:9100"}}'
            values: '-93300x10'
          # a verify that fails at minute 3; the last one that passed 8 days less 5 minutes ago
          - series: 'jafar_backup_verify_failed{{job="node",instance="h:9100"}}'
            values: '0 0 0 1x7'
          - series: 'jafar_backup_last_verified_timestamp_seconds{{job="node",instance="h:9100"}}'
            values: '-690900x10'
        alert_rule_test:
          - eval_time: 5m
            alertname: ServiceDown
            exp_alerts:
              - exp_labels: {{severity: critical, job: jafar, service: api-service,
                              instance: "172.18.0.5:3000"}}
          - eval_time: 10m
            alertname: High5xxRate
            exp_alerts:
              - exp_labels: {{severity: critical, service: wallet-service}}
          - eval_time: 5m
            alertname: ReplicaSetNoPrimary
            exp_alerts:
              - exp_labels: {{severity: critical}}
          - eval_time: 5m
            alertname: DependencyDown
            exp_alerts:
              - exp_labels: {{severity: critical, service: auth-service, dependency: redis}}
              - exp_labels: {{severity: critical, service: ledger-service, dependency: postgres}}
          - eval_time: 1m
            alertname: DataStoreDown
            exp_alerts: []
          - eval_time: 2m
            alertname: DataStoreDown
            exp_alerts:
              - exp_labels: {{severity: critical, dependency: postgres}}
          - eval_time: 0m
            alertname: Watchdog
            exp_alerts:
              - exp_labels: {{severity: none}}
          - eval_time: 6m
            alertname: AlertmanagerNotificationsFailing
            exp_alerts: []
          - eval_time: 9m
            alertname: AlertmanagerNotificationsFailing
            exp_alerts:
              - exp_labels: {{severity: critical, integration: webhook}}
          - eval_time: 15m
            alertname: DiskSpaceLow
            exp_alerts:
              - exp_labels: {{severity: warning, job: node, instance: "h:9100", fstype: ext4,
                              mountpoint: /, device: d}}
          - eval_time: 50m
            alertname: DiskFillingUp
            exp_alerts: []
          - eval_time: 70m
            alertname: DiskFillingUp
            exp_alerts:
              - exp_labels: {{severity: warning, job: node, instance: "g:9100", fstype: ext4,
                              mountpoint: /data, device: e}}
          - eval_time: 0m
            alertname: CertificateExpiring
            exp_alerts:
              - exp_labels: {{severity: warning, job: node, instance: "h:9100",
                              file: gateway_tls_crt}}
              - exp_labels: {{severity: warning, job: node, instance: "h:9100",
                              file: data_tls_crt}}
              - exp_labels: {{severity: critical, job: node, instance: "h:9100",
                              file: data_tls_crt}}
          - eval_time: 5m
            alertname: CertificateCheckStale
            exp_alerts: []
          - eval_time: 6m
            alertname: CertificateCheckStale
            exp_alerts:
              - exp_labels: {{severity: warning, job: node, instance: "h:9100"}}
          - eval_time: 2m
            alertname: AuditTrailWriteFailed
            exp_alerts: []
          - eval_time: 4m
            alertname: AuditTrailWriteFailed
            exp_alerts:
              - exp_labels: {{severity: critical, job: node, instance: "h:9100"}}
          - eval_time: 1m
            alertname: FileIntegrityChanged
            exp_alerts: []
          - eval_time: 3m
            alertname: FileIntegrityChanged
            exp_alerts:
              - exp_labels: {{severity: critical, job: node, instance: "h:9100"}}
          - eval_time: 5m
            alertname: FileIntegrityCheckStale
            exp_alerts: []
          - eval_time: 10m
            alertname: FileIntegrityCheckStale
            exp_alerts:
              - exp_labels: {{severity: warning, job: node, instance: "h:9100"}}
          - eval_time: 5m
            alertname: BackupTooOld
            exp_alerts: []
          - eval_time: 7m
            alertname: BackupTooOld
            exp_alerts:
              - exp_labels: {{severity: critical, job: node, instance: "h:9100"}}
          - eval_time: 2m
            alertname: BackupVerifyFailed
            exp_alerts: []
          - eval_time: 3m
            alertname: BackupVerifyFailed
            exp_alerts:
              - exp_labels: {{severity: critical, job: node, instance: "h:9100"}}
          - eval_time: 5m
            alertname: BackupNotVerified
            exp_alerts: []
          - eval_time: 7m
            alertname: BackupNotVerified
            exp_alerts:
              - exp_labels: {{severity: warning, job: node, instance: "h:9100"}}
          - eval_time: 10m
            alertname: ServiceMissing
            exp_alerts:
    """)
NODE = 'job="node",instance="h:9100",fstype="ext4",mountpoint="/",device="d"'
FILL = 'job="node",instance="g:9100",fstype="ext4",device="e"'


def rules_without_annotations(tmp_path: Path) -> Path:
    """alerts.yml with the same expressions and labels, minus the annotations (promtool
    compares annotations too; the texts are for people, the tests are about firing)."""
    rules = yaml.safe_load((PROM / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    path = tmp_path / "alerts.yml"
    path.write_text(yaml.safe_dump(rules))
    return path


def rule_tests(tmp_path: Path) -> str:
    missing = "\n".join(
        f"              - exp_labels: {{severity: critical, job: jafar, service: {s}}}"
        for s in JAFAR_SERVICES if s != "api-service")
    rules = rules_without_annotations(tmp_path)
    return RULE_TESTS.format(rules=rules, node=NODE, fill=FILL) + missing + "\n"


def test_alerts_fire_on_their_metrics(tmp_path: Path):
    """The alerts fire (and ServiceMissing for every service with no target at all)."""
    path = tmp_path / "alerts_test.yml"
    path.write_text(rule_tests(tmp_path))
    proc = promtool("test", "rules", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rule_tests_can_fail(tmp_path: Path):
    """Expecting no ReplicaSetNoPrimary while no service sees a PRIMARY must fail."""
    good = rule_tests(tmp_path)
    bad = re.sub(r"(alertname: ReplicaSetNoPrimary\n\s+exp_alerts:)\n\s+- exp_labels: [^\n]*\n",
                 r"\1 []\n", good)
    assert bad != good
    path = tmp_path / "alerts_test.yml"
    path.write_text(bad)
    proc = promtool("test", "rules", str(path), cwd=tmp_path)
    assert proc.returncode != 0
    assert "ReplicaSetNoPrimary" in proc.stdout + proc.stderr
