"""host.check's container controls, read from a real split sandbox core host's docker inspect."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabfile.hosts import containers

SAMPLE = (Path(__file__).parent / "data" / "containers_sandbox_core.txt").read_text()
API = "/jafar-core-api-service-1|api-service|node|256|536870912|512|0|0|true|" \
      '["no-new-privileges:true"]|["ALL"]'


def results(output: str) -> dict[str, tuple[str, bool]]:
    got: dict[str, tuple[str, bool]] = {}
    containers.evaluate(output, lambda control, _expected, actual, ok:
                        got.__setitem__(control, (actual, ok)))
    return got


def test_every_control_passes_on_the_deployed_core_host():
    got = results(SAMPLE)
    assert len(got) == len(containers.CHECKS)
    assert all(ok for _, ok in got.values()), got
    assert set(got.values()) == {("all 9", True)}


def test_the_gateway_alone_may_run_as_root():
    assert "/jafar-core-gateway-1|gateway||" in SAMPLE  # root (no user), allowed by the catalogue
    gateway = next(c for c in containers.parse(SAMPLE) if c.service == "gateway")
    assert gateway.runs_as_root() and gateway.may_run_as_root()


@pytest.mark.parametrize("new, control", [
    (API.replace("|256|", "|<nil>|", 1), "containers: a PIDs limit"),
    (API.replace("|536870912|", "|0|"), "containers: a memory limit"),
    (API.replace("|512|0|0|", "|0|0|0|"), "containers: CPU shares or a CPU limit"),
    (API.replace('["no-new-privileges:true"]', "null"), "containers: no-new-privileges"),
    (API.replace('["no-new-privileges:true"]', '["no-new-privileges:false"]'),
     "containers: no-new-privileges"),
    (API.replace("|true|", "|false|"), "containers: a read-only root"),
    (API.replace('["ALL"]', '["NET_RAW"]'), "containers: every capability dropped"),
    (API.replace("|node|", "||"), "containers: a non-root user (root only where the catalogue "
                                  "says why)"),
    (API.replace("|node|", "|0:0|"), "containers: a non-root user (root only where the catalogue "
                                     "says why)"),
])
def test_each_missing_control_names_the_container(new, control):
    assert API in SAMPLE
    got = results(SAMPLE.replace(API, new))
    failed = {name: actual for name, (actual, ok) in got.items() if not ok}
    assert failed == {control: "missing: jafar-core-api-service-1"}


def test_a_container_compose_did_not_start_gets_no_root_exemption():
    stray = API.replace("/jafar-core-api-service-1|api-service|node|", "/stray|||")
    got = results(stray)
    assert got["containers: a non-root user (root only where the catalogue says why)"] == (
        "missing: stray", False)


def test_no_container_and_a_vanished_one_pass_unreadable_output_fails():
    assert set(results("").values()) == {("no container running", True)}
    vanished = SAMPLE + "Error: No such object: 0123456789ab\n"
    assert all(ok for _, ok in results(vanished).values())
    got = results("Cannot connect to the Docker daemon at unix:///var/run/docker.sock.\n")
    assert got == {"containers: settings readable": (
        "Cannot connect to the Docker daemon at unix:///var/run/docker.sock.", False)}


def test_probe_is_one_read_only_command():
    assert containers.probe().startswith("docker ps -q | xargs -r docker inspect --format '")
