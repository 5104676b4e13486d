"""monitor.status: the scrape targets that are down and the alerts that fire, per core host,
read from each core host's Prometheus (every core host runs one and scrapes the same targets,
so each is asked: one of them may be the one that is wrong).

The Watchdog alert fires always (config/prometheus/alerts.yml): it is not a problem but a
proof that the rules are evaluated, so it is shown on a line of its own, and a Prometheus where
it does not fire is a problem ("silent")."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from fabfile.commands.monitor import NO_PROMETHEUS, prometheus_query
from fabfile.config import Environment, Host
from fabfile.errors import StepFailed
from fabfile.flow import columns
from fabfile.remote import Remote
from fabfile.services import compose_project


@dataclass(frozen=True)
class Target:
    host: str
    job: str
    instance: str
    service: str
    health: str        # up, down, unknown
    error: str         # the last scrape error, "" when none


@dataclass(frozen=True)
class Alert:
    host: str
    name: str
    severity: str
    state: str         # firing or pending
    since: str         # activeAt, as Prometheus gives it (UTC)
    subject: str       # service, instance or mountpoint the alert is about


WATCHDOG = "Watchdog"


@dataclass(frozen=True)
class Status:
    targets: list[Target]
    alerts: list[Alert]            # without the Watchdog
    silent: list[str] = field(default_factory=list)  # hosts whose Watchdog does not fire

    @property
    def down(self) -> list[Target]:
        """A target Prometheus failed to scrape; "unknown" (found, not scraped yet: a new
        replica) is not down."""
        return [t for t in self.targets if t.health == "down"]

    @property
    def firing(self) -> list[Alert]:
        return [a for a in self.alerts if a.state == "firing"]


def _data(host: Host, tag: str, line: str) -> dict:
    try:
        answer = json.loads(line[len(tag) + 1:])
    except ValueError:
        raise StepFailed(f"{host.name}: Prometheus' answer is not JSON") from None
    if not isinstance(answer, dict):
        raise StepFailed(f"{host.name}: Prometheus' answer is not a JSON object")
    if answer.get("status") != "success":
        why = str(answer.get("error", "no reason given"))[:120]
        raise StepFailed(f"{host.name}: Prometheus answered an error ({why})")
    return answer.get("data") or {}


def parse(host: Host, output: str) -> Status:
    """The probe's two lines as targets and alerts (sorted: what is wrong first)."""
    lines = {ln.split("\t", 1)[0]: ln for ln in output.splitlines() if "\t" in ln}
    if "T" not in lines or "A" not in lines:
        raise StepFailed(f"{host.name}: no answer from Prometheus' API")
    targets = [
        Target(host.name, str(t.get("labels", {}).get("job", "")),
               str(t.get("labels", {}).get("instance", "")),
               str(t.get("labels", {}).get("service", "")),
               str(t.get("health", "unknown")), str(t.get("lastError", "")))
        for t in _data(host, "T", lines["T"]).get("activeTargets", [])]
    alerts = []
    watchdog = False
    for a in _data(host, "A", lines["A"]).get("alerts", []):
        labels = a.get("labels", {})
        subject = next((str(labels[k]) for k in ("service", "instance", "mountpoint")
                        if k in labels), "")
        if labels.get("alertname") == WATCHDOG:
            watchdog = watchdog or a.get("state") == "firing"
            continue
        alerts.append(Alert(host.name, str(labels.get("alertname", "")),
                            str(labels.get("severity", "")), str(a.get("state", "")),
                            str(a.get("activeAt", "")), subject))
    targets.sort(key=lambda t: (t.health != "down", t.job, t.instance))
    alerts.sort(key=lambda a: (a.state != "firing", a.severity != "critical", a.name, a.subject))
    return Status(targets, alerts, [] if watchdog else [host.name])


def check_host(env: Environment, host: Host, remote: Remote) -> Status:
    result = remote.run(prometheus_query(compose_project(env, "core")), check=False)
    if result.exited == NO_PROMETHEUS:
        raise StepFailed(f"{host.name}: no running Prometheus container (inv core.up, then "
                         "inv health)")
    if result.exited != 0:
        raise StepFailed(f"{host.name}: Prometheus' API did not answer (exit {result.exited})")
    return parse(host, result.stdout)


def merged(statuses: list[Status]) -> Status:
    return Status([t for s in statuses for t in s.targets], [a for s in statuses for a in s.alerts],
                  [h for s in statuses for h in s.silent])


def table(status: Status) -> list[str]:
    lines = [f"targets: {len(status.targets)}, {len(status.down)} down"]
    if status.down:
        lines += columns(("HOST", "JOB", "INSTANCE", "SERVICE", "HEALTH", "LAST ERROR"),
                         [(t.host, t.job, t.instance, t.service or "-", t.health,
                           t.error[:80] or "-") for t in status.down])
    lines.append(f"alerts: {len(status.firing)} firing, "
                 f"{len(status.alerts) - len(status.firing)} pending")
    if status.alerts:
        lines += columns(("HOST", "ALERT", "SEVERITY", "STATE", "SINCE", "ABOUT"),
                         [(a.host, a.name, a.severity or "-", a.state, a.since[:19] or "-",
                           a.subject or "-") for a in status.alerts])
    if status.silent:
        lines.append(f"watchdog: NOT firing on {', '.join(status.silent)}: Prometheus there "
                     "evaluates no rules, so no alert can fire (docker compose -p jafar-core "
                     "logs prometheus)")
    else:
        lines.append("watchdog: firing (the rules are evaluated; the dead-man's switch sees "
                     "whether its notifications arrive)")
    return lines


def problems(status: Status) -> list[str]:
    """Why monitor.status exits 1 (empty: it exits 0)."""
    what = [f"{len(status.down)} target(s) down"] if status.down else []
    if status.firing:
        what.append(f"firing: {', '.join(sorted({a.name for a in status.firing}))}")
    if status.silent:
        what.append(f"no Watchdog on {', '.join(status.silent)}")
    return what


def as_json(status: Status) -> str:
    return json.dumps({"ok": not problems(status),
                       "targets": [asdict(t) for t in status.targets],
                       "alerts": [asdict(a) for a in status.alerts],
                       "watchdog_silent": status.silent}, indent=2)
