"""The deploy plan: step order, selection, and the dry-run printout."""

from __future__ import annotations

import io
import threading
import time

import pytest

from fabfile.errors import BadInput, StepFailed
from fabfile.flow import Outcome, Pool, Step, print_plan, run_steps, select
from fabfile.remote import Masker, Printer
from fabfile.steps import FLOW, STEPS
from tests.conftest import shipped

NAMES = ["host.prepare", "host.harden", "env.sync", "files.sync", "data.up", "replica.init",
         "core.up", "health"]


def test_flow_order_is_the_documented_one():
    assert [s.name for s in FLOW] == NAMES


@pytest.mark.parametrize("kwargs, expected", [
    ({}, NAMES),
    ({"start": "data.up"}, ["data.up", "replica.init", "core.up", "health"]),
    ({"only": "core.up,env.sync"}, ["env.sync", "core.up"]),
    ({"skip": "replica.init"}, ["host.prepare", "host.harden", "env.sync", "files.sync",
                                "data.up", "core.up", "health"]),
    ({"start": "replica.init", "skip": "health"}, ["replica.init", "core.up"]),
])
def test_select(kwargs, expected):
    assert select(NAMES, **kwargs) == expected


@pytest.mark.parametrize("kwargs, message", [
    ({"start": "data.upp"}, "--from: unknown step 'data.upp'; steps are: host.prepare, "),
    ({"only": "core.up,nope"}, "--only: unknown step 'nope'"),
    ({"skip": "x"}, "--skip: unknown step 'x'"),
    ({"start": "data.up", "only": "core.up"}, "--only and --from do not mix"),
    ({"only": "health", "skip": "health"}, "no step left to run"),
])
def test_select_rejects_bad_names(kwargs, message):
    with pytest.raises(BadInput, match=message.replace("(", r"\(")):
        select(NAMES, **kwargs)


def plan_lines(env_name: str) -> list[str]:
    out = io.StringIO()
    print_plan(shipped(env_name), list(FLOW), Printer(Masker(), out))
    return out.getvalue().splitlines()


def test_prod_plan_runs_steps_per_role_in_order():
    headers = [line for line in plan_lines("prod")
               if not line.startswith("[") or "]   " not in line]
    assert all("] " in h for h in headers[1:])
    assert headers[0] == "dry run for prod: nothing is contacted or changed"
    steps = [h.split("] ", 1)[1].split(":")[0] + "@" + h[1:].split("]")[0] for h in headers[1:]]
    assert steps == [
        "host.prepare@prod-data-1", "host.prepare@prod-core-1", "host.prepare@prod-core-2",
        "host.harden@prod-data-1", "host.harden@prod-core-1", "host.harden@prod-core-2",
        "env.sync@prod-data-1", "env.sync@prod-core-1", "env.sync@prod-core-2",
        "files.sync@prod-data-1", "files.sync@prod-core-1", "files.sync@prod-core-2",
        "data.up@prod-data-1", "replica.init@prod-data-1",
        "core.up@prod-core-1", "core.up@prod-core-2",
        "health@prod-data-1", "health@prod-core-1", "health@prod-core-2"]


def test_sandbox_plan_uses_sudo_only_for_host_steps_and_never_shows_secrets():
    lines = plan_lines("sandbox")
    step = ""
    for line in lines:
        if line.startswith("[sandbox-1] ") and not line.startswith("[sandbox-1]   "):
            step = line.split()[1].rstrip(":")
        elif "  $ " in line:
            assert ("$ sudo -n sh -c " in line) == step.startswith("host."), (step, line)
    uploads = [line for line in lines if "upload -> /opt/jafar/" in line]
    if shipped("sandbox").env_file.exists():  # a dry run shows the uploads of the file it has
        assert "[sandbox-1]   upload -> /opt/jafar/.env.ec2 (mode 0600, owner deploy; content " \
               "not shown) if it differs, on stdin, via:" in uploads
    assert all("content not shown" in u or "certificate" in u for u in uploads)


def test_every_step_has_a_task_with_help():
    from fabfile.tasks import ns

    names = set(ns.task_names)
    assert {"deploy", "health", "env.check", "host.trust"} | set(STEPS) - {"health"} <= names
    for name in names:
        t = ns[name]
        assert t.__doc__, name
        assert all(a.help for a in t.get_arguments()), name


def run_fake(step_kwargs: dict, behaviour) -> tuple[list, str, float]:
    """run_steps over prod's three hosts with an apply that never connects: `behaviour(host)`
    returns an Outcome or raises StepFailed; a second step shows whether the flow went on."""
    env = shipped("prod")
    out = io.StringIO()
    first = Step("one", ("data", "core"), "", lambda e, h: [],
                 lambda e, h, r: behaviour(h), **step_kwargs)
    second = Step("two", ("data", "core"), "", lambda e, h: [],
                  lambda e, h, r: Outcome(False, "nothing to do"))
    pool = Pool(env, Printer(Masker(), out))
    started = time.monotonic()
    rows = run_steps(env, [first, second], pool)
    return rows, out.getvalue(), time.monotonic() - started


def test_a_parallel_step_runs_every_host_at_once_and_reports_in_host_order():
    threads = set()

    def slow(host):
        threads.add(threading.get_ident())
        time.sleep(0.6 if host.name == "prod-data-1" else 0.2)  # the first host ends last
        return Outcome(True, f"did {host.name}")

    rows, out, took = run_fake({"parallel": True}, slow)
    assert took < 1.2  # 1.0 s one by one
    assert len(threads) == 3
    assert [(r.step, r.host, r.result) for r in rows] == [
        ("one", "prod-data-1", "changed"), ("one", "prod-core-1", "changed"),
        ("one", "prod-core-2", "changed"), ("two", "prod-data-1", "ok"),
        ("two", "prod-core-1", "ok"), ("two", "prod-core-2", "ok")]
    assert "[prod-core-1] one: did prod-core-1" in out


def test_a_parallel_failure_lets_the_other_hosts_finish_then_stops_the_flow():
    def one_fails(host):
        if host.name == "prod-core-1":
            raise StepFailed("prod-core-1: apt-get failed\ndetails")
        time.sleep(0.2)
        return Outcome(True, "done")

    rows, out, _ = run_fake({"parallel": True}, one_fails)
    assert [(r.host, r.result, r.message) for r in rows] == [
        ("prod-data-1", "changed", "done"), ("prod-core-1", "FAILED", "apt-get failed"),
        ("prod-core-2", "changed", "done")]


def test_a_step_one_host_at_a_time_stops_at_the_first_failure():
    seen = []

    def second_fails(host):
        seen.append(host.name)
        if host.name == "prod-core-1":
            raise StepFailed("prod-core-1: refused")
        return Outcome(False, "nothing to do")

    rows, _, _ = run_fake({}, second_fails)
    assert seen == ["prod-data-1", "prod-core-1"]
    assert [(r.step, r.host, r.result) for r in rows] == [
        ("one", "prod-data-1", "ok"), ("one", "prod-core-1", "FAILED")]


def test_only_the_host_steps_run_in_parallel():
    # core.up stays one host at a time: both core hosts restarting at once would leave the
    # load balancer nothing to send to
    assert [s.name for s in FLOW if s.parallel] == ["host.prepare", "host.harden"]
