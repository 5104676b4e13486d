"""Alertmanager's configuration from the alerting: block: the routes and receivers as data, and
the real Alertmanager's own checks of the file (amtool check-config, amtool config routes
test: which receiver an alert reaches)."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from fabfile.config import AlertingSettings
from fabfile.monitor import alerting
from fabfile.sync import bundle_items
from tests.conftest import shipped
from tests.static.static_helpers import require_tool

PROD = shipped("prod")


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("amtool"), *args], capture_output=True, text=True,
                          timeout=60)


def written(env, tmp_path: Path) -> Path:
    path = tmp_path / "alertmanager.yml"
    path.write_text(alerting.render(env))
    return path


def test_prod_pages_through_every_receiver_and_pings_the_watchdog():
    doc = alerting.document(PROD)
    receivers = {r["name"]: r for r in doc["receivers"]}
    assert receivers["page"] == {
        "name": "page",
        "webhook_configs": [{"url": "https://oncall.internal.example/alertmanager",
                             "send_resolved": True}],
        "sns_configs": [{"topic_arn": "arn:aws:sns:eu-west-1:123456789012:jafar-prod-pager",
                         "sigv4": {"region": "eu-west-1"}, "send_resolved": True,
                         "subject": "[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }}"}],
        "email_configs": [{"to": "sre@bank.example", "from": "alerts@bank.example",
                           "smarthost": "smtp.internal.example:587", "require_tls": True,
                           "send_resolved": True}],
    }
    assert "sns_configs" not in receivers["notify"]  # warnings do not wake the pager
    assert receivers["watchdog"] == {"name": "watchdog", "webhook_configs": [
        {"url": "https://deadman.internal.example/ping/jafar-prod", "send_resolved": False}]}
    assert receivers["nobody"] == {"name": "nobody"}
    assert doc["route"]["group_wait"] == "30s"
    assert alerting.unrouted(PROD) == []


def test_without_receivers_the_file_is_valid_and_says_what_reaches_no_one():
    staging = shipped("staging")
    doc = alerting.document(staging)
    assert [r for r in doc["receivers"] if len(r) > 1] == []
    assert doc["route"]["routes"][0]["receiver"] == "nobody"  # no watchdog URL
    assert alerting.unrouted(staging) == [
        "critical and warning alerts reach no one (alerting: has no webhooks, sns_topic or "
        "email)",
        "no dead-man's switch (alerting.watchdog): a silent alerting path goes unnoticed"]


@pytest.mark.parametrize("name", ["prod", "staging", "sandbox"])
def test_alertmanager_accepts_the_file(name, tmp_path):
    proc = amtool("check-config", str(written(shipped(name), tmp_path)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_amtool_check_can_fail(tmp_path):
    path = written(PROD, tmp_path)
    path.write_text(path.read_text().replace("receiver: notify", "receiver: nowhere"))
    assert amtool("check-config", str(path)).returncode != 0


@pytest.mark.parametrize(("labels", "receiver"), [
    (["alertname=DataStoreDown", "severity=critical", "dependency=redis"], "page"),
    (["alertname=DiskSpaceLow", "severity=warning"], "notify"),
    (["alertname=Watchdog", "severity=none"], "watchdog"),
    (["alertname=SomethingNew"], "page"),  # no severity: paged, never dropped
])
def test_each_severity_reaches_its_receiver(labels, receiver, tmp_path):
    proc = amtool("config", "routes", "test", f"--config.file={written(PROD, tmp_path)}",
                  *labels)
    assert (proc.returncode, proc.stdout.strip()) == (0, receiver), proc.stderr


def test_a_critical_alert_mutes_its_warning_and_a_store_down_its_dependency_alerts():
    rules = alerting.document(PROD)["inhibit_rules"]
    assert {"source_matchers": ['alertname="DataStoreDown"'],
            "target_matchers": ['alertname="DependencyDown"'], "equal": ["dependency"]} in rules
    assert {"source_matchers": ['severity="critical"'],
            "target_matchers": ['severity="warning"'], "equal": ["alertname", "service"]} in rules


def test_the_file_travels_with_the_bundle_and_follows_the_environment():
    items = {i.remote: i for i in bundle_items(PROD, PROD.hosts[1])}
    item = items["/opt/jafar/config/alertmanager/alertmanager.yml"]
    assert (item.mode, item.secret) == ("644", False)
    assert yaml.safe_load(item.data()) == alerting.document(PROD)
    quiet = replace(PROD, alerting=AlertingSettings())
    other = {i.remote: i for i in bundle_items(quiet, quiet.hosts[1])}
    assert other[item.remote].digest() != item.digest()

