"""Alertmanager's configuration, made from the environment's `alerting:` block.

files.sync writes it to config/alertmanager/alertmanager.yml on each host (it is not in git: the
receivers differ per environment), and the running Alertmanager reloads it. Routes by severity:
- `critical` pages: every webhook, the SNS topic, e-mail; repeated every hour while it fires;
- `warning` notifies: webhooks and e-mail (not the pager topic); repeated every 12 hours;
- anything else (a rule without a severity) pages too: an unknown alert is not a quiet one;
- `Watchdog` (the rule that always fires) goes to the dead-man's switch every minute: when the
  pings stop, the switch alerts by itself, so a dead Prometheus, Alertmanager or network is
  noticed.
Inhibitions keep one page per cause: a critical alert mutes the warnings of the same alert and
service, and DataStoreDown mutes each service's DependencyDown for that store.
"""

from __future__ import annotations

import yaml

from fabfile.config import AlertingSettings, Environment

PATH = "config/alertmanager/alertmanager.yml"
PAGE, NOTIFY, WATCHDOG, NOBODY = "page", "notify", "watchdog", "nobody"
GROUP_BY = ["alertname", "service", "dependency", "instance"]


def _webhooks(urls: tuple[str, ...], resolved: bool = True) -> list[dict]:
    return [{"url": u, "send_resolved": resolved} for u in urls]


def _email(a: AlertingSettings) -> list[dict]:
    if not a.email_to:
        return []
    return [{"to": ", ".join(a.email_to), "from": a.email_from, "smarthost": a.smarthost,
             "require_tls": True, "send_resolved": True}]


def _sns(a: AlertingSettings) -> list[dict]:
    if not a.sns_topic:
        return []
    region = a.sns_topic.split(":")[3]
    return [{"topic_arn": a.sns_topic, "sigv4": {"region": region}, "send_resolved": True,
             "subject": "[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }}"}]


def _receiver(name: str, **configs: list[dict]) -> dict:
    return {"name": name, **{k: v for k, v in configs.items() if v}}


def document(env: Environment) -> dict:
    """The configuration as data (what render() writes)."""
    a = env.alerting
    return {
        "route": {
            "receiver": PAGE,
            "group_by": GROUP_BY,
            "group_wait": a.group_wait,
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": [
                {"matchers": ['alertname="Watchdog"'], "receiver": WATCHDOG if a.watchdog
                 else NOBODY, "group_wait": "0s", "group_interval": "1m",
                 "repeat_interval": "1m"},
                {"matchers": ['severity="critical"'], "receiver": PAGE,
                 "repeat_interval": "1h"},
                {"matchers": ['severity="warning"'], "receiver": NOTIFY,
                 "repeat_interval": "12h"},
            ],
        },
        "inhibit_rules": [
            {"source_matchers": ['severity="critical"'],
             "target_matchers": ['severity="warning"'], "equal": ["alertname", "service"]},
            {"source_matchers": ['alertname="DataStoreDown"'],
             "target_matchers": ['alertname="DependencyDown"'], "equal": ["dependency"]},
        ],
        "receivers": [
            _receiver(PAGE, webhook_configs=_webhooks(a.webhooks), sns_configs=_sns(a),
                      email_configs=_email(a)),
            _receiver(NOTIFY, webhook_configs=_webhooks(a.webhooks), email_configs=_email(a)),
            _receiver(WATCHDOG, webhook_configs=_webhooks(
                (a.watchdog,) if a.watchdog else (), resolved=False)),
            _receiver(NOBODY),
        ],
    }


def render(env: Environment) -> str:
    head = (f"# Alertmanager for {env.name}: written by inv files.sync from the alerting: block "
            "of config/environments.yml (fabfile/monitor/alerting.py); do not edit here.\n")
    return head + yaml.safe_dump(document(env), sort_keys=False)


def unrouted(env: Environment) -> list[str]:
    """What is not sent anywhere, for the operator to read (empty: every route has a
    receiver)."""
    a = env.alerting
    missing = []
    if not a.pages:
        missing.append("critical and warning alerts reach no one (alerting: has no webhooks, "
                       "sns_topic or email)")
    if not a.watchdog:
        missing.append("no dead-man's switch (alerting.watchdog): a silent alerting path "
                       "goes unnoticed")
    return missing
