"""The hosts each core host's Prometheus scrapes for node_exporter (targets/node.json)."""

from __future__ import annotations

import json

from fabfile.monitor import targets
from fabfile.sync import bundle_items
from tests.conftest import shipped

PROD = shipped("prod")


def test_a_single_host_scrapes_its_own_node_exporter_only():
    staging = shipped("staging")
    assert targets.node_targets(staging, staging.hosts[0]) == [
        {"targets": ["host.docker.internal:9100"],
         "labels": {"host": "staging-1", "roles": "data,core"}}]


def test_each_split_core_host_scrapes_every_host_and_the_data_host_nothing():
    data, core1, core2 = PROD.hosts
    assert targets.node_targets(PROD, core1) == [
        {"targets": ["host.docker.internal:9100"],
         "labels": {"host": "prod-core-1", "roles": "core"}},
        {"targets": ["10.0.2.10:9101"], "labels": {"host": "prod-data-1", "roles": "data"}},
        {"targets": ["10.0.1.12:9101"], "labels": {"host": "prod-core-2", "roles": "core"}}]
    assert targets.node_targets(PROD, data) == []
    items = {i.remote: i for i in bundle_items(PROD, core2)}
    assert json.loads(items["/opt/jafar/config/prometheus/targets/node.json"].data())[1] \
        == {"targets": ["10.0.2.10:9101"], "labels": {"host": "prod-data-1", "roles": "data"}}


def test_host_check_accepts_node_exporter_on_the_private_address_in_split_only():
    from fabfile.hosts.check import evaluate
    from tests.unit.test_host import SAMPLE
    data = PROD.hosts[0]
    listen = "LISTEN 0 4096 10.0.2.10:9101 0.0.0.0:*\nLISTEN 0 4096 10.0.2.99:9101 0.0.0.0:*\n"
    out = SAMPLE.replace("=== listen\n", "=== listen\n" + listen)
    control = next(c for c in evaluate(PROD, data, out)
                   if c.control == "only expected ports listen publicly")
    # (the sample is a single host's: its 80 and 443 are not the data host's either)
    assert not control.ok and "10.0.2.99:9101" in control.actual
    assert "10.0.2.10:9101" not in control.actual
